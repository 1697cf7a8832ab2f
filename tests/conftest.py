"""Shared fixtures: tiny models, a local model folder, and the embedded model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import tiny  # noqa: E402

from fnweb.models import LoadedModel, ModelRequest  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return tiny.make_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(tokenizer) -> LoadedModel:
    """A tiny random Llama with the local tokenizer, wrapped as a loaded model."""
    return LoadedModel(tiny.make_model("llama"), tokenizer, ModelRequest(model_id="tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny.save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def embedded_lm():
    """The embedded SmolLM2-135M-Instruct (converted and cached on first use)."""
    from fnweb.models import load_model

    return load_model()
