"""How a component's channel map becomes a binary mask: the table of thresholds.

A ``Threshold`` record holds a rule's default value, the open interval its value must
lie in, the function that applies it to maps ``(channels, k)``, and the words for
people and for the command line. ``THRESHOLDS`` has one record per rule:

- **percentile** (the original's): channels whose ``|map|`` is at or above the
  percentile of the component's ``|map|``;
- **zscore** (the paper's): channels whose map z-scores above alpha, on the positive
  side (maps are oriented so that their heavier tail is positive, since ICA's sign is
  arbitrary).

The build's config validation, the Templates tab, the ``buildtemplates`` CLI and the
stability check all read the table: adding a rule is one record and its function. It
knows nothing about models, activations or templates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .errors import FnwebError


def _percentile(maps: np.ndarray, value: float) -> np.ndarray:
    magnitude = np.abs(maps)
    return magnitude >= np.percentile(magnitude, value, axis=0, keepdims=True)


def _zscore(maps: np.ndarray, value: float) -> np.ndarray:
    z = (maps - maps.mean(0)) / np.maximum(maps.std(0), 1e-12)
    return z > value


@dataclass(frozen=True)
class Threshold:
    """One rule that turns channel maps into binary masks."""

    name: str
    default: float
    low: float  # the value must lie strictly above low ...
    high: float  # ... and strictly below high (inf: no upper bound)
    apply: Callable[[np.ndarray, float], np.ndarray]  # (maps (channels, k), value) -> bool masks (channels, k)
    value_name: str  # what its value is called in messages: "percentile", "z-score alpha"
    hint: str  # typical values, for a form
    help: str  # what it keeps, for people
    cli_flag: str  # the original CLI's flag for its value

    def check(self, value: float) -> float:
        """The value as a finite float, or an error saying the range it must lie in."""
        try:
            value = float(value)
        except (TypeError, ValueError) as exc:
            raise FnwebError(f"The {self.value_name} must be a number (got {value!r}).") from exc
        if not math.isfinite(value):  # inf is no threshold (and NaN compares false with every bound)
            raise FnwebError(f"The {self.value_name} must be a finite number that {self.range_words(third=True)} "
                             f"(got {value:g}).")
        if not self.low < value < self.high:
            raise FnwebError(f"The {self.value_name} must {self.range_words()} (got {value:g}).")
        return value

    def range_words(self, third: bool = False) -> str:
        """'be positive', 'lie ...' (or 'is positive', 'lies ...' after 'a number that')."""
        be, lie = ("is", "lies") if third else ("be", "lie")
        if math.isinf(self.high):
            return f"{be} positive" if self.low == 0 else f"{lie} above {self.low:g}"
        return f"{lie} strictly between {self.low:g} and {self.high:g}"


THRESHOLDS: dict[str, Threshold] = {
    "percentile": Threshold(
        "percentile", default=98.0, low=0.0, high=100.0, apply=_percentile, value_name="percentile",
        hint="percentile 90-99.9", help="percentile of |map| (the original)", cli_flag="ica_percentile",
    ),
    "zscore": Threshold(
        "zscore", default=1.96, low=0.0, high=math.inf, apply=_zscore, value_name="z-score alpha",
        hint="z-score > 0", help="z-score above alpha (the paper)", cli_flag="zscore_alpha",
    ),
}
DEFAULT_RULE = "percentile"


def threshold_rule(kind: str) -> Threshold:
    """The record of a rule, or an error naming the rules there are."""
    if kind not in THRESHOLDS:
        raise FnwebError(f"Unknown threshold '{kind}'; choose {' or '.join(THRESHOLDS)}.")
    return THRESHOLDS[kind]


def resolved_value(kind: str, value: Optional[float]) -> float:
    """The value given, or the rule's default."""
    return threshold_rule(kind).default if value is None else float(value)


def threshold(maps: np.ndarray, kind: str = DEFAULT_RULE, value: Optional[float] = None) -> np.ndarray:
    """Binary masks (channels, k) from channel maps (value None: the rule's default)."""
    rule = threshold_rule(kind)
    return rule.apply(maps, rule.check(resolved_value(kind, value)))
