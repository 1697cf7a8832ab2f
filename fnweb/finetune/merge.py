"""A run as one plain model: the adapter folded into its base weights, the run's mask baked in.

A masked run was trained, and is meant to be used, with some MLP channels multiplied
by zero. Zeroing the down-projection's input channel c (site ``neurons``) is the same
as zeroing column c of its weight; zeroing the MLP's output channel c (site
``mlp_output``, which every family in the architecture table computes with the
down-projection last) is the same as zeroing row c of its weight and its bias entry.
So the merged model behaves as the run does under ``run.masked()``, loads with plain
``transformers`` and needs no hooks.

Runs trained in 4 or 8 bits are refused: their adapter learnt against quantized
weights, and folding it into full-precision ones gives another model.

It knows nothing about the Hub or the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..archs import input_axis, layout_of
from ..errors import FnwebError
from ..models import LoadedModel
from .config import TrainConfig
from .runs import FinetunedRun, load_run, read_json

MERGED_FOLDER = "merged"  # where a run repo keeps its merged model


def check_mergeable(folder: Path) -> None:
    """Refuse, with the reason, a run whose adapter cannot be folded into full-precision weights."""
    config = TrainConfig.from_dict(read_json(Path(folder) / "train_config.json") or {})
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


def bake_masks(model: nn.Module, masks: dict[int, torch.Tensor], site: str) -> None:
    """Zero, in the down-projection's weights, the channels that ``masks`` zero in activations."""
    layout = layout_of(model)
    for layer, keep in masks.items():
        projection = layout.module(model, layer, "neurons")  # the down-projection, for either site
        weight = projection.weight
        axis = input_axis(projection) if site == "neurons" else 1 - input_axis(projection)
        if weight.shape[axis] != keep.numel():
            raise FnwebError(f"Layer {layer}'s mask has {keep.numel()} channels; the down-projection has "
                             f"{weight.shape[axis]} on that side.")
        dropped = (keep == 0).nonzero().squeeze(1).to(weight.device)
        with torch.no_grad():
            weight.index_fill_(axis, dropped, 0.0)
            if site == "mlp_output" and projection.bias is not None:
                projection.bias.index_fill_(0, dropped, 0.0)


def save_merged(run: FinetunedRun, folder: str | Path) -> Path:
    """Write the merged model (safetensors) and its tokenizer to ``folder``."""
    folder = Path(folder)
    run.model.save_pretrained(folder)
    run.tokenizer.save_pretrained(folder)
    return folder
