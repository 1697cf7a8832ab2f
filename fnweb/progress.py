"""Progress reports and stop requests shared by every long engine call.

A long call takes ``progress`` (a callable receiving ``Progress`` events) and ``stop``
(a ``StopFlag``). It reports as it goes and calls ``stop.check()`` between units of
work; ``check`` raises ``Stopped`` once someone has asked it to stop. This module
knows nothing about what the work is.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .errors import Stopped


@dataclass
class Progress:
    """One progress event: ``done`` of ``total`` units in ``phase``."""

    phase: str  # e.g. "loading", "capturing", "decomposing", "thresholding", "training"
    done: float = 0.0
    total: float = 1.0
    unit: str = ""  # "tokens", "steps", ...
    message: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)

    @property
    def seconds_left(self) -> Optional[float]:
        """Linear estimate of the time left in this phase, or None before any work."""
        if self.done <= 0 or self.total <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (self.total - self.done) / self.done

    def describe(self) -> str:
        text = self.message or self.phase
        if self.unit:
            text += f": {self.done:,.0f} of {self.total:,.0f} {self.unit}"
        left = self.seconds_left
        if left is not None and self.done < self.total:
            text += f", about {left:.0f} s left"
        return text


ProgressFn = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The default progress callback: report nothing."""


class StopFlag:
    """A thread-safe request to stop; long calls poll it with ``check``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Stopped()

