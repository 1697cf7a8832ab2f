"""Background fine-tuning runs, keyed by run id, that a UI can poll, stop and re-attach to.

A ``RunManager`` owns a base folder; each run is a thread training into
``base/<run id>``. ``start`` checks the inputs in the caller's thread (so bad input
is reported at once) and returns the run id; ``events`` reads the run's
``metrics.jsonl`` from a sequence number on (so a reloaded page replays what it
missed), ``stop`` asks the run to save at its next step, ``info`` and ``runs`` read
state from disk (running, finished, stopped or failed). Trained models are not kept
in memory: a finished run is loaded again with ``load_run``.

It imports no UI code; the app keeps the run ids of each visitor in its own state.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Optional

from ..errors import FnwebError
from ..models import LoadedModel
from ..progress import StopFlag
from .config import TrainConfig
from .pipeline import execute, prepare
from .runs import RunInfo, list_runs, read_events, run_info

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class _Active:
    thread: threading.Thread
    stop: StopFlag
    error: Optional[str] = None  # an error raised outside the run folder's own record


class RunManager:
    """Runs in background threads under one base folder (at most ``max_active`` at a time)."""

    def __init__(self, base_dir: str | Path, max_active: int = 1):
        self.base = Path(base_dir)
        self.max_active = max_active
        self._active: dict[str, _Active] = {}
        self._lock = threading.Lock()

    def new_run_id(self, config: TrainConfig) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{config.mask_mode}" + ("-restricted" if config.restrict_updates else "")
        run_id, n = base, 1
        while (self.base / run_id).exists() or run_id in self._active:
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def running(self) -> list[str]:
        with self._lock:
            return [rid for rid, a in self._active.items() if a.thread.is_alive()]

    def start(self, config: TrainConfig, lm: Optional[LoadedModel] = None, run_id: Optional[str] = None) -> str:
        """Check the inputs, then train in the background; return the run id."""
        busy = self.running()
        if len(busy) >= self.max_active:
            raise FnwebError(f"A fine-tune is already running ({busy[0]}): stop it or wait for it to finish.")
        run_id = run_id or self.new_run_id(config)
        if not _RUN_ID.match(run_id):
            raise FnwebError(f"Run id '{run_id}' may use only letters, digits, '.', '_' and '-'.")
        config = replace(config, output_dir=str(self.base / run_id))
        prepared = prepare(config, lm)  # bad input fails here, in the caller's thread
        stop = StopFlag()
        thread = threading.Thread(target=self._work, args=(run_id, prepared, stop), name=f"fnweb-run-{run_id}",
                                  daemon=True)
        with self._lock:
            self._active[run_id] = _Active(thread, stop)
        thread.start()
        return run_id

    def _work(self, run_id: str, prepared, stop: StopFlag) -> None:
        try:
            execute(prepared, stop=stop)  # writes state.json itself, finished or not
        except FnwebError:
            pass  # recorded in the run folder by execute
        except BaseException as exc:  # a bug: keep it visible to the UI as well as in state.json
            with self._lock:
                self._active[run_id].error = f"{type(exc).__name__}: {exc}"

    def stop(self, run_id: str) -> None:
        """Ask a run to stop; it saves its adapter after the step in progress."""
        with self._lock:
            active = self._active.get(run_id)
        if active is None or not active.thread.is_alive():
            raise FnwebError(f"Run {run_id} is not running here.")
        active.stop.set()

    def events(self, run_id: str, since: int = 0) -> list[dict]:
        """The run's events with sequence number >= ``since`` (replay after a reload: since=0)."""
        return read_events(self.base / run_id, since)

    def info(self, run_id: str) -> RunInfo:
        folder = self.base / run_id
        with self._lock:
            active = self._active.get(run_id)
        if not (folder / "state.json").exists():
            if active is not None and active.thread.is_alive():  # started; its folder comes next
                return RunInfo(run_id, folder, "running", "Starting")
            raise FnwebError(f"No run '{run_id}' in {self.base}.")
        info = run_info(folder)
        if active is not None and active.error and info.state == "running":
            info.state, info.message = "failed", active.error
        return info

    def runs(self) -> list[RunInfo]:
        """Every run under the base folder, newest first."""
        return list_runs(self.base)

    def wait(self, run_id: str, timeout: Optional[float] = None) -> RunInfo:
        """Block until the run's thread ends (or the timeout passes); its info."""
        with self._lock:
            active = self._active.get(run_id)
        if active is not None:
            active.thread.join(timeout)
        deadline = time.monotonic() + 2.0  # state.json is written just before the thread ends
        while self.info(run_id).state == "running" and active is not None and not active.thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return self.info(run_id)
