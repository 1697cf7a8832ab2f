"""Neuron masks: an intervention on a template's networks, or on a matched random control, applied with hooks.

A ``MaskSpec`` is a small plain record (components, intervention, optional random
seed, optional layers). ``layer_masks`` turns it into one ``LayerMask`` per layer (the
activations become ``x * keep + add``; see ``fnweb.interventions`` for the kinds);
``apply_masks`` applies them inside a ``with`` block through ``fnweb.archs.hook_site``,
at the site the template was made at. Masks broadcast over batch and position, so every
step of ``generate`` with a KV cache is masked. Hooks are found by module path at
entry, so a module PEFT has wrapped is hooked as a whole and the LoRA path sees the
mask too. They are removed in ``finally``. Multiplying by a 0/1 mask twice equals once,
so nesting the same lesion or preserve mask is harmless.

- **random control** (``random_seed`` set): the selected set is replaced by as many
  neurons per layer, drawn (seeded) from outside it; then the intervention as asked.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from .archs import hook_site, layout_of
from .errors import FnwebError
from .interventions import DEFAULT_INTERVENTION, INTERVENTIONS, LayerMask, as_layer_mask
from .templates import Template


@dataclass(frozen=True)
class MaskSpec:
    """Which neurons to mask and how. Plain data: safe to store and compare."""

    components: tuple[int, ...]
    mode: str = DEFAULT_INTERVENTION  # a name in fnweb.interventions.INTERVENTIONS
    random_seed: Optional[int] = None  # set: a matched random control instead of the components
    layers: Optional[tuple[int, ...]] = None  # None: every layer the template covers

    def __post_init__(self):
        if self.mode not in INTERVENTIONS:
            raise FnwebError(f"Unknown mask mode '{self.mode}'; choose {' or '.join(INTERVENTIONS)}.")
        if not self.components:
            raise FnwebError("Choose at least one component to mask.")

    def label(self) -> str:
        what = "random control" if self.random_seed is not None else "components " + ",".join(map(str, self.components))
        return f"{self.mode} {what}"


def random_control(selected: dict[int, np.ndarray], width: int, seed: int) -> dict[int, np.ndarray]:
    """As many neurons per layer as ``selected``, drawn from outside it (seeded)."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for layer, chosen in sorted(selected.items()):
        outside = np.setdiff1d(np.arange(width), chosen, assume_unique=True)
        if len(chosen) > len(outside):
            raise FnwebError(
                f"Layer {layer} has {len(chosen)} selected neurons of {width}: too many for a random "
                "control drawn from the rest. Choose fewer components or a stricter threshold."
            )
        drawn[layer] = np.sort(rng.choice(outside, size=len(chosen), replace=False))
    return drawn


def chosen_neurons(template: Template, spec: MaskSpec) -> dict[int, np.ndarray]:
    """The neurons a spec acts on, per layer (the components' union, or its random twin)."""
    selected = template.neurons(spec.components, spec.layers)
    if spec.random_seed is None:
        return selected
    return random_control(selected, template.width, spec.random_seed)


def layer_masks(template: Template, spec: MaskSpec) -> dict[int, LayerMask]:
    """One ``LayerMask`` (width,) per layer the spec's intervention touches."""
    chosen = chosen_neurons(template, spec)
    intervention = INTERVENTIONS[spec.mode]
    layers = spec.layers if spec.layers is not None else template.layers
    masks = {}
    for layer in sorted(set(layers) & set(template.layers)):
        neurons = torch.as_tensor(chosen.get(layer, np.empty(0, dtype=np.int64)), dtype=torch.long)
        if intervention.touches(neurons):
            masks[layer] = intervention.edit(neurons, template.width)
    return masks


def stacked_masks(template: Template, specs: Sequence[Optional[MaskSpec]]) -> dict[int, LayerMask]:
    """Per-row masks for a batch whose row r uses ``specs[r]`` (None: unmasked): (rows, 1, width)."""
    per_row = [layer_masks(template, spec) if spec is not None else {} for spec in specs]
    unmasked = LayerMask(torch.ones(template.width))
    stacked = {}
    for layer in sorted(set().union(*per_row)):
        rows = [masks.get(layer, unmasked) for masks in per_row]
        keep = torch.stack([r.keep for r in rows]).unsqueeze(1)  # broadcasts over positions
        add = None
        if any(r.add is not None for r in rows):
            add = torch.stack([torch.zeros(template.width) if r.add is None else r.add for r in rows]).unsqueeze(1)
        stacked[layer] = LayerMask(keep, add)
    return stacked


