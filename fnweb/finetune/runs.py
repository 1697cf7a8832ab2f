"""Run folders: what a fine-tune leaves behind, and how it is read back and re-loaded.

A run folder holds::

    adapter_model.safetensors, adapter_config.json   the LoRA adapter (PEFT, safetensors)
    template.json, mask.json                          the template and the mask the run trained with
    train_config.json                                 the TrainConfig
    metrics.jsonl                                     one JSON event per line, appended and flushed
    summary.json                                      learning and forgetting, before and after
    state.json                                        running | finished | stopped | failed, with a message
    README.md                                         a model card

An existing folder is never overwritten unless asked, and then only if it is an fnweb
run (or empty) and not running. JSON files are written atomically; ``metrics.jsonl``
is appended so a UI can tail it. ``load_run`` re-applies the run's mask when it
generates (the original saved masked runs that then ran unmasked). A run folder is
data: it may come from a stranger (the Hub), so nothing in it switches on
``trust_remote_code``; that is the caller's own setting, off unless passed. It knows
nothing about how runs are trained.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..errors import FnwebError
from ..io import check_writable_folder, read_text, write_atomic
from ..io import read_json as read_json_file
from ..masks import apply_masks
from ..models import LoadedModel, ModelRequest, load_model
from ..templates import Template
from .config import TrainConfig
from .network import MaskPlan

STATES = ("running", "finished", "stopped", "failed")
MARKERS = ("state.json", "train_config.json")  # files that make a folder an fnweb run


def _process_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def read_json(path: Path) -> Optional[dict]:
    """A run file's JSON, or None when it is missing or unreadable (a run being written, or a damaged one)."""
    try:
        return read_json_file(path)
    except FnwebError:
        return None


def is_run_folder(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in MARKERS)


def read_state(folder: Path) -> dict:
    """The run's state; a 'running' run whose process has ended reads as failed (interrupted)."""
    state = read_json(Path(folder) / "state.json") or {"state": "failed", "message": "No state.json: not a run."}
    if state.get("state") == "running" and not _process_alive(state.get("pid")):
        state = {**state, "state": "failed", "message": "Interrupted: the training process ended before the run did."}
    return state


def check_output_folder(folder: Path, overwrite: bool) -> None:
    """Refuse a folder that exists (unless overwrite, and then only an idle fnweb run or an empty folder)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FnwebError(f"{folder} is a file, not a folder: choose another output folder.")
    check_writable_folder(folder, "the run folder")
    if not folder.exists() or not any(folder.iterdir()):
        return
    if not overwrite:
        raise FnwebError(
            f"The run folder {folder} already exists: choose another output folder, or overwrite it explicitly "
            "(--overwrite_output_dir)."
        )
    if not is_run_folder(folder):
        raise FnwebError(f"{folder} is not empty and is not an fnweb run folder: it is never overwritten. "
                         "Choose another output folder.")
    if read_state(folder).get("state") == "running":
        raise FnwebError(f"The run in {folder} is still running: stop it first, or choose another folder.")


class RunWriter:
    """Writes one run folder (main process only: other processes get a writer that writes nothing)."""

    def __init__(self, folder: Path, enabled: bool = True, listener: Optional[Callable[[dict], None]] = None):
        self.folder, self.enabled, self.listener = Path(folder), enabled, listener
        self._lock = threading.Lock()
        self._seq = 0
        self._state: dict = {}

    @classmethod
    def create(cls, folder: Path, overwrite: bool, enabled: bool = True,
               listener: Optional[Callable[[dict], None]] = None) -> "RunWriter":
        writer = cls(folder, enabled, listener)
        if enabled:
            check_output_folder(folder, overwrite)
            if Path(folder).exists() and overwrite:
                shutil.rmtree(folder)
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FnwebError(f"Cannot create the run folder {folder}: {exc.strerror}.") from exc
        return writer

    def event(self, record: dict) -> dict:
        """Append one event to metrics.jsonl (flushed) and pass it on."""
        with self._lock:
            record = {"seq": self._seq, "time": round(time.time(), 3), **record}
            self._seq += 1
            if self.enabled:
                with open(self.folder / "metrics.jsonl", "a", encoding="utf-8") as out:
                    out.write(json.dumps(record, sort_keys=True) + "\n")
                    out.flush()
        if self.listener is not None:
            self.listener(record)
        return record

    def write_text(self, name: str, text: str) -> None:
        if self.enabled:
            write_atomic(self.folder / name, text)

    def write_json(self, name: str, data) -> None:
        self.write_text(name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def set_state(self, state: str, **info) -> None:
        self._state.update(info, state=state, pid=os.getpid(), updated=round(time.time(), 3))
        self._state.setdefault("started", self._state["updated"])
        self.write_json("state.json", self._state)


def read_events(folder: Path, since: int = 0) -> list[dict]:
    """Events with ``seq >= since``; a line still being written is left for the next read."""
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as handle:  # a damaged line is skipped below
        for line in handle:
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("seq", 0) >= since:
                events.append(record)
    return events


@dataclass
class RunInfo:
    """What a list of runs shows: one run folder, read from disk."""

    run_id: str
    folder: Path
    state: str
    message: str = ""
    step: int = 0
    total_steps: int = 0
    summary: Optional[dict] = None
    config: dict = field(default_factory=dict)

    def row(self) -> dict:
        """Flat figures for a results table or a learning-vs-forgetting plot."""
        summary = self.summary or {}
        learning, forgetting = summary.get("learning", {}), summary.get("forgetting", {})
        return {"run": self.run_id, "state": self.state, "mask": summary.get("mask", self.config.get("mask_mode", "")),
                "steps": self.step, "task_loss_before": learning.get("task_loss_before"),
                "task_loss_after": learning.get("task_loss_after"), "kl_after": forgetting.get("kl_after"),
                "ppl_after": forgetting.get("ppl_after"), "ppl_base": forgetting.get("ppl_base")}


def run_info(folder: Path) -> RunInfo:
    folder = Path(folder)
    state = read_state(folder)
    summary = read_json(folder / "summary.json")
    return RunInfo(
        run_id=folder.name, folder=folder, state=state.get("state", "failed"), message=state.get("message", ""),
        step=int(state.get("step", 0)), total_steps=int(state.get("total_steps", 0)), summary=summary,
        config=read_json(folder / "train_config.json") or {},
    )


def list_runs(base: Path) -> list[RunInfo]:
    """Every run folder directly under ``base``, newest first."""
    base = Path(base)
    if not base.is_dir():
        return []
    folders = [f for f in base.iterdir() if f.is_dir() and is_run_folder(f)]
    folders.sort(key=lambda f: (f / "state.json").stat().st_mtime if (f / "state.json").exists() else 0, reverse=True)
    return [run_info(f) for f in folders]


@dataclass
class FinetunedRun:
    """A run loaded for generation: the adapter on a private copy of the base, and its mask."""

    folder: Path
    config: TrainConfig
    plan: MaskPlan
    model: object  # a PeftModel (or the merged model)
    tokenizer: object
    summary: Optional[dict]

    @contextmanager
    def masked(self) -> Iterator[None]:
        """The run's mask, applied as in training (no mask for a plain LoRA run)."""
        with apply_masks(self.model, self.plan.hooks, self.plan.site):
            yield

    @property
    def label(self) -> str:
        return f"{self.folder.name}: LoRA, {self.plan.label()}"

    def loaded_model(self) -> LoadedModel:
        """The fine-tuned model as a LoadedModel (the caller applies ``masked()`` around its use)."""
        return LoadedModel(self.model, self.tokenizer, ModelRequest(model_id=f"run:{self.folder}"))


