"""Recurrence per sample: a planted network is found in every sample, a random one in few.

The matching is tested on synthetic samples (sparse sources planted into a few
channels, mixed with noise) through the same per-sample ICA and threshold the engine
uses. End to end, on a tiny model, a template built from one prompt must recur with
IoU 1 in that same prompt decomposed alone (the per-sample pipeline is the build's),
and the table, progress, stop and bad input behave.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fnweb.build import BuildConfig, build_template
from fnweb.errors import FnwebError
from fnweb.progress import StopFlag
from fnweb.prompts import PromptSource
from fnweb.recurrence import (
    RecurrenceConfig,
    best_matches,
    iou_matrix,
    random_twins,
    recurrence_stream,
    run_recurrence,
    sample_masks,
    template_masks,
)
from fnweb.templates import Template

CHANNELS, SUPPORT = 400, 40


def planted_sample(support: np.ndarray, seed: int, tokens: int = 80, others: int = 3) -> torch.Tensor:
    """A sample's activations: one heavy-tailed source on ``support``, ``others`` on random supports, noise."""
    rng = np.random.default_rng(seed)
    supports = [support] + [rng.choice(CHANNELS, SUPPORT, replace=False) for _ in range(others)]
    data = 0.2 * rng.normal(size=(tokens, CHANNELS))
    for channels in supports:
        source = rng.laplace(size=tokens) ** 3
        data[:, channels] += np.outer(source / source.std(), rng.uniform(1.0, 2.0, len(channels)))
    return torch.tensor(data, dtype=torch.float16)


def as_mask(channels: np.ndarray) -> np.ndarray:
    mask = np.zeros((CHANNELS, 1), dtype=bool)
    mask[channels, 0] = True
    return mask


def test_iou_matrix_counts_overlap_over_union():
    a = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    b = np.array([[1, 0], [1, 0], [0, 0], [0, 1]], dtype=bool)
    assert iou_matrix(a, b) == pytest.approx(np.array([[1.0, 0.0], [1 / 3, 0.0]]))
    assert iou_matrix(np.zeros((3, 1), bool), np.zeros((3, 1), bool))[0, 0] == 0.0


def test_a_planted_network_recurs_in_every_sample_and_a_random_one_in_few():
    rng = np.random.default_rng(0)
    planted = rng.choice(CHANNELS, SUPPORT, replace=False)
    unrelated = rng.choice(CHANNELS, SUPPORT, replace=False)
    reference = np.hstack([as_mask(planted), as_mask(unrelated)])
    best = []
    for seed in range(12):
        masks, _ = sample_masks(planted_sample(planted, seed), k=4, kind="percentile", value=90.0, seed=0)
        best.append(best_matches(reference, masks)[0])
    best = np.array(best)  # (samples, 2)
    assert (best[:, 0] > 0.2).all() and best[:, 0].mean() > 0.6
    assert (best[:, 1] > 0.2).sum() <= 1 and best[:, 1].mean() < 0.15


def test_a_sample_too_short_for_k_says_what_to_do():
    with pytest.raises(FnwebError, match=r"A sample of 11 tokens is too short for k = 10 per-sample components.*"
                                         r"more than k \+ 1 = 11 tokens.*Lower k, pool prompts"):
        sample_masks(torch.zeros(11, 50, dtype=torch.float16), k=10, kind="percentile", value=98.0, seed=0)


def test_template_masks_and_random_twins_keep_the_layer_sizes():
    template = Template([0, 2], 10, {0: {0: [1, 2], 2: [5]}, 1: {2: [0, 1, 2, 3, 4, 5, 6]}})
    masks = template_masks(template, [0, 1])
    assert np.flatnonzero(masks[:, 0]).tolist() == [1, 2, 15]
    twins, fits = random_twins(template, [0, 1], seed=3, sample=0)
    assert fits == [True, False]  # component 1 takes 7 of 10 channels of layer 2: no twin of its size fits
    assert twins[:10, 0].sum() == 2 and twins[10:, 0].sum() == 1 and not (twins[:, 0] & masks[:, 0]).any()
    assert np.array_equal(random_twins(template, [0, 1], seed=3, sample=0)[0], twins)  # seeded
    draws = {tuple(np.flatnonzero(random_twins(template, [0], seed=3, sample=s)[0][:, 0])) for s in range(10)}
    assert len(draws) > 1  # drawn afresh for each sample


# ---- end to end on a tiny model -----------------------------------------------------------


@pytest.fixture(scope="module")
def one_prompt_template(tiny_lm) -> Template:
    config = BuildConfig([PromptSource("builtin:factual")], samples_per_dataset=1, max_tokens=64, k=3,
                         stability_runs=0)
    return build_template(tiny_lm, config).template


def test_the_template_recurs_exactly_in_the_prompt_it_was_built_from(tiny_lm, one_prompt_template):
    config = RecurrenceConfig([PromptSource("builtin:factual")], samples_per_dataset=1, k=3, max_tokens=64,
                              exclude_template_prompts=False)
    result = run_recurrence(tiny_lm, one_prompt_template, config)
    assert not result.partial and result.sets == ["builtin:factual"] and result.components == [0, 1, 2]
    assert result.samples[0].best_iou == [1.0, 1.0, 1.0]
    assert [c.share for c in result.cells] == [1.0, 1.0, 1.0]
    assert all(c.random_share == 0.0 for c in result.cells)


