"""The embedded SmolLM2-135M-Instruct: conversion cache, a real template, real masks."""

import pytest
import torch

from fnweb.build import BuildConfig, build_template
from fnweb.compare import GenerationSettings, compare
from fnweb.models import EMBEDDED_ID, embedded_model_dir, load_model
from fnweb.prompts import PromptSource
from fnweb.templates import Template

pytestmark = pytest.mark.slow


def test_embedded_model_is_cached_as_safetensors(embedded_lm):
    folder = embedded_model_dir()
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    assert load_model(EMBEDDED_ID) is embedded_lm  # shared, not loaded twice
    summary = embedded_lm.summary()
    assert (summary["architecture"], summary["layers"], summary["neurons_per_layer"]) == ("llama", 30, 1536)


def test_ten_component_template_from_a_builtin_set(embedded_lm, tmp_path):
    config = BuildConfig(sources=[PromptSource("builtin:factual")], samples_per_dataset=60, max_tokens=64, k=10)
    result = build_template(embedded_lm, config, output=tmp_path / "t.json")
    template = Template.load(result.path)
    assert template.component_ids == list(range(10))
    assert template.meta.model_id == EMBEDDED_ID and template.meta.width == 1536 and template.meta.n_layers == 30
    assert result.n_tokens > 1000
    for row in template.coverage():
        assert row["channels"] == pytest.approx(0.02 * 30 * 1536, abs=30)  # the 98th percentile
    comparison = compare(embedded_lm, "What is the capital of France?", template, [0, 1],
                         settings=GenerationSettings(max_new_tokens=12))
    base, lesion, preserve, random, random_preserve = comparison.columns
    assert "Paris" in base.text
    assert preserve.metrics["kl"].mean > lesion.metrics["kl"].mean >= 0.0  # keeping 4 % breaks more than losing 4 %
    with torch.no_grad():  # the shared model is left unmasked
        ids = embedded_lm.tokenizer("Hello", return_tensors="pt")["input_ids"]
        assert torch.isfinite(embedded_lm.model(ids).logits).all()
