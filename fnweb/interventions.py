"""What a mask does to the channels it touches: the table of interventions, and one layer's edit.

An ``Intervention`` record says which channels of a masked layer it changes (the
network's, or every other one) and what it multiplies them by; ``INTERVENTIONS`` holds
one record per kind (today **lesion**: the network's channels zeroed, and **preserve**:
every other channel of the masked layers zeroed). ``Intervention.edit`` turns a layer's
selected channels into a ``LayerMask``: the activations become ``x * keep + add``, where
``add`` is None for a pure multiply (lesion, preserve, scaling), the path hooks take at
the speed of a plain multiply, and a vector of values put in place of the changed
channels otherwise (e.g. stored per-channel means, for a mean ablation).

Adding a kind is one record here (plus, for a kind that puts values in, where those
values come from); masks, stacking, hooks, restricted updates, merging, the CLIs and the
app's choices read the table. It knows nothing about models, templates or hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


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
    scale: float  # what the changed channels are multiplied by (0: zeroed)
    help: str  # one line for people: what it does
    colour: str  # the app's colour for its column and its runs

    def edit(self, selected: torch.Tensor, width: int) -> LayerMask:
        """The edit of a layer whose network channels are ``selected`` (indices)."""
        in_network = torch.zeros(width, dtype=torch.bool)
        in_network[selected] = True
        changed = in_network if self.acts_on_network else ~in_network
        keep = torch.ones(width)
        keep[changed] = self.scale
        return LayerMask(keep)

    def touches(self, selected: torch.Tensor) -> bool:
        """Whether a layer with these network channels needs an edit at all.

        An intervention on the network leaves a layer without network channels alone; one on
        the rest changes every channel of such a layer.
        """
        return len(selected) > 0 or not self.acts_on_network

    def network_share(self, changed_share: float) -> float:
        """The share of channels that is the network's: those changed, or those left alone."""
        return changed_share if self.acts_on_network else 1.0 - changed_share


INTERVENTIONS: dict[str, Intervention] = {
    "lesion": Intervention("lesion", "Lesion", acts_on_network=True, scale=0.0,
                           help="the chosen components' neurons zeroed", colour="#dc2626"),
    "preserve": Intervention("preserve", "Preserve", acts_on_network=False, scale=0.0,
                             help="only the chosen components' neurons kept", colour="#16a34a"),
}
DEFAULT_INTERVENTION = "lesion"


def interventions_help() -> str:
    """Every intervention and what it does, for a form or a CLI's help."""
    return " · ".join(f"{i.name}: {i.help}" for i in INTERVENTIONS.values())
