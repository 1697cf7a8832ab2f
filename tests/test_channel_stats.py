"""Capture statistics in the template: what a build keeps, how the file holds it, massive channels, bad blocks."""

import json

import numpy as np
import pytest
import torch

from fnweb.build import BuildConfig, build_template
from fnweb.capture import capture
from fnweb.cards import card_text
from fnweb.channel_stats import MAX_STATS_CHANNELS, STATS_KEY, ChannelStats
from fnweb.errors import FnwebError
from fnweb.prompts import PromptSource, encode_pairs, sample_pairs
from fnweb.templates import Template, TemplateMeta

SOURCES = [PromptSource("builtin:factual"), PromptSource("builtin:code")]


@pytest.fixture(scope="module")
def built(tiny_lm):
    config = BuildConfig(sources=SOURCES, samples_per_dataset=10, max_tokens=40, k=3, seed=0, stability_runs=0,
                         card_contexts=4)
    return build_template(tiny_lm, config).template, config


def planted(massive_at=(1, 7), ratio=1000.0) -> ChannelStats:
    """Three layers of 16 channels with scale ~1, and one channel ``ratio`` times larger."""
    rng = np.random.default_rng(0)
    mean = rng.uniform(-0.5, 0.5, (3, 16)).astype(np.float32)
    std = rng.uniform(0.8, 1.2, (3, 16)).astype(np.float32)
    std[massive_at] = ratio
    return ChannelStats.from_moments([0, 1, 2], mean.ravel(), std.ravel(), tokens=100)


def test_a_build_keeps_the_captures_mean_and_spread_as_its_file_holds_them(built, tiny_lm, tmp_path):
    template, config = built
    pairs = sample_pairs(config.sources, config.samples_per_dataset, config.seed)
    acts = capture(tiny_lm.model, encode_pairs(tiny_lm.tokenizer, pairs, config.max_tokens))
    stats = template.stats
    assert stats.layers == template.layers and stats.mean.shape == (len(template.layers), template.width)
    assert stats.tokens == template.meta.n_tokens == acts.n_tokens
    for name in ("mean", "std"):  # the capture's float32 moments, rounded to float16 as stored
        exact = getattr(acts, name).numpy().reshape(stats.mean.shape)
        assert np.array_equal(getattr(stats, name), exact.astype(np.float16).astype(np.float32))
    loaded = Template.load(template.save(tmp_path / "t.json"))
    assert loaded.stats == stats and loaded == template  # what a build holds is what its file gives back
    block = json.loads((tmp_path / "t.json").read_text())["fnweb"][STATS_KEY]
    assert block["dtype"] == "float16" and block["shape"] == [len(template.layers), template.width]
    assert {"name", "layout", "templates"} <= set(json.loads((tmp_path / "t.json").read_text()))  # original keys


def test_massive_channels_are_flagged_and_shown_in_the_summary_and_the_cards(built):
    stats = planted()
    assert stats.massive == [(1, 7)]
    assert stats.ratio()[1, 7] > 500 and stats.ratio()[0].max() < 5
    template = Template(layers=[0, 1, 2], width=16, components={0: {1: [3, 7]}, 1: {0: [2]}}, stats=stats)
    rows = template.coverage()
    assert rows[0]["massive"] == [(1, 7)] and rows[1]["massive"] == []
    summary = template.coverage_summary()
    assert "Component 0" in summary and "layer 1 #7" in summary.splitlines()[1]
    assert "massive-activation" not in summary.splitlines()[2]  # component 1 has none
    assert summary.splitlines()[-1].startswith("  Massive-activation channels") and "layer 1 #7" in summary
    from fnweb.cards import Cards

    built_template, _ = built
    cards = Cards.from_dict(built_template.cards)
    text = card_text(cards, 0, {**built_template.coverage()[0], "massive": [(1, 7)]})
    assert "massive-activation" in text


def test_an_older_file_has_no_statistics_and_a_huge_model_keeps_none(built, tmp_path):
    template, _ = built
    data = template.to_dict()
    del data["fnweb"][STATS_KEY]
    older = Template.from_dict(data)
    assert older.stats is None and "massive" not in older.coverage()[0]
    assert "Massive" not in older.coverage_summary()
    too_many = MAX_STATS_CHANNELS + 1
    assert ChannelStats.from_moments([0], np.zeros(too_many), np.ones(too_many), 1) is None


def test_values_beyond_float16_are_kept_in_float32(tmp_path):
    stats = planted(ratio=1e6)
    block = stats.to_dict()
    assert block["dtype"] == "float32"
    again = ChannelStats.from_dict(json.loads(json.dumps(block)), [0, 1, 2], 16)
    assert again == stats and again.std[1, 7] == 1e6


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(version=9), "version 9"),
    (lambda b: b.update(shape=[3, 15]), "shape"),
    (lambda b: b.update(dtype="float64"), "dtype"),
    (lambda b: b.update(mean=b["mean"][:-8]), "'mean' is not 3 x 16"),
    (lambda b: b.update(std="!" * len(b["std"])), "'std'"),
    (lambda b: b.update(massive=[[1, 99]]), "massive channel outside"),
])
def test_a_malformed_statistics_block_is_refused_saying_a_rebuild_adds_it(change, message):
    data = Template(layers=[0, 1, 2], width=16, components={0: {1: [3]}}, stats=planted(),
                    meta=TemplateMeta("tiny", "neurons", 3, 16, 1, "percentile", 98.0)).to_dict()
    change(data["fnweb"][STATS_KEY])
    with pytest.raises(FnwebError, match=message) as caught:
        Template.from_dict(data)
    assert "Rebuild the template" in str(caught.value)


def test_not_finite_values_are_refused_in_a_file():
    block = ChannelStats([0, 1, 2], np.full((3, 16), np.nan, np.float32), np.ones((3, 16), np.float32)).to_dict()
    with pytest.raises(FnwebError, match="not finite"):
        ChannelStats.from_dict(block, [0, 1, 2], 16)
    assert ChannelStats.from_moments([0], torch.tensor([np.inf]), torch.tensor([1.0]), 1) is None
