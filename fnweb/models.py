"""Load a causal LM and its tokenizer: a Hub id, a local folder, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, converted once from the GGUF file it
ships as (``fnweb.embedded``); what a model id names is ``fnweb.ids``'s to say.
Loaded models are cached per request and shared read-only: callers must not change
their weights (masks are hooks that are always removed; fine-tuning copies). The cache
is bounded (``fnweb.modelcache``: count and bytes, least recently used idle model
evicted first); a job holds its model with ``hold(lm)`` so that it is never evicted
under it. Weights load from safetensors only (never pickles), and code from a model's
repo runs only when the request says ``trust_remote_code`` (the user's own choice,
never a file's): a model that needs it is refused with a message that says so.

Everything that can fail is checked first and said in one line: the device against what
this machine has, a Hub id with one short request (the download client's own retries take
about 50 s to give up on an unreachable Hub), and unreadable weights when they load.

This module knows nothing about prompts, captures or masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError

from .embedded import cache_dir, embedded_model_dir  # noqa: F401  (cache_dir: also imported from here)
from .errors import FnwebError
from .ids import EMBEDDED_HUB_ID, EMBEDDED_ID, is_embedded, looks_like_path  # noqa: F401  (also imported from here)
from .modelcache import ModelCache

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = ("none", "4bit", "8bit")


@dataclass(frozen=True)
class ModelRequest:
    """What to load. Equal requests share one loaded model."""

    model_id: str = EMBEDDED_ID  # a Hub id, a local folder, or EMBEDDED_ID
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto (cuda, mps, cpu) | cpu | cuda | cuda:N | mps | multi (device_map="auto")
    quantization: str = "none"  # none | 4bit | 8bit (bitsandbytes)
    revision: Optional[str] = None
    trust_remote_code: bool = False  # run code from the model repo only when asked

    def validate(self) -> None:
        if not self.model_id or not self.model_id.strip():
            raise FnwebError("No model given: enter a Hub id, a local folder, or use the embedded model.")
        if self.dtype not in DTYPES:
            raise FnwebError(f"Unknown dtype '{self.dtype}'; choose one of: {', '.join(DTYPES)}.")
        if self.quantization not in QUANTIZATIONS:
            raise FnwebError(f"Unknown quantization '{self.quantization}'; choose none, 4bit or 8bit.")
        check_device(self.device)


@dataclass
class LoadedModel:
    """A model ready for work, with what the UI and templates need to know about it."""

    model: torch.nn.Module
    tokenizer: object
    request: ModelRequest

    @property
    def model_id(self) -> str:
        return self.request.model_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def summary(self) -> dict:
        from .archs import layout_of

        layout = layout_of(self.model)
        params = sum(p.numel() for p in self.model.parameters())
        return {
            "model": self.model_id,
            "architecture": layout.model_type,
            "layers": layout.n_layers,
            "neurons_per_layer": layout.intermediate_size,
            "hidden_size": layout.hidden_size,
            "parameters": params,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "device": str(self.device),
            "quantization": self.request.quantization,
        }

    def summary_line(self) -> str:
        s = self.summary()
        return (
            f"{s['model']}: {s['architecture']}, {s['layers']} layers x {s['neurons_per_layer']:,} neurons "
            f"(hidden {s['hidden_size']}), {s['parameters'] / 1e6:,.1f} M parameters, {s['dtype']} on {s['device']}"
            + (f", {s['quantization']}" if s["quantization"] != "none" else "")
        )


# ---- devices ------------------------------------------------------------------------


def _cuda_problem(index: Optional[int]) -> Optional[str]:
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) was built without CUDA"
    if not torch.cuda.is_available():
        return "no NVIDIA GPU or driver was found"
    if index is not None and index >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
    return None


def _mps_problem(index: Optional[int]) -> Optional[str]:
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_built():
        return "this PyTorch was built without MPS (Apple GPUs only)"
    if not mps.is_available():
        return "no Apple GPU is available"
    return None if not index else "there is one MPS device, mps:0"


# Device types fnweb runs on, and why one cannot be used here (None: it can).
DEVICE_PROBLEMS = {"cpu": lambda index: None, "cuda": _cuda_problem, "mps": _mps_problem}


def available_devices() -> list[str]:
    """The device names that work on this machine."""
    names = ["auto", "cpu"]
    if _cuda_problem(None) is None:
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count())), "multi"]
    if _mps_problem(None) is None:
        names.append("mps")
    return names


def check_device(device: str) -> None:
    """Refuse a device that does not exist or cannot be used here, listing those that can."""
    if device == "auto":
        return
    here = f"Available here: {', '.join(available_devices())}."
    if device == "multi":  # device_map="auto": spreads the model over the GPUs
        problem = _cuda_problem(None)
        if problem:
            raise FnwebError(f"Device 'multi' spreads the model over GPUs, but {problem}. {here}")
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise FnwebError(f"Unknown device '{device}'. {here}") from exc
    if parsed.type not in DEVICE_PROBLEMS:
        raise FnwebError(f"Device '{device}' is not one fnweb runs on. {here}")
    problem = DEVICE_PROBLEMS[parsed.type](parsed.index)
    if problem:
        raise FnwebError(f"Device '{device}' cannot be used: {problem}. {here}")


def pick_device(device: str) -> str:
    """Resolve ``auto`` to the best device present."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _quantization_config(quantization: str, compute_dtype: torch.dtype):
    if quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as exc:  # bitsandbytes raises several kinds on unsupported platforms
        raise FnwebError(f"{quantization} loading needs bitsandbytes, which cannot run here: {exc}") from exc
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=True,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _resolve_source(model_id: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is the embedded model)."""
    if is_embedded(model_id):
        return str(embedded_model_dir()), True
    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FnwebError(f"'{model_id}' is a folder without config.json: it is not a saved model.")
        return str(path), False
    if looks_like_path(model_id):
        raise FnwebError(f"No model folder at '{model_id}'.")
    return model_id, False


# ---- reaching the Hub ----------------------------------------------------------------

HUB_PROBE_SECONDS = 5  # one HEAD request; the client's own download retries take about 50 s to give up


def _hub_problem(exc: Exception, model_id: str, revision: Optional[str]) -> str:
    """What a failed probe of ``model_id`` means, in words (the errors are checked most specific first)."""
    from huggingface_hub import constants, errors

    status = getattr(getattr(exc, "response", None), "status_code", None)
    answers = (
        (errors.GatedRepoError, f"'{model_id}' is gated: accept its terms on its Hub page, then log in "
                                "(`hf auth login` or HF_TOKEN)"),
        (errors.RepositoryNotFoundError, f"'{model_id}' was not found on the Hub (a private model needs a login: "
                                         "`hf auth login` or HF_TOKEN)"),
        (errors.RevisionNotFoundError, f"'{model_id}' has no revision '{revision}'"),
        (errors.EntryNotFoundError, f"'{model_id}' has no config.json: it is not a transformers model"),
        (errors.HfHubHTTPError, f"the Hub refused the request (HTTP {status}): check your token (HF_TOKEN or "
                                "`hf auth login`)" if status in (401, 403) else
                                f"the Hub answered HTTP {status} for '{model_id}'; try again later"),
    )
    for kind, message in answers:
        if isinstance(exc, kind):
            return message
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({reason}); check the connection, "
            "or use a local folder or a model downloaded before")


def check_hub_model(model_id: str, revision: Optional[str] = None) -> None:
    """Fail in seconds when a Hub model cannot be fetched, instead of after the client's retries.

    Skipped when the model's config is cached already (transformers falls back to the cache
    when offline); in offline mode (HF_HUB_OFFLINE) a model that is not cached is refused at once.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError  # HTTPError: transport errors

    try:
        if isinstance(try_to_load_from_cache(model_id, "config.json", revision=revision), str):
            return
        if constants.HF_HUB_OFFLINE:
            raise FnwebError(f"Could not load model '{model_id}': the Hub is switched off here (HF_HUB_OFFLINE) and "
                             "the model is not in the local cache; use a local folder or a model downloaded before.")
        get_hf_file_metadata(hf_hub_url(model_id, "config.json", revision=revision), timeout=HUB_PROBE_SECONDS)
    except HFValidationError as exc:
        raise FnwebError(f"'{model_id}' is neither a model folder nor a valid Hub id (like 'org/name').") from exc
    except (HfHubHTTPError, HTTPError, OSError) as exc:
        raise FnwebError(f"Could not load model '{model_id}': {_hub_problem(exc, model_id, revision)}.") from exc