def masked_share(masks: dict[int, LayerMask], n_layers: int, width: int) -> float:
    """Share of all the model's channels at the site that the masks change."""
    changed = sum(int(as_layer_mask(m).changed().sum()) for m in masks.values())
    return changed / float(n_layers * width)


def _editor(mask: LayerMask):
    """The function a hook applies: ``x * keep``, or ``x * keep + add`` when the mask puts values in.

    A per-row mask (rows, 1, width) also fits inputs flattened to (rows * positions, width).
    The mask follows the activations to their device (a model split over devices, or
    offloaded, runs a layer where its hook says), moved once per device.
    """
    on_device = {mask.keep.device: mask}

    def moved(x: torch.Tensor) -> LayerMask:
        if x.device not in on_device:
            on_device[x.device] = mask.to(x.device)
        return on_device[x.device]

    if mask.add is None:  # lesion, preserve, scaling: a plain multiply, as fast as it gets
        def times(x: torch.Tensor) -> torch.Tensor:
            factor = moved(x).keep.to(dtype=x.dtype)
            if factor.dim() == 3 and x.dim() == 2:
                return (x.reshape(factor.shape[0], -1, x.shape[-1]) * factor).reshape(x.shape)
            return x * factor
        return times

    def times_plus(x: torch.Tensor) -> torch.Tensor:
        here = moved(x)
        factor, values = here.keep.to(dtype=x.dtype), here.add.to(dtype=x.dtype)
        if factor.dim() == 3 and x.dim() == 2:
            return torch.addcmul(values, x.reshape(factor.shape[0], -1, x.shape[-1]), factor).reshape(x.shape)
        return torch.addcmul(values, x, factor)
    return times_plus


@contextmanager
def apply_masks(model: torch.nn.Module, masks: dict[int, LayerMask], site: str) -> Iterator[None]:
    """Edit the site's activations by ``masks[layer]`` inside the block (a bare tensor: multiply by it)."""
    layout = layout_of(model)
    handles = []
    try:
        for layer, mask in masks.items():
            if not 0 <= layer < layout.n_layers:
                raise FnwebError(f"Layer {layer} is outside this model's 0..{layout.n_layers - 1}.")
            module = layout.module(model, layer, site)
            weight = next(module.parameters(), None)  # on "meta" when offloaded: the hook moves the mask then
            mask = as_layer_mask(mask).to(weight.device if weight is not None and weight.device.type != "meta"
                                          else "cpu")
            handles.append(hook_site(module, site, _editor(mask)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def masked(model: torch.nn.Module, template: Template, spec: Optional[MaskSpec], model_id: Optional[str] = None):
    """Apply a template's mask spec to a model it fits (no spec: no mask)."""
    if spec is None:
        yield
        return
    layout = layout_of(model)
    template.check_fits(layout, model_id)
    with apply_masks(model, layer_masks(template, spec), template.infer_site(layout)):
        yield


def component_ids_from_text(text: str | Sequence[int]) -> list[int]:
    """Parse '0,3 5' or '[0, 3]' (the original's form) into ints."""
    if not isinstance(text, str):
        return [int(x) for x in text]
    cleaned = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    try:
        return [int(x) for x in cleaned]
    except ValueError as exc:
        raise FnwebError(f"Component ids must be whole numbers like '0,3' (got '{text}').") from exc


def layers_from_text(text: Optional[str], n_layers: int) -> Optional[tuple[int, ...]]:
    """Parse the original's ``--ica_mask_layers`` form ('0,2:5,8'; ranges end-exclusive)."""
    if text is None or not str(text).strip():
        return None
    layers: set[int] = set()
    try:
        for part in str(text).replace(" ", "").split(","):
            if ":" in part:
                start, end = part.split(":")
                layers.update(range(int(start or 0), int(end or n_layers)))
            elif part:
                layers.add(int(part))
    except ValueError as exc:
        raise FnwebError(f"Mask layers must look like '0,2:5,8' (got '{text}').") from exc
    bad = sorted(x for x in layers if not 0 <= x < n_layers)
    if bad:
        raise FnwebError(f"Mask layers {bad} are outside this model's 0..{n_layers - 1}.")
    return tuple(sorted(layers))
