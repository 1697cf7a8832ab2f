"""A component's direct effect on the output: the tokens its neurons push up and down through the unembedding.

Each neuron of a component writes into the residual stream along its down-projection
column (at a site on the down-projection's output side, ``mlp_output``, the channel is a
residual direction itself: ``Site.weight_axis`` says which).
Weighted by how much each channel moves when the component is expressed (its map
weight times the channel's standard deviation), the writes of all its layers add up
to one residual direction; through the final norm's per-channel scale (mean removed
first for a LayerNorm) and the unembedding it becomes a change of every token's logit.

It is a *direct* effect only: it ignores every later layer (attention and MLPs that
read what the component wrote) and treats the final norm's division by the residual's
size as a constant. A token promoted here is what the component's writes would favour
if they went straight to the output, not what a lesion changes. Where the final norm
and unembedding live is ``fnweb.archs.OUTPUT_HEADS``. It knows nothing about ICA,
prompts or cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .archs import Layout, OutputHead, get_path, input_axis, site_of, unwrap
from .errors import FnwebError

TOP_TOKENS = 10


@dataclass
class TokenEffect:
    token: int
    piece: str  # the token's text
    logit: float  # change of its logit per unit of the component's signal (relative: only the order means much)


def _down_columns(model: torch.nn.Module, layout: Layout, layer: int, channels: np.ndarray) -> torch.Tensor:
    """The down-projection's columns for ``channels`` of ``layer``, as (hidden, n) float32."""
    module = get_path(unwrap(model), f"{layout.block_paths[layer]}.{layout.down_proj}")
    base = getattr(module, "base_layer", module)  # a LoRA-wrapped layer: its base weights
    weight = base.weight
    if not weight.dtype.is_floating_point:
        raise FnwebError("The down-projection is quantised: direct effects need the model loaded unquantised.")
    index = torch.as_tensor(channels, dtype=torch.long, device=weight.device)
    picked = weight.detach().index_select(input_axis(base), index).float().cpu()
    return picked if input_axis(base) == 1 else picked.T  # GPT-2's Conv1D keeps (in, out)


def written_direction(model: torch.nn.Module, layout: Layout, site: str,
                      channels: dict[int, np.ndarray], weights: dict[int, np.ndarray]) -> torch.Tensor:
    """The residual direction a component writes: sum over layers of its channels' writes, ``weights`` each.

    ``channels[layer]`` are channel indices at ``site``; ``weights[layer]`` how much each
    moves per unit of the component's signal (activation units).
    """
    direction = torch.zeros(layout.hidden_size)
    writes_through_down = site_of(site).weight_axis == "in"  # a channel is an input of the down-projection
    for layer, chosen in channels.items():
        if len(chosen) == 0:
            continue
        coefficients = torch.as_tensor(np.asarray(weights[layer], dtype=np.float32))
        if writes_through_down:
            direction += _down_columns(model, layout, layer, chosen) @ coefficients
        else:  # channels on the down-projection's output side are residual-stream channels
            direction.index_add_(0, torch.as_tensor(chosen, dtype=torch.long), coefficients)
    return direction


def logit_change(head: OutputHead, directions: torch.Tensor) -> torch.Tensor:
    """Each token's logit change for residual changes ``directions`` (hidden, n) -> (vocab, n).

    ``head`` is ``fnweb.archs.output_head(model)``: read once, it serves every component.
    """
    if directions.shape[0] != head.scale.shape[0]:
        raise FnwebError(f"A direction of {directions.shape[0]} channels does not fit this model's "
                         f"hidden size {head.scale.shape[0]}.")
    if head.centres:
        directions = directions - directions.mean(0, keepdim=True)
    scaled = directions * head.scale[:, None]
    if head.project is not None:
        scaled = head.project @ scaled
    return head.unembed @ scaled


def top_effects(logits: torch.Tensor, decode, n: int = TOP_TOKENS,
                vocab: Optional[int] = None) -> tuple[list[TokenEffect], list[TokenEffect]]:
    """The ``n`` most promoted and most suppressed tokens (``decode(id)`` gives a token's text).

    ``vocab``: the tokenizer's size; unembedding rows past it (padding) are left out.
    """
    logits = logits[: vocab or logits.shape[0]]
    n = min(n, logits.shape[0])
    up = torch.topk(logits, n).indices.tolist()
    down = torch.topk(-logits, n).indices.tolist()
    return ([TokenEffect(i, decode(i), round(float(logits[i]), 4)) for i in up],
            [TokenEffect(i, decode(i), round(float(logits[i]), 4)) for i in down])
