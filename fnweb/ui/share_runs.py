"""The runs a visitor may share: their own runs listed, the one they chose, and a line that describes it.

A visitor's runs are those their session records (``session.runs``, when the Fine-tune
tab keeps one) and those they loaded from the Hub in the Share tab; off a Space a run
folder's path may also be typed. On a shared server a typed path is refused, since it
could reach another visitor's run. This module knows nothing about Gradio components
or the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional

from ..access import multi_user
from ..errors import FnwebError
from ..finetune.runs import STATE_FILE, RunFiles, read_json, run_info
from .state import Session


def visitor_runs(session: Session, loaded: Optional[list]) -> list[tuple[str, str]]:
    """(label, folder) of this visitor's runs: the session's (Fine-tune tab), then those loaded from the Hub."""
    choices: list[tuple[str, str]] = []
    for folder in _session_run_folders(session):
        if folder.is_dir():
            info = run_info(folder)
            mask = (info.summary or {}).get("mask") or info.config.get("mask_mode", "")
            choices.append((f"{info.run_id} · {info.state}" + (f" · {mask}" if mask else ""), str(folder)))
    for item in loaded or []:
        choices.append((item["label"], item["folder"]))
    seen: set[str] = set()
    return [c for c in choices if not (c[1] in seen or seen.add(c[1]))]


def _session_run_folders(session: Session) -> list[Path]:
    """The run folders the session records, if the Fine-tune tab keeps them (``session.runs``).

    Accepts what such a record is likely to hold: folders, or objects with a ``folder``
    (``RunInfo``), as a list or as the values of a dict.
    """
    runs: Any = getattr(session, "runs", None)
    if not runs:
        return []
    items: Iterable = runs.values() if isinstance(runs, dict) else runs
    folders = []
    for item in items:
        folder = getattr(item, "folder", item)
        if isinstance(folder, (str, os.PathLike)):
            folders.append(Path(folder))
    return folders


def chosen_run_folder(session: Session, loaded: Optional[list], choice: Optional[str]) -> Path:
    """The chosen run's folder: one of the visitor's runs, or (off a Space) a typed path."""
    text = (choice or "").strip() if isinstance(choice, str) else ""
    if not text:
        raise FnwebError("No run chosen: pick one of your runs (from the Fine-tune tab, or loaded from the Hub in "
                         "section 4)" + ("" if multi_user() else ", or type a run folder's path") + ".")
    listed = {folder for _, folder in visitor_runs(session, loaded)}
    if text in listed:
        return Path(text)
    if multi_user():  # on a shared server, a typed path could reach another visitor's run
        raise FnwebError(f"'{text}' is not one of your runs: pick a run from the list.")
    return Path(text).expanduser()


def describe_run(files: RunFiles) -> str:
    """One line of plain text: the run's base model, adapter, mask, state and figures."""
    adapter, config = files.adapter_config, files.train_config
    base = config.get("model_id") or adapter.get("base_model_name_or_path") or "?"
    mask = files.mask.label() if files.mask else "no mask"
    learning = (files.summary or {}).get("learning", {})
    forgetting = (files.summary or {}).get("forgetting", {})
    figures = []
    if learning.get("task_loss_before") is not None and learning.get("task_loss_after") is not None:
        figures.append(f"task loss {learning['task_loss_before']:.3g} → {learning['task_loss_after']:.3g}")
    if forgetting.get("kl_after") is not None:
        figures.append(f"KL from the base {forgetting['kl_after']:.3g}")
    state = (read_json(files.folder / STATE_FILE) or {}).get("state")
    return " · ".join([f"LoRA r {adapter.get('r', '?')} on {base}", mask, *([state] if state else []), *figures])