def test_held_out_samples_give_a_table_per_set_and_component(tiny_lm, one_prompt_template):
    config = RecurrenceConfig([PromptSource("builtin:factual"), PromptSource("builtin:code")],
                              samples_per_dataset=3, k=3, max_tokens=64)
    events = []
    result = run_recurrence(tiny_lm, one_prompt_template, config, progress=events.append)
    assert len(result.samples) == 6 and result.sets == ["builtin:factual", "builtin:code"]
    assert any("1 of its 94 prompts were used to build the template" in w for w in result.warnings)
    table = result.share_table()
    assert set(table) == set(result.sets) and all(set(row) == {0, 1, 2} for row in table.values())
    for cell in result.cells:
        matches = [m for m in result.samples if m.source == cell.source]
        best = [m.best_iou[cell.component] for m in matches]
        assert cell.samples == 3 and cell.share == pytest.approx(np.mean([b > 0.2 for b in best]))
        assert cell.mean_iou == pytest.approx(np.mean(best), abs=1e-4)
    assert all(m.tokens > 4 and m.seconds > 0 for m in result.samples)
    measuring = [e for e in events if e.phase == "measuring"]
    assert measuring[-1].done == measuring[-1].total == 6
    json.dumps(result.to_dict())  # plain data all the way down


def test_groups_pool_prompts_into_one_sample(tiny_lm, one_prompt_template):
    single = RecurrenceConfig([PromptSource("builtin:code")], samples_per_dataset=4, k=3, max_tokens=64)
    pooled = RecurrenceConfig([PromptSource("builtin:code")], samples_per_dataset=2, group_size=2, k=3, max_tokens=64)
    alone = run_recurrence(tiny_lm, one_prompt_template, single).samples
    grouped = run_recurrence(tiny_lm, one_prompt_template, pooled).samples
    assert [m.prompts for m in grouped] == [2, 2]
    assert [m.tokens for m in grouped] == [alone[0].tokens + alone[1].tokens, alone[2].tokens + alone[3].tokens]


def test_a_stop_keeps_the_samples_done(tiny_lm, one_prompt_template):
    stop = StopFlag()

    def stop_after_first(event):
        if event.phase == "measuring" and event.done >= 1:
            stop.set()

    config = RecurrenceConfig([PromptSource("builtin:code")], samples_per_dataset=4, k=3, max_tokens=64)
    snapshots = list(recurrence_stream(tiny_lm, one_prompt_template, config, stop_after_first, stop))
    last = snapshots[-1]
    assert last.partial and len(last.samples) == 1
    assert last.partial_note == "Stopped by request: 1 of 4 samples decomposed."
    assert all(cell.samples == 1 for cell in last.cells)


def test_prompts_too_short_for_k_are_skipped_or_refused(tiny_lm, one_prompt_template, tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "Hi", "response": "Yo"}] + [
        {"prompt": f"Describe in a few words the colour number {i} of the rainbow, please.",
         "response": "It is a bright and cheerful colour that you can see after the rain."} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = RecurrenceConfig([PromptSource(str(path))], samples_per_dataset=4, k=20, max_tokens=64,
                              exclude_template_prompts=False)  # 'Hi' + 'Yo' is 19 tokens, the others 81
    result = run_recurrence(tiny_lm, one_prompt_template, config)
    assert len(result.samples) == 3
    assert any("1 of its 4 samples have 21 tokens or fewer, too few for k = 20" in w for w in result.warnings)
    short = RecurrenceConfig([PromptSource("builtin:factual")], samples_per_dataset=2, k=10, max_tokens=8)
    with pytest.raises(FnwebError, match=r"builtin:factual has no usable sample\. A sample of 8 tokens is too short "
                                         r"for k = 10"):
        run_recurrence(tiny_lm, one_prompt_template, short)


@pytest.mark.parametrize("overrides, message", [
    (dict(sources=[]), "No held-out prompt set chosen"),
    (dict(k=0), "Per-sample components k must lie between 1 and 64"),
    (dict(iou_threshold=1.0), r"The IoU threshold must lie in \[0, 1\)"),
    (dict(group_size=0), "Prompts per sample must lie between 1 and 100"),
    (dict(samples_per_dataset=0), "Samples per set must lie between 1 and 10000"),
    (dict(threshold="median"), "Unknown threshold 'median'"),
    (dict(threshold="percentile", threshold_value=100.0), "strictly between 0 and 100"),
])
def test_bad_settings_are_refused_before_any_work(tiny_lm, one_prompt_template, overrides, message):
    values = dict(sources=[PromptSource("builtin:code")], samples_per_dataset=2, k=3)
    values.update(overrides)
    with pytest.raises(FnwebError, match=message):
        run_recurrence(tiny_lm, one_prompt_template, RecurrenceConfig(**values))
