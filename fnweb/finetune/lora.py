"""LoRA adapters on a private copy of the model, optionally restricted to a network's neurons.

``trainable_copy`` never touches the shared cached model: an unquantised model is
deep-copied, a 4-bit (QLoRA) or 8-bit one is loaded afresh through bitsandbytes.
``attach_lora`` wraps it with ``peft`` (targets from the architecture table unless
given). With restricted updates, adapters sit only on the weights of the site's
channels (the down-projection's side the site table names, ``weight_axis``: its
columns for site ``neurons``, plus the rows of the up/gate projections that produce
those inputs; its rows for ``mlp_output``) in layers where some channel is allowed,
and a fixed 0/1 parametrisation multiplies LoRA's A columns or B rows, so the
effective update of a disallowed neuron is exactly zero whatever the gradients or the
weight decay do to the raw entries behind the zeros: every weight outside the allowed
set stays bit-identical, merged or not. Saved adapters hold the
effective (masked) values under PEFT's usual names, so plain PEFT loads them.

It knows nothing about data, the training loop or run folders.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..archs import Layout, get_path, io_features, site_of, unwrap
from ..errors import FnwebError
from ..models import LoadedModel, ModelRequest, load_fresh, pick_device
from .config import TrainConfig
from .network import MaskPlan
from .runs import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE

ADAPTER_FILES = (ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE)


def check_quantization(quantization: str, device: str = "auto") -> None:
    """Refuse 4-bit/8-bit training where bitsandbytes cannot run, before any work starts."""
    if quantization == "none":
        return
    try:
        import bitsandbytes.functional as bnbf

        probe = torch.randn(64, 64, device=pick_device(device) if device != "multi" else "cuda")
        if quantization == "4bit":
            packed, state = bnbf.quantize_4bit(probe, quant_type="nf4")
            bnbf.dequantize_4bit(packed, state)
        else:
            bnbf.int8_vectorwise_quant(probe.half())
    except Exception as exc:  # bitsandbytes fails in many ways on unsupported hardware
        raise FnwebError(
            f"{quantization} training needs bitsandbytes, which cannot run here ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Train without quantization, "
            "or on a machine where bitsandbytes works (usually an NVIDIA GPU)."
        ) from exc


def trainable_copy(lm: LoadedModel, config: TrainConfig, owned: bool = False) -> nn.Module:
    """A private model to train; a shared ``lm.model`` is never changed (``owned``: lm is the caller's own)."""
    if owned and lm.request.quantization == config.quantization:
        model = lm.model
    elif config.quantization == "none" and lm.request.quantization == "none":
        model = copy.deepcopy(lm.model)
    else:
        request = ModelRequest(config.model_id, config.dtype, config.device, config.quantization,
                               config.revision, config.trust_remote_code)
        model = load_fresh(request).model
    if config.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    model.requires_grad_(False)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return model


class KeepOnly(nn.Module):
    """Parametrisation ``weight * keep``: entries where keep is 0 are always exactly 0."""

    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.register_buffer("keep", keep, persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.keep


def restricted_targets(model: nn.Module, layout: Layout, plan: MaskPlan) -> dict[str, tuple[str, torch.Tensor]]:
    """Module path -> ('in' | 'out', 0/1 allowed channels along that side), for restricted updates."""
    inner = unwrap(model)
    width = layout.width(plan.site)
    side = site_of(plan.site).weight_axis  # the down-projection's side that runs over the site's channels
    targets: dict[str, tuple[str, torch.Tensor]] = {}
    for layer, block in enumerate(layout.block_paths):
        allowed = plan.allowed(layer, width)
        if allowed is None or not bool(allowed.any()):
            continue
        down = f"{block}.{layout.down_proj}"
        targets[down] = (side, allowed)
        if side == "in":  # an input channel of the down-projection is also a row of up/gate, which produce it
            targets.update({path: ("out", allowed) for path in _producers(inner, layout, down)})
    return targets


def _producers(inner: nn.Module, layout: Layout, down: str) -> list[str]:
    """Paths of the down-projection's siblings that map the hidden state to its inputs (up, gate)."""
    parent = down.rsplit(".", 1)[0]
    paths = []
    for name, child in get_path(inner, parent).named_children():
        path = f"{parent}.{name}"
        try:
            n_in, n_out = io_features(child)
        except FnwebError:
            continue
        if path != down and n_in == layout.hidden_size and n_out == layout.intermediate_size:
            paths.append(path)
    return paths


def _restrict(peft_model: nn.Module, targets: dict[str, tuple[str, torch.Tensor]]) -> None:
    inner = peft_model.get_base_model()
    for path, (side, allowed) in targets.items():
        if bool(allowed.all()):
            continue  # every neuron allowed: nothing to pin
        module = get_path(inner, path)
        factor = module.lora_A["default"] if side == "in" else module.lora_B["default"]
        weight = factor.weight  # A: (r, in), B: (out, r)
        keep = allowed.to(weight.device, weight.dtype)
        keep = keep.view(1, -1) if side == "in" else keep.view(-1, 1)
        parametrize.register_parametrization(factor, "weight", KeepOnly(keep))


def attach_lora(model: nn.Module, config: TrainConfig, layout: Layout, plan: MaskPlan):
    """Wrap ``model`` with a LoRA adapter (restricted by the plan when it asks)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)  # LoRA's A is random: the same seed gives the same run
    if plan.restrict_updates:
        targets = restricted_targets(model, layout, plan)
        if not targets:
            raise FnwebError(
                "Restricted updates leave no neuron whose weights may change: the mask keeps none. "
                "Choose other components or layers, or turn restricted updates off."
            )
        names = sorted(targets)
    else:
        targets, names = {}, list(config.lora_targets or layout.lora_targets)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=names, bias="none", task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        raise FnwebError(
            f"Cannot place LoRA on {', '.join(names)}: {str(exc).splitlines()[0]} "
            f"This model's default targets are: {', '.join(layout.lora_targets)}."
        ) from exc
    _restrict(peft_model, targets)
    return peft_model


def trainable_parameters(peft_model: nn.Module) -> list[nn.Parameter]:
    return [p for p in peft_model.parameters() if p.requires_grad]


def adapter_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with parametrised LoRA factors replaced by their effective values."""
    state = {k: v for k, v in peft_model.state_dict().items() if ".parametrizations." not in k}
    for name, module in peft_model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            state[f"{name}.weight"] = module.weight.detach()
    return state


def save_adapter(peft_model: nn.Module, folder: Path, base_model: str) -> None:
    """Write adapter_model.safetensors and adapter_config.json into ``folder``, each replaced atomically."""
    folder = Path(folder)
    peft_model.peft_config["default"].base_model_name_or_path = base_model
    staging = Path(tempfile.mkdtemp(prefix=".adapter-", dir=folder))
    try:
        peft_model.save_pretrained(str(staging), state_dict=adapter_state(peft_model), safe_serialization=True)
        for name in ADAPTER_FILES:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_adapter(model: nn.Module, folder: Path):
    """A PEFT model: ``model`` (a private copy) with the run's adapter, for inference."""
    from peft import PeftModel

    missing = [n for n in ADAPTER_FILES if not (Path(folder) / n).exists()]
    if missing:
        raise FnwebError(
            f"{folder} has no saved adapter ({', '.join(missing)} missing): the run never finished a step."
        )
    peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    peft_model.eval()
    return peft_model


def describe_trainable(peft_model: nn.Module) -> dict:
    """Parameter counts; entries pinned to zero by a restriction do not count as trainable."""
    trainable = sum(p.numel() for p in trainable_parameters(peft_model))
    for module in peft_model.modules():
        if parametrize.is_parametrized(module, "weight") and module.parametrizations.weight.original.requires_grad:
            original = module.parametrizations.weight.original
            keep = module.parametrizations.weight[0].keep
            trainable -= original.numel() - int(keep.expand_as(original).count_nonzero())
    total = sum(p.numel() for p in peft_model.parameters())
    return {"trainable_parameters": int(trainable), "parameters": int(total)}
