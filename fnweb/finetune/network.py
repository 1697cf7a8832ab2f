"""Which neurons a run masks, and whose weights it may change: the run's mask plan.

A ``MaskPlan`` joins a template, a ``MaskSpec`` and the site into the per-layer masks
applied during training and generation, and (for restricted updates) the neurons
whose weights may change in each layer: those the mask leaves as they are in a masked
layer; in a layer without a mask, every neuron for an intervention on the network
(lesion) and none for one on the rest (preserve).
With ``mask_activations`` off, the mask only restricts which weights change and the
model runs unmasked ("train only the network"). A plan is saved as ``mask.json`` beside
``template.json`` (``fnweb.finetune.runs.MaskFile``, the one codec of that file).

The template comes from a file (checked against the model) or is computed from the
training prompts with ``fnweb.build``. This module knows nothing about LoRA or training.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..archs import DEFAULT_SITE, Layout
from ..build import BuildConfig, build_template
from ..errors import FnwebError
from ..interventions import INTERVENTIONS, LayerMask
from ..io import write_atomic
from ..masks import MaskSpec, layer_masks, layers_from_text, masked_share
from ..models import LoadedModel
from ..progress import ProgressFn, StopFlag, no_progress
from ..prompts import Pair, PromptSource
from ..templates import Template
from .config import NO_MASK, RANDOM, TrainConfig


@dataclass
class MaskPlan:
    """The mask of a run (mode ``none``: no template, no masks)."""

    mask_mode: str  # none | an intervention | random (see fnweb.finetune.config.MASK_MODES)
    site: str = DEFAULT_SITE
    template: Optional[Template] = None
    spec: Optional[MaskSpec] = None
    restrict_updates: bool = False
    masks: dict[int, LayerMask] = field(default_factory=dict)  # layer -> (width,) edit
    mask_activations: bool = True  # False: the mask only restricts which weights change

    @property
    def active(self) -> bool:
        return self.spec is not None

    @property
    def hooks(self) -> dict[int, LayerMask]:
        """The masks applied to activations in training and generation ({} when there are none)."""
        return self.masks if self.mask_activations else {}

    def allowed(self, layer: int, width: int) -> Optional[torch.Tensor]:
        """0/1 (width,) of the neurons whose weights may change in ``layer``; None: none may."""
        if layer in self.masks:
            return self.masks[layer].unchanged()
        frees_unmasked = self.spec is not None and INTERVENTIONS[self.spec.mode].acts_on_network
        return torch.ones(width) if frees_unmasked else None

    def share(self, layout: Layout) -> float:
        """Share of the site's channels the masks zero (in activations, or in updates only)."""
        return masked_share(self.masks, layout.n_layers, layout.width(self.site)) if self.masks else 0.0

    def label(self) -> str:
        if self.spec is None:
            return "no mask"
        what = self.spec.label()
        if self.mask_mode == RANDOM:
            what = f"random control of {self.spec.mode} (draw {self.spec.random_seed}), matched to components " + (
                ",".join(map(str, self.spec.components))) + self.spec.scope_note()
        if not self.mask_activations:
            return what + ", updates only (activations unmasked)"
        return what + (", restricted updates" if self.restrict_updates else "")


def plan_for(template: Template, spec: MaskSpec, mask_mode: str, site: str, restrict: bool,
             mask_activations: bool = True) -> MaskPlan:
    return MaskPlan(mask_mode, site, template, spec, restrict, layer_masks(template, spec), mask_activations)


def check_masks_something(template: Template, spec: Optional[MaskSpec]) -> None:
    """Refuse a mask that would change nothing (the components have no neuron in the chosen layers)."""
    if spec is not None and not layer_masks(template, spec):
        where = f" in layers {', '.join(map(str, spec.layers))}" if spec.layers is not None else ""
        raise FnwebError(f"Nothing would be masked: the chosen components ({', '.join(map(str, spec.components))}) "
                         f"have no neurons{where}. Choose other components or mask layers (or mask mode none).")


def spec_for(config: TrainConfig, n_layers: int) -> Optional[MaskSpec]:
    """The mask spec a config asks for (None for mode none)."""
    if config.mask_mode == NO_MASK:
        return None
    layers = layers_from_text(config.mask_layers, n_layers)
    if config.mask_mode == RANDOM:
        return MaskSpec(tuple(config.component_ids), config.control_of, config.random_draw, layers=layers,
                        preserve_scope=config.preserve_scope)
    return MaskSpec(tuple(config.component_ids), config.mask_mode, layers=layers, preserve_scope=config.preserve_scope)


def load_template(config: TrainConfig, layout: Optional[Layout] = None, model_id: Optional[str] = None
                  ) -> Optional[Template]:
    """The given template, checked against the chosen components and, given its layout, the model (None: none given)."""
    if config.template_path is None:
        return None
    template = Template.load(config.template_path)
    template.check_components(config.component_ids)
    if layout is not None:
        template.check_fits(layout, model_id)
    return template


def template_from_pairs(lm: LoadedModel, config: TrainConfig, pairs: Sequence[Pair], progress: ProgressFn = no_progress,
                        stop: Optional[StopFlag] = None) -> Template:
    """A template computed from the training prompts only (the original's on-the-fly ICA)."""
    with tempfile.TemporaryDirectory(prefix="fnweb-train-prompts-") as folder:
        path = Path(folder) / "train.jsonl"
        write_atomic(path, "".join(
            json.dumps({"prompt": p.prompt, "response": p.response}, ensure_ascii=False) + "\n" for p in pairs))
        build = BuildConfig(
            sources=[PromptSource(str(path))], samples_per_dataset=min(config.ica_samples, len(pairs)),
            max_tokens=min(config.max_seq_len, 512), k=config.ica_components, site=config.site,
            threshold="percentile", threshold_value=config.ica_percentile, seed=config.seed,
            prompt_format=config.prompt_format,
        )
        template = build_template(lm, build, progress=progress, stop=stop).template
    template.name = "groupwise_v1"  # the original's name for a template computed during training
    template.meta.datasets = [{"name": config.dataset, "config": config.dataset_config,
                               "split": config.dataset_split, "samples": build.samples_per_dataset,
                               "part": "training split"}]
    template.check_components(config.component_ids)
    return template
