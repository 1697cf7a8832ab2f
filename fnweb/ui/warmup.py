"""Templates built once in the background while the server starts, so that the first visitor waits for nothing.

``WARMUP.start(request, config, key, path)`` builds ``config`` on the model of
``request`` in a thread of its own and saves the template to ``path`` (atomically), unless
``path`` is there already. The build takes its turn on the model like any visitor's job
(``fnweb.ui.jobs.stream``: masks and captures never overlap), holds the model in the
shared cache while it works, and uses the model that cache already holds. A visitor who
asks for the same template meanwhile follows it (``WARMUP.get(key)``: its last progress
event, whether it is done, and why it failed) instead of building it a second time.

The registry is server-wide and holds no visitor data: only which builds run, their
progress and the cache files they write (``fnweb.ui.presets`` decides what is built:
templates of built-in prompts only, the same for every visitor). It knows nothing about
components or pages.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..build import BuildConfig, build_template
from ..errors import FnwebError
from ..models import ModelRequest, load_model
from ..progress import Progress
from .jobs import Job, stream

log = logging.getLogger("fnweb.ui")


@dataclass
class WarmBuild:
    """One background build, as visitors see it."""

    key: str
    path: Path
    started: float = field(default_factory=time.monotonic)
    progress: Optional[Progress] = None  # the build's last progress event
    error: Optional[str] = None  # why it failed (the visitor's own build then runs instead)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Warmup:
    """The background builds by key (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builds: dict[str, WarmBuild] = {}

    def get(self, key: str) -> Optional[WarmBuild]:
        with self._lock:
            return self._builds.get(key)

    def start(self, request: ModelRequest, config: BuildConfig, key: str, path: Path) -> Optional[WarmBuild]:
        """Build in the background unless ``path`` exists or the same build runs; the build, or None."""
        with self._lock:
            if path.exists() or key in self._builds:
                return self._builds.get(key)
            build = self._builds[key] = WarmBuild(key, path)
        threading.Thread(target=self._run, args=(build, request, config), name="fnweb-warmup", daemon=True).start()
        return build

    def _run(self, build: WarmBuild, request: ModelRequest, config: BuildConfig) -> None:
        job = Job()
        try:
            lm = load_model(request)
            work = lambda emit, stop: build_template(lm, config, progress=emit, stop=stop)  # noqa: E731
            for update in stream(work, lm.model, job):
                if update.kind == "event" and isinstance(update.value, Progress):
                    build.progress = update.value
                elif update.kind == "done":
                    update.value.template.save(build.path)
                    log.info("Preset template built at start-up in %.0f s: %s", build.elapsed, build.path)
        except FnwebError as exc:
            build.error = str(exc)
            log.warning("The preset template was not built at start-up: %s", exc)
        except Exception as exc:  # a bug: visitors then build it themselves
            build.error = "the start-up build failed"
            log.error("The preset template build at start-up failed", exc_info=exc)
        finally:
            job.cleanup()
            build.finished.set()


WARMUP = Warmup()  # server-wide: builds of built-in prompts, no visitor data
