"""What a mask does to the channels it touches: the table of interventions, and one layer's edit.

An ``Intervention`` record says which channels of a masked layer it changes (the
network's, or every other one), what it multiplies them by (a fixed factor, or the
mask's ``alpha``), and which per-channel statistic, if any, it puts in their place;
``INTERVENTIONS`` holds one record per kind: **lesion** (the network's channels zeroed),
**preserve** (every other channel of the masked layers zeroed), **mean** (the network's
channels replaced by their mean over the template's tokens: a mean ablation) and
**scale** (the network's channels multiplied by alpha: 0 zeroes them, 1 leaves them, above
1 amplifies). ``Intervention.edit`` turns a layer's selected channels into a
``LayerMask``: the activations become ``x * keep + add``, where ``add`` is None for a pure
multiply (lesion, preserve, scaling), the path hooks take at the speed of a plain
multiply, and the statistic's values in place of the changed channels otherwise.

Adding a kind is one record here (a statistic it puts in must be one the template keeps,
``fnweb.channel_stats.ARRAYS``); masks, stacking, hooks, restricted updates, merging, the
CLIs and the app's choices read the table. It knows nothing about models, templates or hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import FnwebError

ALPHA_RANGE = (0.0, 10.0)  # a factor beyond 10 makes any channel an outlier: not a dose anyone needs


@dataclass(frozen=True)
class LayerMask:
    """One layer's edit: ``x * keep + add`` over its channels (the last axis)."""

    keep: torch.Tensor  # (width,), or (rows, 1, width) for a batch whose rows are masked differently
    add: Optional[torch.Tensor] = None  # same shape as keep; None: a pure multiply

    def to(self, device) -> "LayerMask":
        return LayerMask(self.keep.to(device), None if self.add is None else self.add.to(device))

    def changed(self) -> torch.Tensor:
        """Bool, keep's shape: the channels the edit changes."""
        changed = self.keep != 1
        return changed if self.add is None else changed | (self.add != 0)

    def unchanged(self) -> torch.Tensor:
        """0/1 float, keep's shape: the channels the edit leaves as they are."""
        return (~self.changed()).to(self.keep.dtype)


def as_layer_mask(value) -> LayerMask:
    """A ``LayerMask``; a bare tensor is shorthand for a pure multiply by it."""
    return value if isinstance(value, LayerMask) else LayerMask(torch.as_tensor(value))


@dataclass(frozen=True)
class Intervention:
    """One kind of intervention on a network's channels."""

    name: str
    title: str  # for people: a column or legend title
    acts_on_network: bool  # True: changes the network's channels; False: every other channel of a masked layer
    scale: Optional[float]  # what the changed channels are multiplied by (0: zeroed); None: the mask's alpha
    help: str  # one line for people: what it does
    colour: str  # the app's colour for its column and its runs
    fill: Optional[str] = None  # a per-channel statistic put in place of the changed channels ("mean"); None: none
    doing: str = ""  # for a reading sentence: '{doing} component 3' ('{alpha}' stands for the factor)

    @property
    def takes_alpha(self) -> bool:
        """Its factor is the mask's alpha."""
        return self.scale is None

    @property
    def needs_stats(self) -> bool:
        """It needs the template's capture statistics."""
        return self.fill is not None

    def done_to(self, what: str, alpha: Optional[float] = None) -> str:
        """'lesioning component 3', 'scaling component 3 by α = 2' (what is done to ``what``, for a sentence)."""
        phrase = (self.doing or f"applying {self.title.lower()} to {{what}}").replace("{what}", what)
        return phrase.replace("{alpha}", f"{alpha:g}" if alpha is not None else "α")

    def factor(self, alpha: Optional[float] = None) -> float:
        """What the changed channels are multiplied by."""
        return self.scale if self.scale is not None else check_alpha(alpha)

    def edit(self, selected: torch.Tensor, width: int, alpha: Optional[float] = None,
             values: Optional[torch.Tensor] = None) -> LayerMask:
        """The edit of a layer whose network channels are ``selected`` (indices); ``values``: the fill's (width,)."""
        in_network = torch.zeros(width, dtype=torch.bool)
        in_network[selected] = True
        changed = in_network if self.acts_on_network else ~in_network
        keep = torch.ones(width)
        keep[changed] = self.factor(alpha)
        if self.fill is None:
            return LayerMask(keep)
        add = torch.zeros(width)
        add[changed] = torch.as_tensor(values, dtype=torch.float32)[changed]
        return LayerMask(keep, add)

    def touches(self, selected: torch.Tensor, alpha: Optional[float] = None) -> bool:
        """Whether a layer with these network channels needs an edit at all.

        An intervention on the network leaves a layer without network channels alone (and
        every layer when it multiplies by 1 and puts nothing in); one on the rest changes every
        channel of such a layer.
        """
        if self.fill is None and self.factor(alpha) == 1.0:
            return False
        return len(selected) > 0 or not self.acts_on_network

    def network_share(self, changed_share: float) -> float:
        """The share of channels that is the network's: those changed, or those left alone."""
        return changed_share if self.acts_on_network else 1.0 - changed_share


INTERVENTIONS: dict[str, Intervention] = {
    "lesion": Intervention("lesion", "Lesion", acts_on_network=True, scale=0.0,
                           help="the chosen components' neurons zeroed", colour="#dc2626", doing="lesioning {what}"),
    "preserve": Intervention("preserve", "Preserve", acts_on_network=False, scale=0.0,
                             help="only the chosen components' neurons kept", colour="#16a34a",
                             doing="keeping only {what}"),
    "mean": Intervention("mean", "Mean ablation", acts_on_network=True, scale=0.0, fill="mean",
                         help="the chosen components' neurons set to their mean over the template's tokens",
                         colour="#9333ea", doing="mean-ablating {what}"),
    "scale": Intervention("scale", "Scale by α", acts_on_network=True, scale=None,
                          help="the chosen components' neurons multiplied by α (0: zeroed, 1: unchanged, above 1: "
                               "amplified)", colour="#0891b2", doing="scaling {what} by α = {alpha}"),
}
DEFAULT_INTERVENTION = "lesion"


def check_alpha(alpha) -> float:
    """``alpha`` as a float when it is a finite number in ``ALPHA_RANGE``, else an error saying what it may be."""
    low, high = ALPHA_RANGE
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise FnwebError(f"α must be a finite number from {low:g} to {high:g} (0 zeroes the channels, 1 leaves them "
                         f"as they are, above 1 amplifies them); got {alpha!r}.")
    return value


def interventions_help() -> str:
    """Every intervention and what it does, for a form or a CLI's help."""
    return " · ".join(f"{i.name}: {i.help}" for i in INTERVENTIONS.values())
