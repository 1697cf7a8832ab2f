"""Where the app keeps fine-tuning runs, whose they are, and how many train at once.

A visitor is known by a random key that their browser keeps (the Fine-tune tab holds
it in a ``gr.BrowserState``). Their runs live in ``runs_root() / <hash of the key>``:
the folder name does not reveal the key, and without the key no visitor can list,
stop or compare another's runs. A page reload brings the key back, so the tab finds
the visitor's runs, running or finished, in that folder.

``RunPool`` holds one ``fnweb.finetune.RunManager`` per visitor folder (a manager owns
the training threads, so it must outlive any one page) and caps the trainings running
at once on the whole server. A run trains a private copy of the model in the
manager's background thread: model jobs of other visitors keep their turns.

``attach`` gives a session its visitor's folder; ``refresh_runs``, ``run_folder`` and
``run_choices`` list and pick that visitor's runs (for the Fine-tune, Compare and Share
tabs). It knows nothing about Gradio components.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Optional

from ..errors import FnwebError
from ..finetune import RunInfo, RunManager, TrainConfig
from .finetune_view import run_label
from .state import Session

_KEY = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def runs_root() -> Path:
    """The folder that holds every visitor's run folders (FNWEB_RUNS_DIR, else the temp folder)."""
    return Path(os.environ.get("FNWEB_RUNS_DIR") or Path(tempfile.gettempdir()) / "fnweb-runs")


def train_jobs() -> int:
    """How many fine-tunes may train at once on this server (FNWEB_TRAIN_JOBS, default 1)."""
    return max(1, int(os.environ.get("FNWEB_TRAIN_JOBS", "1")))


def new_key() -> str:
    return secrets.token_urlsafe(24)


def valid_key(key) -> bool:
    return isinstance(key, str) and bool(_KEY.match(key))


def visitor_folder(key: str) -> Path:
    """The run folder of the visitor holding ``key`` (a hash: the name does not give the key away)."""
    if not valid_key(key):
        raise FnwebError("This page has no valid visitor key: reload the page.")
    return runs_root() / hashlib.sha256(key.encode()).hexdigest()[:32]


def check_run_name(name: str) -> str:
    """A run name a visitor typed: letters, digits, '.', '_' and '-' (it becomes a folder name)."""
    name = (name or "").strip()
    if name and not _RUN_NAME.match(name):
        raise FnwebError(f"Run name '{name}' may use only letters, digits, '.', '_' and '-' (at most 80), "
                         "starting with a letter or digit.")
    return name


class RunPool:
    """Run managers by visitor folder, with at most ``max_active`` trainings at once over all of them."""

    def __init__(self, max_active: Optional[int] = None):
        self.max_active = max_active
        self._managers: dict[Path, RunManager] = {}
        self._starting: set[Path] = set()  # folders whose start is being prepared (counted as running)
        self._lock = threading.Lock()

    def manager(self, folder: Path) -> RunManager:
        with self._lock:
            return self._managers.setdefault(Path(folder), RunManager(folder, max_active=1))

    def _busy(self) -> int:
        return sum(len(m.running()) for m in self._managers.values()) + len(self._starting)

    def start(self, folder: Path, config: TrainConfig, run_name: str = "") -> str:
        """Check the inputs and start training in the background; the run id. Refused while busy."""
        folder = Path(folder)
        manager = self.manager(folder)
        limit = self.max_active or train_jobs()
        with self._lock:
            mine = manager.running()
            if mine or folder in self._starting:
                which = f"Your run {mine[0]}" if mine else "Your previous run"
                raise FnwebError(f"{which} is still running: stop it (Stop & save) or wait for it to finish.")
            if self._busy() >= limit:
                raise FnwebError(f"The server trains {limit} fine-tune{'s' if limit > 1 else ''} at a time and "
                                 "another visitor's is running: try again when it finishes.")
            self._starting.add(folder)
        try:
            if run_name and (folder / run_name).exists():
                raise FnwebError(f"You already have a run called '{run_name}': choose another run name "
                                 "(runs are never overwritten).")
            return manager.start(config, None, run_name or None)  # None: the run loads a private model copy
        finally:
            with self._lock:
                self._starting.discard(folder)

    def stop(self, folder: Path, run_id: str) -> None:
        self.manager(folder).stop(run_id)

    def info(self, folder: Path, run_id: str) -> RunInfo:
        return self.manager(folder).info(run_id)

    def events(self, folder: Path, run_id: str) -> list[dict]:
        return self.manager(folder).events(run_id)

    def runs(self, folder: Path) -> list[RunInfo]:
        """The visitor's runs, newest first."""
        return self.manager(folder).runs()


_ATTACHING = threading.Lock()
POOL = RunPool()  # server-wide: it holds training threads, not visitor data (folders are keyed by hashes)


# ---- one visitor's runs (the Fine-tune tab follows them; Compare and Share pick from them) ----


def attach(session: Session, key, seen: Optional[dict]) -> tuple[str, bool]:
    """Give the session its visitor's run folder; (the key, whether the browser must store it).

    The key comes from the browser; a page without one (a first visit, or an API client
    that does not pass it) gets a new one, kept in the page's state and the session until
    the browser has it (the same key keeps the visitor's saved items: ``fnweb.ui.saved``).
    """
    store = False
    if not valid_key(key):
        store = True
        with _ATTACHING:  # the page's first events may all ask at once: they must agree on one key
            key = (seen or {}).get("key") or session.visitor_key
            if not valid_key(key):
                key = new_key()
            session.visitor_key = key
    if seen is not None:
        seen["key"] = key
    session.visitor_key = key
    session.runs_folder = visitor_folder(key)
    return key, store


def refresh_runs(session: Session) -> list[RunInfo]:
    """The visitor's runs, newest first (one that has just started comes first); ``session.runs`` follows."""
    folder = session.runs_folder
    if folder is None:
        return []
    infos = POOL.runs(folder)
    listed = {i.run_id for i in infos}
    infos = [POOL.info(folder, r) for r in POOL.manager(folder).running() if r not in listed] + infos
    session.runs = {i.run_id: i.folder for i in infos}
    return infos


def run_folder(session: Session, run_id) -> Path:
    """One of the visitor's runs (never a typed path), with a saved adapter: for the Compare tab."""
    if not isinstance(run_id, str) or run_id not in session.runs:
        raise FnwebError(f"'{run_id}' is not one of your fine-tuning runs: pick one from the list "
                         "(runs come from the Fine-tune tab).")
    folder = session.runs[run_id]
    if not (folder / "adapter_model.safetensors").exists():
        raise FnwebError(f"Run {run_id} has no saved adapter yet: wait until it finishes (or stop it and let it "
                         "save), or pick another run.")
    return folder


def run_choices(session: Session) -> list[tuple[str, str]]:
    """(label, run id) of the visitor's runs that have an adapter."""
    if session.runs_folder is None:
        return []
    return [(run_label(i), i.run_id) for i in refresh_runs(session)
            if (i.folder / "adapter_model.safetensors").exists()]
