"""Running model work for the app: streamed from a worker thread, in turns on each model, stoppable.

Why a thread: the engine's long calls are plain functions (``build_template``) or
generators that hold masks on the model between tokens (``compare_stream``). Run in a
thread of their own, they keep one thread from start to finish, while Gradio may
resume a streaming handler on any thread; the handler only reads their updates from a
queue, coalesced to the newest of each sort (the newest progress event, the newest
partial result) and re-sent every ``tick`` seconds so that the elapsed time keeps
moving even in a long phase without events.

Why turns: masks and captures are hooks on the shared model, so two jobs on one model
at once would see each other's hooks. ``Turns`` lets jobs start first come, first
served: one job per model, and at most ``model_jobs()`` jobs at once on the server
(FNWEB_MODEL_JOBS). A job that has to wait says so, with its place in the line
(``Waiting``), and again whenever that changes.

Why a hold: the shared model cache evicts the least recently used model when it is
full, but never one a job holds; a job holds its model from start to end.

Why a stop *file*: on ZeroGPU the work runs in a forked process, where an in-memory
flag set by the Stop button would never be seen; a file is seen from both sides.

``gpu`` is ``spaces.GPU`` when the ``spaces`` package is present (it does nothing off
Spaces) and a no-op otherwise. This module knows nothing about components, tabs or
pages (``fnweb.ui.runner`` turns its updates into what a page shows).
"""

from __future__ import annotations

import contextlib
import copy
import os
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
from ..progress import Progress, StopFlag

TICK = 0.25  # seconds between updates sent to the page while work runs
POLL = 0.2  # seconds between looks at the stop flag while a job waits for its turn


def model_jobs() -> int:
    """How many model jobs may run at once (FNWEB_MODEL_JOBS, default 2; jobs on one model take turns)."""
    return max(1, int(os.environ.get("FNWEB_MODEL_JOBS", "2")))


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


# ---- turns ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """Why a job has not started yet, and its place in the line (1: next)."""

    position: int
    reason: str  # "model": another job is using this model | "slots": the server's job slots are all taken
    slots: int = 1


class Turns:
    """First come, first served: one job per model at a time, at most ``slots()`` jobs at once in all."""

    def __init__(self, slots: Callable[[], int] = model_jobs, poll: float = POLL) -> None:
        self.slots, self.poll = slots, poll
        self._cond = threading.Condition()
        self._line: list[tuple[object, int]] = []  # (ticket, model key) of the jobs waiting, oldest first
        self._busy: set[int] = set()  # models in use

    @contextlib.contextmanager
    def turn(self, model: object, stop: StopFlag, report: Callable[[Waiting], None]) -> Iterator[None]:
        """Wait for ``model``'s turn (reporting each new place in the line), hold it for the block."""
        entry = (object(), id(model))
        with self._cond:
            self._line.append(entry)
            try:
                said = None
                while not self._may_start(*entry):
                    stop.check()  # a Stop while waiting ends the job before it starts
                    place = self._place(*entry)
                    if place != said:
                        report(place)
                        said = place
                    self._cond.wait(self.poll)
            finally:
                self._line.remove(entry)
                self._cond.notify_all()
            self._busy.add(entry[1])
        try:
            yield
        finally:
            with self._cond:
                self._busy.discard(entry[1])
                self._cond.notify_all()

    def _may_start(self, ticket: object, key: int) -> bool:
        if key in self._busy or len(self._busy) >= self.slots():
            return False
        for other, other_key in self._line:  # nobody ahead who wants this model, or who could start now
            if other is ticket:
                return True
            if other_key == key or other_key not in self._busy:
                return False
        return False

    def _place(self, ticket: object, key: int) -> Waiting:
        index = next(i for i, (other, _) in enumerate(self._line) if other is ticket)
        for_model = key in self._busy or any(other_key == key for _, other_key in self._line[:index])
        return Waiting(index + 1, "model" if for_model else "slots", self.slots())


TURNS = Turns()  # server-wide: it holds no visitor data, only who waits for which model


# ---- streaming ------------------------------------------------------------------------


@dataclass
class Update:
    """What a streaming handler sees: the work's latest event, a tick, a wait, its start, or the result."""

    kind: str  # "waiting" (value: Waiting) | "started" | "event" | "tick" | "done" (value: the result)
    value: Any = None
    elapsed: float = 0.0


def stream(work: Callable[[Callable[[Any], None], StopFlag], Any], model: object, job: Job,
           tick: float = TICK, turns: Turns = TURNS) -> Iterator[Update]:
    """Run ``work(emit, stop)`` in a thread once ``model``'s turn has come; yield its updates.

    The last update is ``done`` with the work's return value; an exception raised by the
    work (``Stopped`` for a Stop while waiting) is raised here. If the reader stops
    reading (the page went away), the work is asked to stop.
    """
    events: "queue.Queue[tuple[str, Any]]" = queue.Queue()
    stop = job.flag()
    started = time.monotonic()

    def run() -> None:
        try:
            # Held from the first moment: never evicted from the shared cache while this job waits or works.
            with hold(model), turns.turn(model, stop, lambda place: events.put(("waiting", place))):
                events.put(("started", None))
                events.put(("done", work(lambda value: events.put(("event", copy.copy(value))), stop)))
        except BaseException as exc:  # handed to the reader, who re-raises it in the handler
            events.put(("error", exc))

    threading.Thread(target=run, name=f"fnweb-job-{job.id[:8]}", daemon=True).start()
    finished = False
    try:
        while True:
            for kind, value in _next(events, tick):
                elapsed = time.monotonic() - started
                if kind == "error":
                    finished = True
                    raise value
                yield Update(kind, value, elapsed)
                if kind == "done":
                    finished = True
                    return
    finally:
        if not finished:
            stop.set()


def _next(events: "queue.Queue", tick: float) -> list[tuple[str, Any]]:
    """What to report next: everything waiting, less events that a newer one of their sort replaces."""
    try:
        batch = [events.get(timeout=tick)]
    except queue.Empty:
        return [("tick", None)]
    while True:
        try:
            batch.append(events.get_nowait())
        except queue.Empty:
            break
    newest = {_sort(value): i for i, (kind, value) in enumerate(batch) if kind == "event"}
    return [(kind, value) for i, (kind, value) in enumerate(batch) if kind != "event" or newest[_sort(value)] == i]


def _sort(value: Any) -> str:
    """Progress events replace progress events; anything else (a partial result) replaces its own kind."""
    return "progress" if isinstance(value, Progress) else type(value).__name__
