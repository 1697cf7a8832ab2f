"""Where each architecture keeps its MLP channels, and where fnweb reads them: the tables of
architectures and of capture sites.

``SITES`` has one ``Site`` record per capture site: which module of a decoder block it
hooks (the **down-projection**, whose input is the MLP's intermediate neurons: site
``neurons``; or the module whose output is the **MLP output**: site ``mlp_output``),
whether it reads that module's input or output, how wide it is, which axis of the
down-projection's weight runs over its channels, and what its channels are called.
``hook_site`` is the one way to hook a site; capture, masks, restricted LoRA updates and
merging all go through the records, never through the site's name.

``ARCHITECTURES`` says, per model family, where the decoder blocks, the down-projection
and the MLP sit. Modules are looked up by path each time, so that a module PEFT has since
wrapped (LoRA) is the one found and a hook on it reaches both the base and the LoRA path.

It knows nothing about prompts, templates or masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from .errors import FnwebError


@dataclass(frozen=True)
class Site:
    """One place in every decoder block where fnweb reads and edits MLP channels."""

    name: str
    module: str  # the ``Layout`` attribute with the path of the hooked module: "down_proj" | "mlp"
    reads_input: bool  # True: the module's input (a pre-hook); False: its output (a forward hook)
    width: str  # the ``Layout`` attribute with the channels per layer: "intermediate_size" | "hidden_size"
    weight_axis: str  # the down-projection's weight side that runs over the channels: "in" (columns) | "out" (rows)
    has_bias: bool  # a channel owns an entry of the down-projection's bias (zeroed with it when merging)
    unit: str  # what one channel is called: "neuron" | "channel"
    units: str  # what its channels are called in sentences
    help: str
    narrower: Optional[str] = None  # a site with fewer channels per layer, offered when a build does not fit


SITES: dict[str, Site] = {
    "neurons": Site(
        name="neurons", module="down_proj", reads_input=True, width="intermediate_size", weight_axis="in",
        has_bias=False, unit="neuron", units="neurons",
        help="the down-projection's input: the MLP's intermediate neurons (intermediate width per layer)",
        narrower="mlp_output",
    ),
    "mlp_output": Site(
        name="mlp_output", module="mlp", reads_input=False, width="hidden_size", weight_axis="out",
        has_bias=True, unit="channel", units="MLP-output channels",
        help="the MLP's output (hidden width per layer), as in the paper",
    ),
}
DEFAULT_SITE = "neurons"


def site_of(name: str) -> Site:
    """The record of a site, or an error naming the sites there are."""
    if name not in SITES:
        raise FnwebError(f"Unknown site '{name}'; choose one of: {', '.join(SITES)}.")
    return SITES[name]


def check_site(site: str) -> None:
    site_of(site)


def sites_help() -> str:
    """Every site and what it reads, for a form or a CLI's help."""
    return "; ".join(f"{s.name}: {s.help}" for s in SITES.values())


def hook_site(module: nn.Module, site: str, edit: Callable[[torch.Tensor], Optional[torch.Tensor]]):
    """Call ``edit`` on the site's activations at ``module``; a tensor it returns replaces them.

    Returns the hook handle (``handle.remove()`` takes it off).
    """
    if site_of(site).reads_input:
        def pre(_module, args):
            new = edit(args[0])
            return None if new is None else (new,) + tuple(args[1:])
        return module.register_forward_pre_hook(pre)

    def post(_module, _args, out):
        if isinstance(out, tuple):
            new = edit(out[0])
            return None if new is None else (new,) + out[1:]
        return edit(out)  # None leaves the output as it is
    return module.register_forward_hook(post)


@dataclass(frozen=True)
class ArchSpec:
    """How one model family is laid out (paths are dotted attribute names)."""

    blocks: tuple[str, ...]  # candidate paths from the model to its ModuleList of decoder blocks
    down_proj: str  # path from a block to the down-projection
    mlp: str  # path from a block to the module whose output is the MLP output
    lora_targets: tuple[str, ...]  # default LoRA target module names


_LLAMA_LIKE = ArchSpec(
    blocks=("model.layers", "model.language_model.layers", "language_model.model.layers"),
    down_proj="mlp.down_proj",
    mlp="mlp",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
)

