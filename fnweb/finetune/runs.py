"""Run folders: the one home of the format a fine-tune leaves behind, written, read back and checked.

A run folder holds (the names are this module's constants)::

    adapter_model.safetensors, adapter_config.json   the LoRA adapter (PEFT, safetensors)
    template.json, mask.json                          the template and the mask the run trained with
    train_config.json                                 the TrainConfig
    metrics.jsonl                                     one JSON event per line, appended and flushed
    summary.json                                      learning and forgetting, before and after
    state.json                                        running | finished | stopped | failed, with a message
    README.md                                         a model card (``fnweb.finetune.card``)

An existing folder is never overwritten unless asked, and then only if it is an fnweb
run (or empty) and not running. JSON files are written atomically; ``metrics.jsonl``
is appended so a UI can tail it. ``read_run`` checks a finished folder (local or
downloaded) before it is shared or loaded; ``load_plan`` turns its mask back into the
plan it trained with (``fnweb.finetune.loading`` loads the model). A run folder is data:
it may come from a stranger (the Hub), so nothing in it is run or trusted.

**mask.json** has one codec, ``MaskFile``: the run's mask settings (``mask_mode``,
``site``, ``restrict_updates``, ``mask_activations``, and ``masked_share`` for people)
with the ``MaskSpec``'s fields beside them, written field by field (a field added to
``MaskSpec`` is written and read with no change here). fnweb always writes ``mask_mode``.
Every reader (Hub pushes and downloads, the Share tab, ``load_run``, merging, the run
card) reads a file the same way:

- ``null``, or ``mask_mode`` "none": no mask (any components are ignored);
- another ``mask_mode``: a mask, and its components are required; ``mode`` and
  ``random_seed`` must agree with it (``random`` needs a draw, an intervention names itself);
- no ``mask_mode`` (a hand-made file): a mask exactly when it names ``components`` and
  its ``mode`` is not "none"; ``mode`` defaults to lesion (the original's masking), and the
  ``mask_mode`` is ``random`` when a ``random_seed`` is given, else the ``mode``.

It knows nothing about how runs are trained or loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from ..archs import DEFAULT_SITE, SITES
from ..errors import FnwebError
from ..io import check_writable_folder, from_plain, parse_json, read_text, to_plain, write_atomic
from ..io import read_json as read_json_file
from ..masks import MaskSpec
from ..templates import Template
from .config import MASK_MODES, NO_MASK, RANDOM
from .network import MaskPlan, plan_for

ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE = "adapter_model.safetensors", "adapter_config.json"
TEMPLATE_FILE, MASK_FILE, TRAIN_CONFIG_FILE = "template.json", "mask.json", "train_config.json"
METRICS_FILE, SUMMARY_FILE, STATE_FILE, CARD_FILE = "metrics.jsonl", "summary.json", "state.json", "README.md"
RUN_REQUIRED = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, TEMPLATE_FILE, MASK_FILE, TRAIN_CONFIG_FILE)
RUN_OPTIONAL = (METRICS_FILE, SUMMARY_FILE, CARD_FILE)
STATES = ("running", "finished", "stopped", "failed")
MARKERS = (STATE_FILE, TRAIN_CONFIG_FILE)  # files that make a folder an fnweb run


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
    state = read_json(Path(folder) / STATE_FILE) or {"state": "failed", "message": f"No {STATE_FILE}: not a run."}
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
                with open(self.folder / METRICS_FILE, "a", encoding="utf-8") as out:
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
        self.write_json(STATE_FILE, self._state)


def read_events(folder: Path, since: int = 0) -> list[dict]:
    """Events with ``seq >= since``; a line still being written is left for the next read."""
    path = Path(folder) / METRICS_FILE
    if not path.exists():
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as handle:  # a damaged line is skipped below
        for line in handle:
            if not line.endswith("\n"):
                break
            try:
                record = parse_json(line, METRICS_FILE, one_line=True)
            except FnwebError:  # a damaged line: the events around it still count
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
    summary = read_json(folder / SUMMARY_FILE)
    return RunInfo(
        run_id=folder.name, folder=folder, state=state.get("state", "failed"), message=state.get("message", ""),
        step=int(state.get("step", 0)), total_steps=int(state.get("total_steps", 0)), summary=summary,
        config=read_json(folder / TRAIN_CONFIG_FILE) or {},
    )


def list_runs(base: Path) -> list[RunInfo]:
    """Every run folder directly under ``base``, newest first."""
    base = Path(base)
    if not base.is_dir():
        return []
    folders = [f for f in base.iterdir() if f.is_dir() and is_run_folder(f)]
    folders.sort(key=lambda f: (f / STATE_FILE).stat().st_mtime if (f / STATE_FILE).exists() else 0, reverse=True)
    return [run_info(f) for f in folders]


# ---- mask.json: the one codec -------------------------------------------------------------


@dataclass(frozen=True)
class MaskFile:
    """What mask.json holds: the run's mask settings, and its ``MaskSpec`` (None: no mask) beside them."""

    mask_mode: str = NO_MASK  # none | an intervention | random (fnweb.finetune.config.MASK_MODES)
    site: str = DEFAULT_SITE
    restrict_updates: bool = False
    mask_activations: bool = True
    masked_share: Optional[float] = None  # for people: the share of the site's channels the mask changes
    spec: Optional[MaskSpec] = None  # its fields are written flat, beside the settings

    def __post_init__(self):
        if self.mask_mode not in MASK_MODES:
            raise FnwebError(f"Unknown mask mode '{self.mask_mode}'; fnweb knows {', '.join(MASK_MODES)}.")
        if self.site not in SITES:
            raise FnwebError(f"Unknown site '{self.site}'; fnweb knows {', '.join(SITES)}.")

    @classmethod
    def of(cls, plan: MaskPlan, share: Optional[float] = None) -> "MaskFile":
        return cls(plan.mask_mode, plan.site, plan.restrict_updates, plan.mask_activations,
                   None if share is None else round(share, 6), plan.spec)

    def to_dict(self) -> dict:
        data = {k: v for k, v in to_plain(self).items() if k != "spec" and (k != "masked_share" or v is not None)}
        return {**data, **(to_plain(self.spec) if self.spec is not None else {})}

    @classmethod
    def from_dict(cls, data, source: str = MASK_FILE) -> "MaskFile":
        """The agreed reading (see the module docstring); a malformed file is an FnwebError naming ``source``."""
        if data is None:
            return cls()
        settings = from_plain(cls, {k: v for k, v in data.items() if k != "spec"} if isinstance(data, dict)
                              else data, source)
        said = data.get("mask_mode")
        if said == NO_MASK or (said is None and (data.get("mode") == NO_MASK or "components" not in data)):
            return replace(settings, mask_mode=NO_MASK)
        if "components" not in data:
            raise FnwebError(f"{source} says mask_mode '{said}' but names no components: it is not a complete "
                             "mask. Re-train the run, or write the components it masked.")
        spec = from_plain(MaskSpec, data, source)
        mask_mode = said or (RANDOM if spec.random_seed is not None else spec.mode)
        if (mask_mode == RANDOM) != (spec.random_seed is not None) or mask_mode not in (RANDOM, spec.mode):
            raise FnwebError(f"{source} contradicts itself: mask_mode '{mask_mode}' with mode '{spec.mode}' and "
                             f"random_seed {spec.random_seed} (a random control needs a random_seed; an "
                             "intervention's mask_mode is its mode). Fix or re-write the file.")
        return replace(settings, mask_mode=mask_mode, spec=spec)

    def plan(self) -> MaskPlan:
        """The plan these settings describe, without its template (for its label)."""
        return MaskPlan(self.mask_mode, self.site, None, self.spec, self.restrict_updates, {}, self.mask_activations)


