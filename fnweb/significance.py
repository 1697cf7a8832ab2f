"""Is an effect beyond its random controls? Permutation p-values, Holm correction, bootstrap intervals.

The tests an experiment puts beside each component, written for plain arrays:

- ``permutation_p``: where a network's effect ranks among D effects of random sets of
  the same sizes: ``p = (1 + #draws at least as bad) / (D + 1)``. The draws are the null
  distribution, so the smallest p that D draws can give is ``1 / (D + 1)``
  (``smallest_p``); ``draws_needed`` says how many draws a Holm correction over m tests
  needs before any of them can pass.
- ``holm``: Holm's step-down adjusted p-values (family-wise error over the components).
- ``fisher``: Fisher's combination of independent p-values (one per template seed).
- ``bootstrap_interval``: a percentile interval of a ratio of sums over resampled units
  (prompts, or task items), e.g. the change in cross-entropy (summed over a prompt's
  tokens, over the prompt's token count), paired across conditions because every
  condition is resampled with the same weights.

It knows nothing about models, masks or experiments.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

LEVEL = 0.05  # family-wise error rate a component must survive
BOOTSTRAPS = 2000  # resamples behind an interval
COVERAGE = 0.95  # of a bootstrap interval


def permutation_p(effect: float, draws: Sequence[float], worse: str = "higher") -> Optional[float]:
    """The rank p-value of ``effect`` among ``draws``: ``(1 + #draws at least as extreme) / (D + 1)``.

    ``worse`` says which direction is the effect's: "higher" (a rise in cross-entropy) or
    "lower" (a drop in accuracy). None when there is no effect or no draw to rank among.
    """
    values = np.asarray([d for d in draws if d is not None], dtype=np.float64)
    if effect is None or not len(values) or not math.isfinite(effect):
        return None
    as_bad = values >= effect if worse == "higher" else values <= effect
    return float((1 + int(as_bad.sum())) / (len(values) + 1))


def smallest_p(draws: int) -> float:
    """The smallest permutation p-value ``draws`` random draws can give."""
    return 1.0 / (draws + 1)


def draws_needed(tests: int, level: float = LEVEL) -> int:
    """The fewest draws with which the strongest of ``tests`` effects can survive Holm at ``level``."""
    return max(1, math.ceil(tests / level - 1 - 1e-9))


def holm(ps: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjusted p-values, in the input's order (None stays None and is not counted)."""
    present = [(p, i) for i, p in enumerate(ps) if p is not None]
    adjusted: list[Optional[float]] = [None] * len(ps)
    running, m = 0.0, len(present)
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))  # monotone: never below a smaller p's adjustment
        adjusted[i] = running
    return adjusted


def fisher(ps: Sequence[Optional[float]]) -> Optional[float]:
    """Fisher's combined p-value of independent p-values (None when any is missing)."""
    if not ps or any(p is None for p in ps):
        return None
    from scipy.stats import chi2

    statistic = -2.0 * sum(math.log(max(p, 1e-300)) for p in ps)
    return float(chi2.sf(statistic, 2 * len(ps)))


def resample_weights(units: int, seed: int, bootstraps: int = BOOTSTRAPS) -> np.ndarray:
    """How often each unit is drawn in each resample: (bootstraps, units) counts, seeded."""
    rng = np.random.default_rng([seed, units])
    picks = rng.integers(0, units, size=(bootstraps, units))
    weights = np.zeros((bootstraps, units))
    np.add.at(weights, (np.arange(bootstraps)[:, None], picks), 1.0)
    return weights


def bootstrap_interval(numerator: Sequence[float], denominator: Sequence[float], weights: np.ndarray,
                       coverage: float = COVERAGE) -> tuple[Optional[float], Optional[float]]:
    """Percentile interval of ``sum(numerator) / sum(denominator)`` over the resamples ``weights`` gives.

    One unit: no interval (None, None). The same ``weights`` for every condition pairs them.
    """
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if len(num) < 2 or weights.shape[1] != len(num):
        return None, None
    values = (weights @ num) / np.maximum(weights @ den, 1e-12)
    tail = 100 * (1 - coverage) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