# model_type -> layout. Llama-family models (SmolLM2 is a Llama) share one entry.
# Each entry is checked on a tiny model in tests/test_build.py.
ARCHITECTURES: dict[str, ArchSpec] = {
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text",
            "olmo", "olmo2", "granite", "smollm3", "cohere",
        )
    },
    "starcoder2": ArchSpec(
        blocks=("model.layers",), down_proj="mlp.c_proj", mlp="mlp",
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"),
    ),
    "gpt2": ArchSpec(
        blocks=("transformer.h",), down_proj="mlp.c_proj", mlp="mlp",
        lora_targets=("c_attn", "c_proj", "c_fc"),
    ),
    "opt": ArchSpec(
        blocks=("model.decoder.layers",), down_proj="fc2", mlp="fc2",
        lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    ),
    "gpt_neox": ArchSpec(
        blocks=("gpt_neox.layers",), down_proj="mlp.dense_4h_to_h", mlp="mlp",
        lora_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    ),
    "phi": ArchSpec(
        blocks=("model.layers",), down_proj="mlp.fc2", mlp="mlp",
        lora_targets=("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    ),
    "phi3": ArchSpec(
        blocks=("model.layers",), down_proj="mlp.down_proj", mlp="mlp",
        lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    ),
}

# Config fields that count the experts of a mixture-of-experts MLP (Mixtral, Qwen-MoE, OLMoE,
# DeepSeek...). Such a block routes each token to a few experts whose weights transformers 5
# stores fused (one (experts, hidden, intermediate) tensor, no Linear per expert), so it has no
# single down-projection whose input is "the neurons": fnweb refuses these models rather than
# fall back on some other linear layer (a shared expert, say) and call it the MLP.
EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (modules stay the wrapped ones)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def get_path(root: nn.Module, path: str) -> Optional[nn.Module]:
    """The submodule at a dotted path, or None when any step is missing."""
    node = root
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def io_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear, a GPT-2 Conv1D or a PEFT/bnb wrapper."""
    base = getattr(module, "base_layer", None)
    if isinstance(base, nn.Module):
        return io_features(base)
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    if input_axis(module) == 0:  # GPT-2's Conv1D: weight is (in, out)
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    raise FnwebError(f"{type(module).__name__} is not a linear layer fnweb can read.")


def input_axis(module: nn.Module) -> int:
    """The axis of ``module.weight`` that runs over input features: 1 for nn.Linear, 0 for GPT-2's Conv1D."""
    return 0 if type(module).__name__ == "Conv1D" else 1


def channel_axis(projection: nn.Module, site: str) -> int:
    """The axis of the down-projection's weight that runs over ``site``'s channels."""
    axis = input_axis(projection)
    return axis if site_of(site).weight_axis == "in" else 1 - axis


def _text_config(model: nn.Module):
    config = model.config
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


@dataclass
class Layout:
    """A model's MLP sites, resolved from the table (or the fallback rule)."""

    model_type: str
    block_paths: list[str]  # full path of each decoder block, from the unwrapped model
    down_proj: str  # path from a block to its down-projection
    mlp: str  # path from a block to the MLP-output module
    hidden_size: int
    intermediate_size: int
    lora_targets: tuple[str, ...]

    @property
    def n_layers(self) -> int:
        return len(self.block_paths)

    def width(self, site: str) -> int:
        return int(getattr(self, site_of(site).width))

    def module(self, model: nn.Module, layer: int, site: str) -> nn.Module:
        """The module to hook for ``site`` in ``layer`` (``hook_site`` reads its input or output)."""
        return self._block_module(model, layer, getattr(self, site_of(site).module))

    def down_projection(self, model: nn.Module, layer: int) -> nn.Module:
        """The down-projection of ``layer``: the weights a channel of every site runs through."""
        return self._block_module(model, layer, self.down_proj)

    def _block_module(self, model: nn.Module, layer: int, rel: str) -> nn.Module:
        found = get_path(unwrap(model), f"{self.block_paths[layer]}.{rel}")
        if found is None:
            raise FnwebError(f"Layer {layer} has no module at '{rel}'.")
        return found


def _find_blocks(model: nn.Module, spec: Optional[ArchSpec], n_layers: Optional[int]) -> Optional[str]:
    if spec is not None:
        for path in spec.blocks:
            if isinstance(get_path(model, path), nn.ModuleList):
                return path
    # Fallback: the ModuleList with as many entries as the config has layers.
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n_layers is None or len(module) == n_layers):
            return name
    return None


def _fallback_down_proj(block: nn.Module, hidden: int) -> Optional[str]:
    """The original's rule: the linear layer with out == hidden and in > hidden."""
    for name, module in block.named_modules():
        try:
            n_in, n_out = io_features(module)
        except FnwebError:
            continue
        if n_out == hidden and n_in > hidden and "base_layer" not in name:
            return name
    return None


def _refuse_mixture_of_experts(config, model_type: str) -> None:
    experts = max((getattr(config, field, None) or 0 for field in EXPERT_COUNT_FIELDS), default=0)
    if experts > 1:
        raise FnwebError(
            f"'{model_type}' is a mixture of experts ({experts} experts per block, chosen per token by a router): "
            "fnweb captures and masks the neurons of one dense MLP per block and cannot do so for routed experts. "
            "Choose a dense model (Llama, Qwen, Mistral, Gemma, Phi, GPT-2 and the others in fnweb.archs)."
        )


