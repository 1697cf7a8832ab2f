"""When a growing output is worth sending to the page again: redraws throttled by their size.

A streamed output (the Compare columns) is re-sent whole each time it is redrawn: the
page replaces its HTML, which costs the browser time in proportion to its size. Sent at
every tick (4 a second), 1,024 tokens in 6 columns make the browser spend its time
redrawing, and a Stop takes long to show. ``Redraws`` spaces the redraws so that the
output sent stays under ``BYTES_PER_SECOND`` on average: a short text redraws every tick,
a long one less often (never less than every ``MOST`` seconds). The status line, small, is
sent at every tick regardless, so the page keeps saying what happens.

It knows nothing about what the output is.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

BYTES_PER_SECOND = 24_000  # of a growing output, on average
LEAST = 0.25  # seconds between redraws, at the least (the job runner's tick)
MOST = 2.0  # seconds between redraws, at the most, however large the output


class Redraws:
    """Decides when to redraw a growing output: ``due()`` says whether now; ``sent(text)`` records a redraw."""

    def __init__(self, bytes_per_second: float = BYTES_PER_SECOND, least: float = LEAST, most: float = MOST,
                 clock: Optional[Callable[[], float]] = None) -> None:
        self.bytes_per_second, self.least, self.most = bytes_per_second, least, most
        self.clock = clock or time.monotonic
        self.last_at: float | None = None
        self.last_size = 0
        self.sent_bytes = 0

    def wait(self) -> float:
        """Seconds to leave after the last redraw: long enough for its size, within [least, most]."""
        return min(self.most, max(self.least, self.last_size / self.bytes_per_second))

    def due(self) -> bool:
        return self.last_at is None or self.clock() - self.last_at >= self.wait()

    def sent(self, text: str) -> str:
        """Record that ``text`` was sent now; returns it (``yield {"output": redraws.sent(html)}``)."""
        self.last_at, self.last_size = self.clock(), len(text.encode())
        self.sent_bytes += self.last_size
        return text
