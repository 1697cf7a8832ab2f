"""Numbers that compare an intervened model with the unchanged one: the table of metrics.

A ``Metric`` record says what a number is called, how it is shown (digits, scale,
unit, sign), which way is better, and, for a number measured token by token, how
one position's value is computed. ``METRICS`` holds one record per number; Compare,
Experiments, the forgetting figures, the plots and the tables iterate over it, so a
new metric is one record plus its computation. ``Stat`` is a measured number: a mean
and, over several draws, its standard deviation.

``next_token_stats`` computes every per-token metric (``TOKEN_METRICS``: the mean
next-token KL divergence KL(baseline || intervened), the cross-entropy of the target
tokens under the intervened model, and the top-1 agreement with the baseline) from
the baseline's and an intervened model's logits over the same tokens, in float32,
over the positions a mask selects.

It knows nothing about masks or generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# One position's value: (baseline log-probs, intervened log-probs, targets) -> (...) values.
PerToken = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Stat:
    """A measured number: its mean and, over several draws, its standard deviation (None: one value).

    ``low`` and ``high``, when set, bound a 95 % interval of the number (a bootstrap over prompts).
    """

    mean: Optional[float]
    sd: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None


@dataclass(frozen=True)
class Metric:
    """One number fnweb reports, and how to show it."""

    key: str
    short: str  # a table column: "KL"
    label: str  # words for a header or an axis: "KL from baseline"
    unit: str  # "nats/token", "%", "" (shown after label on an axis)
    digits: int  # decimals shown (of the scaled value)
    better: str  # "lower" | "higher"
    help: str
    scale: float = 1.0  # shown value = scale * stored value (a share shown in %)
    signed: bool = False  # shown with its sign: a change
    ratio: bool = False  # a size of effect (0 for the unchanged model): its ratio to a random control means something
    per_token: Optional[PerToken] = None  # set: measured at every next-token position and averaged
    unchanged: Optional[float] = None  # its value for the unchanged model when fixed by definition (KL: 0)

    def format(self, value: Optional[float], sd: Optional[float] = None, digits: Optional[int] = None,
               missing: str = "—") -> str:
        """'0.1234', '+0.1234 ± 0.0100', '50.0 %'; ``missing`` for a value not measured."""
        if value is None:
            return missing
        places = self.digits if digits is None else digits
        text = f"{self.scale * value:{'+' if self.signed else ''}.{places}f}"
        if sd is not None:
            text += f" ± {self.scale * sd:.{places}f}"
        return text + (" %" if self.unit == "%" else "")

    def format_interval(self, stat: Optional[Stat], missing: str = "—") -> str:
        """'[+0.0123, +0.0456]' for a stat's interval; ``missing`` when it has none."""
        if stat is None or stat.low is None or stat.high is None:
            return missing
        return f"[{self.format(stat.low)}, {self.format(stat.high)}]"

    def axis_title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit and self.unit != "%" else self.label

    def worse(self, value: float, control: Stat, sigmas: float) -> bool:
        """Whether ``value`` is worse than the control's mean by over ``sigmas`` standard deviations."""
        margin = sigmas * max(control.sd or 0.0, 1e-9)
        return value > control.mean + margin if self.better == "lower" else value < control.mean - margin


def _kl(base_logp: torch.Tensor, logp: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
    return (base_logp.exp() * (base_logp - logp)).sum(-1)


def _ce(_base_logp: torch.Tensor, logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _top1(base_logp: torch.Tensor, logp: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
    return (logp.argmax(-1) == base_logp.argmax(-1)).float()


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("kl", "KL", "KL from baseline", "nats/token", 4, "lower", ratio=True, per_token=_kl, unchanged=0.0,
           help="mean next-token KL divergence from the unchanged model, KL(baseline || intervened)"),
    Metric("ce", "CE", "cross-entropy", "nats/token", 4, "lower", per_token=_ce,
           help="mean cross-entropy of the scored tokens under the intervened model"),
    Metric("top1", "top-1", "top-1 agreement", "%", 1, "higher", scale=100.0, per_token=_top1, unchanged=1.0,
           help="share of positions where the intervened model's top token is the baseline's"),
    Metric("dce", "ΔCE", "Δ cross-entropy", "nats/token", 4, "lower", signed=True, ratio=True, unchanged=0.0,
           help="cross-entropy with the intervention minus without it"),
    Metric("acc", "accuracy", "task accuracy", "", 2, "higher",
           help="share of a labelled task's items answered right (scored by answer log-likelihood)"),
    Metric("excess", "ΔCE − random", "Δ cross-entropy beyond random", "nats/token", 4, "lower", signed=True,
           help="the change in cross-entropy minus its random controls' mean change"),
    Metric("p", "p", "permutation p", "", 3, "lower",
           help="where the effect ranks among the random draws: (1 + draws at least as bad) / (draws + 1)"),
    Metric("p_holm", "p (Holm)", "Holm-adjusted p", "", 3, "lower",
           help="the permutation p adjusted by Holm's method across the components tested"),
    Metric("ppl", "PPL", "perplexity", "", 2, "lower", help="exp of the cross-entropy"),
)}
TOKEN_METRICS: tuple[str, ...] = tuple(key for key, m in METRICS.items() if m.per_token is not None)


def next_token_stats(
    base_logits: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
) -> dict:
    """Every per-token metric's mean over valid positions, and the number of those positions (``tokens``).

    base_logits, logits: (..., vocab) predicting ``targets`` (...). ``valid`` (...) bool.
    """
    base_logp = F.log_softmax(base_logits.float(), dim=-1)
    logp = F.log_softmax(logits.float(), dim=-1)
    if valid is None:
        valid = torch.ones(targets.shape, dtype=torch.bool, device=logp.device)
    n = valid.sum().clamp(min=1)
    stats = {key: float((METRICS[key].per_token(base_logp, logp, targets) * valid).sum() / n) for key in TOKEN_METRICS}
    return {**stats, "tokens": int(valid.sum())}


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def stat_of(values: Sequence[Optional[float]], spread_of_one: bool = True) -> Stat:
    """The mean and spread of draws; Stat(None, None) when any draw has no value.

    ``spread_of_one`` False: a single draw has no spread (sd None) rather than 0.
    """
    if not values or any(v is None for v in values):
        return Stat(None, None)
    mean, spread = mean_and_spread(values)
    return Stat(mean, spread if len(values) > 1 or spread_of_one else None)