def check_remote_code(folder: Path, config: TrainConfig, trust_remote_code: bool) -> None:
    """Refuse a run whose base model was loaded with custom code unless the caller allows that code."""
    if config.trust_remote_code and not trust_remote_code:
        raise FnwebError(
            f"The run {Path(folder).name} was trained on {config.model_id} with custom model code "
            "(trust_remote_code). fnweb never runs code because a run's own files ask for it. If you trust "
            f"{config.model_id}'s code, pass the flag yourself: load_run(folder, trust_remote_code=True) (or "
            "push_run(..., trust_remote_code=True); CLI: --trust_remote_code)."
        )


def load_plan(folder: Path) -> MaskPlan:
    """The run's mask plan from template.json and mask.json."""
    folder = Path(folder)
    mask_path = folder / "mask.json"
    if not mask_path.exists():
        return MaskPlan("none")
    template = Template.load(folder / "template.json") if (folder / "template.json").exists() else None
    return MaskPlan.from_json(read_text(mask_path, f"{folder.name}/mask.json"), template)


def load_run(folder: str | Path, lm: Optional[LoadedModel] = None, merge: bool = False,
             trust_remote_code: bool = False) -> FinetunedRun:
    """Load a run's adapter onto a private copy of its base model, ready to generate with its mask.

    Without ``lm``, the base model named in the run is loaded with the caller's
    ``trust_remote_code`` (off by default), whatever the run's train_config.json says.
    """
    from ..archs import layout_of
    from .lora import load_adapter

    folder = Path(folder)
    if not (folder / "train_config.json").exists():
        raise FnwebError(f"{folder} is not an fnweb run folder (no train_config.json).")
    config = TrainConfig.from_dict(read_json(folder / "train_config.json") or {})
    if lm is None:
        check_remote_code(folder, config, trust_remote_code)
        lm = load_model(ModelRequest(config.model_id, config.dtype, config.device, "none", config.revision,
                                     trust_remote_code))
    plan = load_plan(folder)
    if plan.template is not None:
        plan.template.check_fits(layout_of(lm.model), lm.model_id)
    model = load_adapter(copy.deepcopy(lm.model), folder)  # the shared model is never changed
    if merge:
        model = model.merge_and_unload()  # a private copy: merging changes only it
    return FinetunedRun(folder, config, plan, model, lm.tokenizer, read_json(folder / "summary.json"))
