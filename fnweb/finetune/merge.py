"""A run as one plain model: the adapter folded into its base weights, the run's mask baked in.

A masked run was trained, and is meant to be used, with some MLP channels multiplied
by a factor (zero, for a lesion or a preserve). Every site's channels run through the
down-projection along one axis of its weight (the site table's ``weight_axis``): the
input channel c of the down-projection (site ``neurons``) is column c of its weight;
the MLP's output channel c (site ``mlp_output``, which every family in the architecture
table computes with the down-projection last) is row c of its weight and its bias entry
(``has_bias``). Scaling those is the same as scaling the channel, so the merged model
behaves as the run does under ``run.masked()``, loads with plain ``transformers`` and
needs no hooks. A mask that puts values in (``add``) cannot be folded into the weights
and is refused.

Runs trained in 4 or 8 bits are refused: their adapter learnt against quantized
weights, and folding it into full-precision ones gives another model.

It knows nothing about the Hub or the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..archs import channel_axis, layout_of, site_of
from ..errors import FnwebError
from ..interventions import LayerMask, as_layer_mask
from ..models import LoadedModel
from .config import TrainConfig
from .loading import FinetunedRun, load_run
from .runs import TRAIN_CONFIG_FILE, read_json

MERGED_FOLDER = "merged"  # where a run repo keeps its merged model


def check_mergeable(folder: Path) -> None:
    """Refuse, with the reason, a run whose adapter cannot be folded into full-precision weights."""
    config = TrainConfig.from_dict(read_json(Path(folder) / TRAIN_CONFIG_FILE) or {})
    if config.quantization != "none":
        raise FnwebError(
            f"This run was trained on a {config.quantization} base model (QLoRA): folding its adapter into "
            "full-precision weights gives a different model. Share the adapter alone (it loads on the "
            "quantized base), or train without quantization to get a merged model."
        )


def merged_run(folder: str | Path, lm: Optional[LoadedModel] = None,
               trust_remote_code: bool = False) -> FinetunedRun:
    """The run's adapter merged into a private copy of its base, with its activation mask baked in.

    The base model loads with the caller's ``trust_remote_code`` (never the run's own setting).
    """
    check_mergeable(Path(folder))
    run = load_run(folder, lm, merge=True, trust_remote_code=trust_remote_code)
    bake_masks(run.model, run.plan.hooks, run.plan.site)
    return run


def bake_masks(model: nn.Module, masks: dict[int, LayerMask], site: str) -> None:
    """Scale, in the down-projection's weights, the channels that ``masks`` scale in activations."""
    layout = layout_of(model)
    for layer, mask in masks.items():
        mask = as_layer_mask(mask)
        if mask.add is not None:
            raise FnwebError(f"Layer {layer}'s mask puts values in place of channels: that cannot be folded into "
                             "the weights. Share the adapter with its mask instead of a merged model.")
        projection = layout.down_projection(model, layer)
        axis = channel_axis(projection, site)
        if projection.weight.shape[axis] != mask.keep.numel():
            raise FnwebError(f"Layer {layer}'s mask has {mask.keep.numel()} channels; the down-projection has "
                             f"{projection.weight.shape[axis]} on that side.")
        bias = projection.bias if site_of(site).has_bias else None
        with torch.no_grad():
            _scale_channels(projection.weight, axis, mask.keep, bias)


def _scale_channels(weight: torch.Tensor, axis: int, keep: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    """Multiply the weight's slices along ``axis`` (and the bias's entries) by ``keep``: zeros are filled exactly."""
    keep = keep.to(weight.device)
    dropped = (keep == 0).nonzero().squeeze(1)
    weight.index_fill_(axis, dropped, 0.0)
    if bias is not None:
        bias.index_fill_(0, dropped, 0.0)
    factor = torch.where(keep == 0, torch.ones_like(keep), keep)  # the zeros are done
    if bool((factor != 1).any()):  # factors other than 0 and 1: a scaling intervention
        shape = [1, 1]
        shape[axis] = -1
        weight.mul_(factor.to(weight.dtype).view(shape))
        if bias is not None:
            bias.mul_(factor.to(bias.dtype))


def save_merged(run: FinetunedRun, folder: str | Path) -> Path:
    """Write the merged model (safetensors) and its tokenizer to ``folder``."""
    folder = Path(folder)
    run.model.save_pretrained(folder)
    run.tokenizer.save_pretrained(folder)
    return folder
