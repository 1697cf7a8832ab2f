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

It knows nothing about Gradio components.
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


POOL = RunPool()  # server-wide: it holds training threads, not visitor data (folders are keyed by hashes)
