"""Neuron masks: an intervention on a template's networks, or on a matched random control, applied with hooks.

A ``MaskSpec`` is a small plain record (components, intervention, optional random
seed, optional layers, how a random control is drawn, what happens to massive-activation
channels, and the intervention's alpha when it takes one). ``to_dict``/``from_dict`` are its
JSON form (every field, by name). ``layer_masks`` turns it into one ``LayerMask`` per layer (the
activations become ``x * keep + add``; see ``fnweb.interventions`` for the kinds);
``apply_masks`` applies them inside a ``with`` block through ``fnweb.archs.hook_site``,
at the site the template was made at. Masks broadcast over batch and position, so every
step of ``generate`` with a KV cache is masked. Hooks are found by module path at
entry, so a module PEFT has wrapped is hooked as a whole and the LoRA path sees the
mask too. They are removed in ``finally``. Multiplying by a 0/1 mask twice equals once,
so nesting the same lesion or preserve mask is harmless.

- **random control** (``random_seed`` set): the selected set is replaced by as many
  neurons per layer, drawn (seeded) from outside it by the spec's ``control`` (see
  ``fnweb.controls``: per layer, or per layer and magnitude); then the intervention as asked.
- **massive-activation channels** (``massive``, see ``fnweb.controls.MASSIVE``): never drawn
  for a control, or also dropped from the network's channels ("without its outliers").
- **preserve scope** (``preserve_scope``, a name in ``PRESERVE_SCOPES``): whether an
  intervention on the rest of a layer (preserve) also edits a layer in which the network
  has no channel: ``all_layers`` (the paper's code, the default) zeroes such a layer
  whole; ``network_layers`` (the original package) leaves it untouched.

Whatever needs the template's capture statistics (a mean ablation, the magnitude control,
a massive policy) says so, with how to get them, when the template has none.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from .archs import hook_site, layout_of
from .channel_stats import require
from .checks import whole_number
from .controls import CONTROLS, DEFAULT_CONTROL, DEFAULT_MASSIVE, MASSIVE, Drawn, check_choice, draw_control
from .errors import FnwebError
from .interventions import DEFAULT_INTERVENTION, INTERVENTIONS, LayerMask, as_layer_mask, check_alpha
from .templates import MAX_LAYERS, Template


@dataclass(frozen=True)
class PreserveScope:
    """Which layers an intervention on the rest of a layer (preserve) edits."""

    name: str
    edits_layers_without_network: bool  # True: a layer where the network has no channel is edited too
    help: str  # one line for people


PRESERVE_SCOPES: dict[str, PreserveScope] = {
    "all_layers": PreserveScope("all_layers", True, "every channel outside the network zeroed in every layer, "
                                "a layer without network channels whole (the paper's code)"),
    "network_layers": PreserveScope("network_layers", False, "only layers that hold network channels edited; "
                                    "the others left untouched (the original package)"),
}
DEFAULT_PRESERVE_SCOPE = "all_layers"


def preserve_scopes_help() -> str:
    """Every preserve scope and what it does, for a form or a CLI's help."""
    return " · ".join(f"{s.name}: {s.help}" for s in PRESERVE_SCOPES.values())


def check_preserve_scope(name: str) -> str:
    if name not in PRESERVE_SCOPES:
        raise FnwebError(f"Unknown preserve scope '{name}'; choose {' or '.join(PRESERVE_SCOPES)}.")
    return name


