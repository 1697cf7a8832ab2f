"""The one job runner of the app: start a visitor's model work, follow it, and say truly where it is.

Every tab's long action (build a template, compare, run an experiment, make cards,
search) goes through ``run``::

    for view in runner.run(session, build_on_device, config, title="Building the template"):
        if not view.done:
            yield {"progress": view.status_html()}
    if view.stopped: ...
    use(view.result)

``run`` makes the visitor's ``Job`` (what Stop acts on), calls the tab's device function
(the one ZeroGPU places on a GPU: ``device(session.model, *args, job)``, which streams
``jobs.Update``s), and folds its updates into a ``JobView``: whether the job is queued,
waiting (and its place in the line), running, done or stopped; the last ``Progress``
event; the newest other value the work reported (a partial comparison, a partial
experiment result), with ``fresh`` set when it is new; and the time elapsed. The view
keeps what it knew between ticks, so the status line never falls back to an older
state. A Stop ends the iteration with a view whose ``stopped`` is set (nothing is
raised); any other failure is raised for ``fnweb.ui.feedback`` to show. Whatever
happens, the job is cleaned up and forgotten.

It knows nothing about components or about what any one job computes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional

from ..errors import Stopped
from ..progress import Progress
from . import render
from .jobs import Job, Update, Waiting
from .state import Session

QUEUED, WAITING, RUNNING, DONE, STOPPED = "queued", "waiting", "running", "done", "stopped"


@dataclass
class JobView:
    """What the page knows about one job at one moment: enough to draw its status line and its partial results."""

    title: str
    phases: tuple[dict, dict] = render.NO_PHASES  # where each phase sits on the bar (``render.BUILD_PHASES``)
    state: str = QUEUED
    elapsed: float = 0.0
    waiting: Optional[Waiting] = None
    progress: Optional[Progress] = None  # the last progress event
    value: Any = None  # the newest other value the work reported
    fresh: bool = False  # ``value`` arrived with this view
    result: Any = None  # the work's return value, once done

    @property
    def done(self) -> bool:
        return self.state in (DONE, STOPPED)

    @property
    def stopped(self) -> bool:
        return self.state == STOPPED

    def after(self, update: Update) -> "JobView":
        """This view moved on by one update of the job."""
        view = replace(self, elapsed=update.elapsed, fresh=False)
        if update.kind == "waiting":
            view.state, view.waiting = WAITING, update.value
        elif update.kind == "started":
            view.state, view.waiting = RUNNING, None
        elif update.kind == "event" and isinstance(update.value, Progress):
            view.state, view.progress = RUNNING, update.value
        elif update.kind == "event":
            view.state, view.value, view.fresh = RUNNING, update.value, True
        elif update.kind == "done":
            view.state, view.result = DONE, update.value
        return view

    def status_html(self) -> str:
        """The status line: queued, waiting (with its place), or the phase, n of N, time left and time elapsed."""
        return render.progress_html(self.progress, self.elapsed, self.title, waiting=self.waiting,
                                    started=self.state != QUEUED, phases=self.phases)


def run(session: Session, device: Callable[..., Iterator[Update]], *args, title: str,
        phases: tuple[dict, dict] = render.NO_PHASES) -> Iterator[JobView]:
    """Run ``device(session.model, *args, job)`` as this visitor's job; yield a view per update (see the module)."""
    session.require_model()
    job = session.job = Job()
    view = JobView(title, phases)
    try:
        yield view
        for update in device(session.model, *args, job):
            view = view.after(update)
            yield view
            if view.done:
                return
    except Stopped:
        yield replace(view, state=STOPPED, fresh=False)
    finally:
        session.finish(job)


def stop(session: Session) -> bool:
    """Ask the visitor's running job to stop (the work stops at its next check); whether there was one."""
    if session.job is None:
        return False
    session.job.request_stop()
    return True