# ---- loading --------------------------------------------------------------------------


def _load(request: ModelRequest) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    request.validate()
    source, embedded = _resolve_source(request.model_id)
    if not embedded and not Path(source).expanduser().exists():  # a Hub id
        check_hub_model(source, request.revision)
    device = pick_device(request.device)
    dtype = DTYPES[request.dtype]
    if dtype is None:  # auto: float32 on CPU (bfloat16 matmuls are slow there), else the checkpoint's dtype
        dtype = torch.float32 if device == "cpu" else "auto"
    kwargs = dict(revision=request.revision, trust_remote_code=request.trust_remote_code)
    quant = _quantization_config(request.quantization, torch.float32 if device == "cpu" else torch.bfloat16)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, quantization_config=quant, use_safetensors=True,
            device_map="auto" if device == "multi" else (device if quant is not None else None),
            **kwargs,
        )
    except FnwebError:
        raise
    except (OSError, ValueError) as exc:
        if "custom code" in str(exc) and not request.trust_remote_code:
            raise FnwebError(
                f"Model '{request.model_id}' needs custom code from its repo to load, and fnweb runs such code only "
                "when you ask for it yourself. If you trust that code, pass trust_remote_code (CLI: "
                "--trust_remote_code; Python: ModelRequest(..., trust_remote_code=True)); the web app never runs it."
            ) from exc
        raise FnwebError(
            f"Could not load model '{request.model_id}': {str(exc).splitlines()[0]} "
            "Check the id or path (and your access to it, for gated models)."
        ) from exc
    except SafetensorError as exc:
        raise FnwebError(
            f"Could not load model '{request.model_id}': its weights are unreadable (a truncated, empty or "
            f"damaged .safetensors file: {str(exc).splitlines()[0]}). Download or save the model again."
        ) from exc
    if quant is None and device != "multi":
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:  # batching needs a pad token; it is never a real token here
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedModel(model=model, tokenizer=tokenizer, request=request)


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (shared tensors counted once)."""
    seen, total = set(), 0
    for tensor in (*model.parameters(), *model.buffers()):
        key = (tensor.device, tensor.data_ptr())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def estimated_bytes(request: ModelRequest) -> Optional[int]:
    """The size of a model's weight files before loading it (None when it cannot be told cheaply)."""
    if is_embedded(request.model_id):
        return None  # small, and converted locally
    path = Path(request.model_id).expanduser()
    if path.is_dir():
        return sum(f.stat().st_size for f in path.glob("*.safetensors")) or None
    try:
        from huggingface_hub import HfApi

        # token=None: a one-user process may use its own login; an app serving many visitors has
        # switched implicit tokens off (fnweb.access), so there this call goes out anonymous.
        info = HfApi().model_info(request.model_id, revision=request.revision, files_metadata=True)
    except Exception:  # offline, unreachable, or not found: the load itself will say what is wrong
        return None
    sizes = [s.size or 0 for s in info.siblings or [] if s.rfilename.endswith(".safetensors")]
    return sum(sizes) or None


def _release_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


_shared = ModelCache(release=_release_memory)


def load_model(request: ModelRequest | str = EMBEDDED_ID) -> LoadedModel:
    """Load (or reuse) the model a request names, within the cache's bounds. Thread-safe; one load at a time."""
    if isinstance(request, str):
        request = ModelRequest(model_id=request)
    return _shared.get(request, lambda: _load(request), lambda lm: weights_bytes(lm.model),
                       estimate=lambda: estimated_bytes(request), held=lambda lm: lm.model)


def hold(lm: LoadedModel | torch.nn.Module):
    """``with hold(lm):`` the shared model is in use by a job and is not evicted until the block ends."""
    return _shared.hold(lm.model if isinstance(lm, LoadedModel) else lm)


def cache_note(request: ModelRequest) -> Optional[str]:
    """What the cache did to this request's model (unloaded, or unloaded and loaded again); None if nothing."""
    return _shared.note(request)


def is_loaded(request: ModelRequest) -> bool:
    return _shared.is_loaded(request)


def load_fresh(request: ModelRequest | str) -> LoadedModel:
    """A private copy, outside the shared cache: for work that changes weights (fine-tuning)."""
    if isinstance(request, str):
        request = ModelRequest(model_id=request)
    return _load(request)