def read_mask(path: Path, what: str) -> MaskFile:
    return MaskFile.from_dict(read_json_file(path, what), what)


def load_plan(folder: Path) -> MaskPlan:
    """The run's mask plan from template.json and mask.json (no mask.json: no mask)."""
    folder = Path(folder)
    if not (folder / MASK_FILE).exists():
        return MaskPlan(NO_MASK)
    mask = read_mask(folder / MASK_FILE, f"{folder.name}/{MASK_FILE}")
    if mask.spec is None:
        return MaskPlan(NO_MASK, mask.site)
    if not (folder / TEMPLATE_FILE).exists():
        raise FnwebError(f"This run was trained with a mask, but its {TEMPLATE_FILE} is missing.")
    return plan_for(Template.load(folder / TEMPLATE_FILE), mask.spec, mask.mask_mode, mask.site,
                    mask.restrict_updates, mask.mask_activations)


# ---- a finished run, read and checked --------------------------------------------------------


@dataclass
class RunFiles:
    """A finished fine-tuning run folder, read and checked (local or downloaded)."""

    folder: Path
    template: Optional[Template]  # None only for a run trained without a mask
    mask_file: MaskFile
    adapter_config: dict
    train_config: dict
    summary: dict = field(default_factory=dict)
    card: Optional[str] = None  # README.md's text, if the folder has one

    @property
    def mask(self) -> Optional[MaskSpec]:
        """The mask the run trained with (None: none)."""
        return self.mask_file.spec


def read_run(run_dir: str | os.PathLike, what: str = "The run folder") -> RunFiles:
    """Check a run folder has its files and that they parse; the template and mask must agree."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise FnwebError(f"{what} {folder} does not exist or is not a folder.")
    missing = [name for name in RUN_REQUIRED if not (folder / name).is_file()]
    mask = read_mask(folder / MASK_FILE, f"{what}: {MASK_FILE}") if MASK_FILE not in missing else None
    if mask is not None and mask.spec is None and TEMPLATE_FILE in missing:
        missing.remove(TEMPLATE_FILE)  # a run without a mask needs no template
    if missing:
        raise FnwebError(
            f"{what} {folder} lacks {', '.join(missing)}: it is not a complete fnweb fine-tuning run "
            f"(expected the adapter, {TEMPLATE_FILE}, {MASK_FILE} and {TRAIN_CONFIG_FILE})."
        )
    _check_not_running(folder, what)
    adapter = _read(folder, ADAPTER_CONFIG_FILE, what)
    if not isinstance(adapter, dict) or "peft_type" not in adapter:
        raise FnwebError(f"{what}: {ADAPTER_CONFIG_FILE} is not a PEFT adapter config (no peft_type).")
    template = Template.load(folder / TEMPLATE_FILE) if (folder / TEMPLATE_FILE).exists() else None
    if mask.spec is not None:
        template.check_components(mask.spec.components)
    summary = _read(folder, SUMMARY_FILE, what) if (folder / SUMMARY_FILE).exists() else {}
    train = _read(folder, TRAIN_CONFIG_FILE, what)
    card = read_text(folder / CARD_FILE, f"{what}: {CARD_FILE}") if (folder / CARD_FILE).is_file() else None
    return RunFiles(folder, template, mask, adapter, train if isinstance(train, dict) else {},
                    summary if isinstance(summary, dict) else {}, card)


def _read(folder: Path, name: str, what: str):
    return read_json_file(folder / name, f"{what}: {name}")


def _check_not_running(folder: Path, what: str) -> None:
    """A run still training has no final adapter yet: refuse to push or load it."""
    if (folder / STATE_FILE).exists() and read_state(folder).get("state") == "running":
        raise FnwebError(f"{what} {folder} is still training: push it once it has finished or been stopped.")