@dataclass(frozen=True)
class MaskSpec:
    """Which neurons to mask and how. Plain data: safe to store and compare."""

    components: tuple[int, ...]
    mode: str = DEFAULT_INTERVENTION  # a name in fnweb.interventions.INTERVENTIONS
    random_seed: Optional[int] = None  # set: a matched random control instead of the components
    layers: Optional[tuple[int, ...]] = None  # None: every layer the template covers
    control: str = DEFAULT_CONTROL  # how a random control is drawn: a name in fnweb.controls.CONTROLS
    massive: str = DEFAULT_MASSIVE  # massive-activation channels: a name in fnweb.controls.MASSIVE
    alpha: Optional[float] = None  # the factor of an intervention that takes one (scale); None for the others
    preserve_scope: str = DEFAULT_PRESERVE_SCOPE  # a name in PRESERVE_SCOPES (matters for preserve only)

    def __post_init__(self):
        if self.mode not in INTERVENTIONS:
            raise FnwebError(f"Unknown mask mode '{self.mode}'; choose {' or '.join(INTERVENTIONS)}.")
        if not self.components:
            raise FnwebError("Choose at least one component to mask.")
        check_choice(self.control, CONTROLS, "control")
        check_choice(self.massive, MASSIVE, "massive-channel policy")
        # Fields that mean nothing to this mask take their defaults, so equal masks compare (and hash) equal:
        # an alpha to an intervention without one, how draws are made to a mask that draws nothing.
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen)
        set_("alpha", check_alpha(self.alpha) if INTERVENTIONS[self.mode].takes_alpha else None)
        check_preserve_scope(self.preserve_scope)
        if self.random_seed is None:
            set_("control", DEFAULT_CONTROL)
            set_("massive", self.massive if MASSIVE[self.massive].from_network else DEFAULT_MASSIVE)

    def label(self) -> str:
        what = "random control" if self.random_seed is not None else "components " + ",".join(map(str, self.components))
        how = f"scale ×{self.alpha:g}" if self.alpha is not None else self.mode
        if self.random_seed is not None and self.control != DEFAULT_CONTROL:
            what += f" ({CONTROLS[self.control].title})"
        spared = ", massive channels spared" if MASSIVE[self.massive].from_network else ""
        return f"{how} {what}{spared}{self.scope_note()}"

    def scope_note(self) -> str:
        """' (network_layers)' where the scope is not the default and matters (preserve), else ''."""
        scoped = self.preserve_scope != DEFAULT_PRESERVE_SCOPE and not INTERVENTIONS[self.mode].acts_on_network
        return f" ({self.preserve_scope})" if scoped else ""

    def to_dict(self) -> dict:
        """Plain JSON data: every field by name (tuples as lists)."""
        return {f.name: list(value) if isinstance(value, tuple) else value
                for f in fields(self) for value in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, data: dict) -> "MaskSpec":
        """From ``to_dict``'s form (fields it lacks take their defaults; unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        try:
            values["components"] = tuple(int(c) for c in values["components"])
            if values.get("random_seed") is not None:
                values["random_seed"] = int(values["random_seed"])
            if values.get("layers") is not None:
                values["layers"] = tuple(int(x) for x in values["layers"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FnwebError(f"A mask needs its components as a list of whole numbers ({exc}).") from exc
        return cls(**values)


def random_control(selected: dict[int, np.ndarray], width: int, seed: int) -> dict[int, np.ndarray]:
    """As many neurons per layer as ``selected``, drawn from outside it (seeded)."""
    return draw_control(selected, width, seed).channels


def _drawn(template: Template, spec: MaskSpec) -> Drawn:
    """The neurons a spec acts on, per layer (the components' union, or its random twin), and the draw's spill."""
    selected = template.neurons(spec.components, spec.layers)
    policy, control = MASSIVE[spec.massive], CONTROLS[spec.control]
    massive = {}
    if policy.from_draws or policy.from_network:
        massive = require(template.stats, f"Leaving massive-activation channels {spec.massive}").massive_by_layer()
    if policy.from_network:
        selected = {layer: np.setdiff1d(ch, massive.get(layer, ()), assume_unique=True) for layer, ch in
                    selected.items()}
    if spec.random_seed is None:
        return Drawn(selected)
    stats = require(template.stats, "The magnitude-matched control") if control.needs_stats else None
    scale = stats.scale() if stats is not None else None
    return draw_control(selected, template.width, spec.random_seed, spec.control,
                        massive if policy.from_draws else None, lambda layer: scale[stats.row(layer)])


def chosen_neurons(template: Template, spec: MaskSpec) -> dict[int, np.ndarray]:
    """The neurons a spec acts on, per layer (the components' union, or its random twin)."""
    return _drawn(template, spec).channels


def spilled(template: Template, spec: MaskSpec) -> int:
    """How many of a magnitude-matched control's channels came from outside their own stratum (0: all matched)."""
    return _drawn(template, spec).spilled


def layer_masks(template: Template, spec: MaskSpec) -> dict[int, LayerMask]:
    """One ``LayerMask`` (width,) per layer the spec's intervention touches."""
    chosen = chosen_neurons(template, spec)
    intervention = INTERVENTIONS[spec.mode]
    fill = None
    if intervention.needs_stats:
        stats = require(template.stats, f"{intervention.title} (the {intervention.name} intervention)")
        fill = getattr(stats, intervention.fill)
    edits_empty = PRESERVE_SCOPES[spec.preserve_scope].edits_layers_without_network
    layers = spec.layers if spec.layers is not None else template.layers
    masks = {}
    for layer in sorted(set(layers) & set(template.layers)):
        neurons = torch.as_tensor(chosen.get(layer, np.empty(0, dtype=np.int64)), dtype=torch.long)
        if intervention.touches(neurons, spec.alpha) and (len(neurons) > 0 or edits_empty):
            values = None if fill is None else torch.from_numpy(fill[template.stats.row(layer)])
            masks[layer] = intervention.edit(neurons, template.width, spec.alpha, values)
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


def component_ids_from_text(text: str | Sequence) -> list[int]:
    """Parse '0,3 5', '[0, 3]' (the original's form) or a list of such parts (``nargs``) into ints."""
    if not isinstance(text, str):
        parts = list(text)
        if all(isinstance(x, str) for x in parts):  # argparse's nargs: ['0', '1'] or ['[0,', '1]']
            return component_ids_from_text(" ".join(parts))
        return [whole_number(x, "A component id") for x in parts]
    cleaned = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    try:
        return [int(x) for x in cleaned]
    except ValueError as exc:
        raise FnwebError(f"Component ids must be whole numbers like '0,3' or '0 3' (got '{text}').") from exc


def _layer_number(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise FnwebError(f"Mask layers must look like '0,2:5,8' (ranges end-exclusive; got '{spec}').") from exc


def _layer_part(part: str, n_layers: Optional[int], spec: str) -> range:
    """One comma-separated part: 'N' or 'A:B' (A or B may be left out), as layers."""
    if part.count(":") > 1:
        raise FnwebError(f"Mask layers: '{part}' is not a layer or a range A:B (got '{spec}').")
    if ":" not in part:
        layer = _layer_number(part, spec)
        return range(layer, layer + 1)
    start_text, end_text = part.split(":")
    start = _layer_number(start_text, spec) if start_text else 0
    if not end_text and n_layers is None:  # 'A:' reaches the last layer: known once the model is
        return range(start, start + 1)
    end = _layer_number(end_text, spec) if end_text else n_layers
    if not end_text and start >= end:
        raise FnwebError(f"Mask layers: the range '{part}' starts past this model's last layer, {n_layers - 1} "
                         f"(got '{spec}').")
    if start >= end:
        raise FnwebError(f"Mask layers: the range '{part}' is empty (ranges are end-exclusive: "
                         f"'{start}:{start + 1}' is layer {start} alone; got '{spec}').")
    limit = n_layers if n_layers is not None else MAX_LAYERS  # checked before the range is spelled out
    if end > limit:
        last = f"this model's last layer, {n_layers - 1}" if n_layers is not None else f"layer {MAX_LAYERS - 1}"
        raise FnwebError(f"Mask layers: the range '{part}' ends past {last} (ranges are end-exclusive; "
                         f"got '{spec}').")
    return range(start, end)


def layers_from_text(text: Optional[str], n_layers: Optional[int]) -> Optional[tuple[int, ...]]:
    """Parse the original's ``--ica_mask_layers`` form ('0,2:5,8'; ranges end-exclusive).

    Blank: None (every layer). Text that selects no layer, an empty or reversed range and a
    layer outside ``0..n_layers - 1`` are errors, so a mask never covers nothing unsaid.
    ``n_layers`` None checks only the form (before the model is loaded).
    """
    if text is None or not str(text).strip():
        return None
    spec = str(text).strip()
    layers: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if part:
            layers.update(_layer_part(part, n_layers, spec))
    if not layers:
        raise FnwebError(f"Mask layers '{spec}' select no layer: give layers like '0,2:5,8', or leave it empty "
                         "for every layer.")
    bad = sorted(x for x in layers if x < 0 or (n_layers is not None and x >= n_layers))
    if bad:
        where = f"this model's 0..{n_layers - 1}" if n_layers is not None else "the layers (they count from 0)"
        which = f"Mask layer {bad[0]} is" if len(bad) == 1 else f"Mask layers {_span(bad)} are"
        raise FnwebError(f"{which} outside {where} (got '{spec}').")
    return tuple(sorted(layers))


def _span(numbers: list[int]) -> str:
    """A short form of a sorted list: '12..19' for a run, else the list."""
    if len(numbers) > 3 and numbers[-1] - numbers[0] == len(numbers) - 1:
        return f"{numbers[0]}..{numbers[-1]}"
    return ", ".join(map(str, numbers))
