"""Running model work for the app: streamed from a worker thread, one job per model, stoppable.

Why a thread: the engine's long calls are plain functions (``build_template``) or
generators that hold masks on the model between tokens (``compare_stream``). Run in a
thread of their own, they keep one thread from start to finish, while Gradio may
resume a streaming handler on any thread; the handler only reads their events from a
queue, coalesced to the latest and re-sent every ``tick`` seconds so that the
elapsed time keeps moving even in a long phase without events.

Why a lock per model: masks and captures are hooks on the shared model, so two jobs
on one model at once would see each other's hooks. Jobs on the same model wait
their turn (and say so); jobs on different models run side by side.

Why a hold: the shared model cache evicts the least recently used model when it is
full, but never one a job holds; a job holds its model from start to end.

Why a stop *file*: on ZeroGPU the work runs in a forked process, where an in-memory
flag set by the Stop button would never be seen; a file is seen from both sides.

``gpu`` is ``spaces.GPU`` when the ``spaces`` package is present (it does nothing off
Spaces) and a no-op otherwise. This module knows nothing about components or tabs.
"""

from __future__ import annotations

import copy
import queue
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import Stopped
from ..models import hold
from ..progress import StopFlag

TICK = 0.25  # seconds between updates sent to the page while work runs


def gpu(duration: Any = 60) -> Callable:
    """``spaces.GPU(duration=...)`` when available (ZeroGPU), else the function unchanged."""
    try:
        import spaces
    except Exception:  # not installed, or unusable here: run on whatever device the model is on
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def _stop_folder() -> Path:
    folder = Path(tempfile.gettempdir()) / "fnweb-stops"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class Job:
    """A handle on one run: plain data, so it can cross into a ZeroGPU worker."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def stop_path(self) -> Path:
        return _stop_folder() / self.id

    def request_stop(self) -> None:
        self.stop_path.touch()

    def flag(self) -> "FileStopFlag":
        return FileStopFlag(self.stop_path)

    def cleanup(self) -> None:
        self.stop_path.unlink(missing_ok=True)


class FileStopFlag(StopFlag):
    """A StopFlag that is also set by the existence of a file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def set(self) -> None:
        super().set()
        self.path.touch()

    @property
    def is_set(self) -> bool:
        return self._event.is_set() or self.path.exists()

    def check(self) -> None:
        if self.is_set:
            raise Stopped()


_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def model_lock(model: object) -> threading.Lock:
    """The lock that one shared model's jobs take turns on."""
    with _locks_guard:
        return _locks.setdefault(id(model), threading.Lock())


@dataclass
class Update:
    """What a streaming handler sees: the latest event, a tick, a wait, or the result."""

    kind: str  # "event" | "tick" | "waiting" | "done"
    value: Any = None
    elapsed: float = 0.0


def stream(work: Callable[[Callable[[Any], None], StopFlag], Any], model: object, job: Job,
           tick: float = TICK) -> Iterator[Update]:
    """Run ``work(emit, stop)`` in a thread holding ``model``'s lock; yield its updates.

    The last update is ``done`` with the work's return value; an exception raised by the
    work is raised here. If the reader stops reading (the page went away), the work is
    asked to stop.
    """
    events: "queue.Queue[tuple[str, Any]]" = queue.Queue()
    stop = job.flag()
    started = time.monotonic()

    def run() -> None:
        with hold(model):  # never evicted from the shared cache while this job waits for it or uses it
            lock = model_lock(model)
            if not lock.acquire(blocking=False):
                events.put(("waiting", None))
                while not lock.acquire(timeout=0.2):
                    if stop.is_set:
                        events.put(("error", Stopped()))
                        return
            try:
                events.put(("done", work(lambda value: events.put(("event", copy.copy(value))), stop)))
            except BaseException as exc:  # handed to the reader, who re-raises it in the handler
                events.put(("error", exc))
            finally:
                lock.release()

    threading.Thread(target=run, name=f"fnweb-job-{job.id[:8]}", daemon=True).start()
    finished, pending = False, []
    try:
        while True:
            kind, value = _next(events, pending, tick)
            elapsed = time.monotonic() - started
            if kind == "error":
                finished = True
                raise value
            if kind == "done":
                finished = True
                yield Update("done", value, elapsed)
                return
            yield Update(kind, value, elapsed)
    finally:
        if not finished:
            stop.set()


def _next(events: "queue.Queue", pending: list, tick: float) -> tuple[str, Any]:
    """The next thing to report: the newest waiting event, a final item, or a tick after ``tick`` s."""
    if pending:
        return pending.pop()
    try:
        kind, value = events.get(timeout=tick)
    except queue.Empty:
        return "tick", None
    while kind == "event":  # skip to the newest event; keep a final item for the next call
        try:
            following = events.get_nowait()
        except queue.Empty:
            break
        if following[0] != "event":
            pending.append(following)
            break
        kind, value = following
    return kind, value