def layout_of(model: nn.Module) -> Layout:
    """Resolve the MLP sites of ``model`` (a transformers causal LM, PEFT-wrapped or not)."""
    inner = unwrap(model)
    config = _text_config(inner)
    model_type = getattr(config, "model_type", type(inner).__name__)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    _refuse_mixture_of_experts(config, model_type)
    spec = ARCHITECTURES.get(model_type)
    blocks_path = _find_blocks(inner, spec, n_layers)
    if blocks_path is None:
        raise FnwebError(
            f"Cannot find the decoder blocks of '{model_type}': looked for "
            f"{', '.join(spec.blocks) if spec else 'a ModuleList'} with {n_layers} entries."
        )
    blocks = get_path(inner, blocks_path)
    if spec is not None and get_path(blocks[0], spec.down_proj) is not None:
        down, mlp, targets = spec.down_proj, spec.mlp, spec.lora_targets
    else:
        down = _fallback_down_proj(blocks[0], int(hidden))
        if down is None:
            raise FnwebError(
                f"Cannot place the MLP of '{model_type}': looked for "
                f"{'the table entry ' + spec.down_proj + ' and ' if spec else ''}"
                f"a linear layer with out_features == {hidden} and in_features > {hidden} in each block."
            )
        mlp, targets = down, (down.split(".")[-1],)
    intermediate, _ = io_features(get_path(blocks[0], down))
    return Layout(
        model_type=model_type,
        block_paths=[f"{blocks_path}.{i}" for i in range(len(blocks))],
        down_proj=down,
        mlp=mlp,
        hidden_size=int(hidden),
        intermediate_size=int(intermediate),
        lora_targets=tuple(targets),
    )


# ---- the output head: where a component's direct effect on the logits is read (``fnweb.direct_effect``) ----

NORM_KINDS = ("rms", "rms_plus_one", "layer")


@dataclass(frozen=True)
class OutputSpec:
    """Where the final norm and the unembedding live, and how the norm scales (paths from the unwrapped model)."""

    final_norm: str
    unembed: str = "lm_head"
    norm: str = "rms"  # rms: x * w | rms_plus_one: x * (1 + w), Gemma's | layer: (x - mean(x)) * w + b
    project_out: Optional[str] = None  # a projection between the norm and the unembedding (OPT-350m's), if present


_RMS_HEAD = OutputSpec("model.norm")

# model_type -> output head. A model type missing here has no direct effect (its cards say so).
OUTPUT_HEADS: dict[str, OutputSpec] = {
    **{name: _RMS_HEAD for name in ("llama", "qwen2", "qwen3", "mistral", "mixtral", "olmo2", "granite",
                                    "smollm3", "starcoder2_llama", "phi3")},
    **{name: OutputSpec("model.norm", norm="rms_plus_one") for name in ("gemma", "gemma2", "gemma3_text")},
    "cohere": OutputSpec("model.norm", norm="layer"),
    "olmo": OutputSpec("model.norm", norm="layer"),  # a LayerNorm without weights: scale 1
    "gpt2": OutputSpec("transformer.ln_f", norm="layer"),
    "opt": OutputSpec("model.decoder.final_layer_norm", norm="layer", project_out="model.decoder.project_out"),
    "gpt_neox": OutputSpec("gpt_neox.final_layer_norm", unembed="embed_out", norm="layer"),
    "phi": OutputSpec("model.final_layernorm", norm="layer"),
}


@dataclass
class OutputHead:
    """The final norm's per-channel scale and the unembedding, as plain float32 tensors (read-only copies)."""

    scale: object  # torch.Tensor (hidden,)
    centres: bool  # the norm subtracts the mean over channels (LayerNorm)
    unembed: object  # torch.Tensor (vocab, hidden)
    project: Optional[object] = None  # torch.Tensor (out, hidden) applied after the norm, or None


def _weight(module: nn.Module, what: str):
    weight = getattr(getattr(module, "base_layer", module), "weight", None)
    if weight is not None and not weight.dtype.is_floating_point:
        raise FnwebError(f"The {what} is quantised: its direct effect needs the model loaded unquantised.")
    return weight


def output_head(model: nn.Module) -> OutputHead:
    """The output head of ``model`` from the table, or a clear error for an architecture it lacks."""
    import torch

    inner = unwrap(model)
    model_type = getattr(_text_config(inner), "model_type", type(inner).__name__)
    spec = OUTPUT_HEADS.get(model_type)
    norm = get_path(inner, spec.final_norm) if spec else None
    unembed = (get_path(inner, spec.unembed) if spec else None) or inner.get_output_embeddings()
    if spec is None or norm is None or unembed is None:
        raise FnwebError(f"fnweb does not know where '{model_type}' keeps its final norm and unembedding "
                         "(archs.OUTPUT_HEADS), so it cannot compute direct effects for it.")
    weight = _weight(norm, "final norm")
    scale = torch.ones(int(_weight(unembed, "unembedding").shape[1])) if weight is None else weight.detach().float()
    if spec.norm == "rms_plus_one":
        scale = scale + 1.0
    project = get_path(inner, spec.project_out) if spec.project_out else None
    return OutputHead(scale=scale.cpu(), centres=spec.norm == "layer",
                      unembed=_weight(unembed, "unembedding").detach().float().cpu(),
                      project=None if project is None else _weight(project, "output projection").detach().float().cpu())
