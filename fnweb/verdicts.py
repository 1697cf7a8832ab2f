"""Whether a comparison's intervention did more than chance: each column against its matched random control.

A ``Verdict`` sets an intervention column's number (``HEADLINE``: the mean next-token KL
from the baseline, a size of effect, 0 for the unchanged model) against its random
control's draws (``fnweb.compare.RANDOM_OF``): how many times the control's mean it is,
and in plain words whether it is larger than random, smaller than random, or
indistinguishable from random. "Indistinguishable" is decided by ``WITHIN``: the value
lies within ``SIGMAS`` standard deviations of the draws' mean, or within a factor
``CLOSE`` of it (a few draws can agree by chance, giving a spread too small to trust).

It knows nothing about generation, the UI or presets (``Claim`` is what a blurb
asserts, checked by ``holds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .metrics import METRICS, Stat

HEADLINE = "kl"  # the number a verdict is about (a ratio metric: its ratio to random means something)
SIGMAS = 2.0  # within this many standard deviations of the random draws' mean: indistinguishable
CLOSE = 1.25  # within this factor of the random mean (either way): indistinguishable, whatever the spread
LARGER, SMALLER, SAME = "larger than random", "smaller than random", "indistinguishable from random"


@dataclass(frozen=True)
class Verdict:
    column: str
    control: str  # the random control column it is set against
    metric: str
    value: float
    random: Stat  # the control's mean and spread over its draws
    draws: int

    @property
    def ratio(self) -> Optional[float]:
        """The value as a multiple of the random mean (None when the random mean is 0)."""
        return self.value / self.random.mean if self.random.mean else None

    @property
    def word(self) -> str:
        mean, sd = self.random.mean, self.random.sd or 0.0
        if abs(self.value - mean) <= SIGMAS * sd:
            return SAME
        if self.ratio is not None and 1 / CLOSE <= self.ratio <= CLOSE:
            return SAME
        return LARGER if self.value > mean else SMALLER

    def line(self) -> str:
        """'3.2 × random (KL 0.412 vs 0.128 ± 0.020 over 3 draws): larger than random'."""
        metric = METRICS[self.metric]
        times = f"{self.ratio:.1f} × random" if self.ratio is not None else "random is 0"
        spread = metric.format(self.random.mean, self.random.sd, digits=3)
        return (f"{times} ({metric.short} {metric.format(self.value, digits=3)} vs {spread} over {self.draws} "
                f"draw{'s' if self.draws != 1 else ''}): {self.word}")


def verdicts(comparison, random_of: dict[str, str], metric: str = HEADLINE) -> dict[str, Verdict]:
    """Per intervention column with a scored random control in ``comparison``: its verdict (by column name)."""
    by_name = {c.name: c for c in comparison.columns}
    found = {}
    for control, intervention in random_of.items():
        column, random = by_name.get(intervention), by_name.get(control)
        if column is None or random is None:
            continue
        value, stat = column.metrics.get(metric), random.metrics.get(metric)
        if value is None or value.mean is None or stat is None or stat.mean is None:
            continue
        found[intervention] = Verdict(intervention, control, metric, value.mean, stat, random.draws)
    return found


@dataclass(frozen=True)
class Claim:
    """What a demo's blurb asserts about its own numbers: ``column``'s ``metric`` is ``word`` (e.g. LARGER)."""

    column: str
    word: str = LARGER
    metric: str = HEADLINE

    def holds(self, found: dict[str, Verdict]) -> bool:
        verdict = found.get(self.column)
        return verdict is not None and verdict.metric == self.metric and verdict.word == self.word
