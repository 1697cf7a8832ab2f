"""Significance: permutation p-values, Holm, bootstrap intervals, and the experiment's tests end to end.

The statistics are checked on known inputs; the experiment's tests on the tiny Llama of
test_experiments, whose component 0 is a planted group of neurons (its down-projection
columns scaled up 30x) and whose component 1 is a random draw of the same per-layer
sizes: the planted group must rank first among 19 random draws (p = 1/20), the random
set must not stand out.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_experiments import LAYERS, make_config, make_template

from fnweb.errors import FnwebError
from fnweb.experiment_plots import lesion_figure
from fnweb.experiments import MAX_DRAWS, draw_seed, run_experiment, split_units, with_controls
from fnweb.experiments.plan import prepare
from fnweb.masks import random_control
from fnweb.progress import no_progress
from fnweb.significance import (
    bootstrap_interval,
    draws_needed,
    fisher,
    holm,
    permutation_p,
    resample_weights,
    smallest_p,
)


def test_permutation_p_counts_draws_at_least_as_bad():
    assert permutation_p(5.0, [1.0, 2.0, 3.0]) == pytest.approx(1 / 4)
    assert permutation_p(2.0, [1.0, 2.0, 3.0]) == pytest.approx(3 / 4)  # a tie counts against the effect
    assert permutation_p(0.0, [1.0, 2.0, 3.0]) == 1.0
    assert permutation_p(0.2, [0.5, 0.9], worse="lower") == pytest.approx(1 / 3)  # an accuracy drop
    assert permutation_p(None, [1.0]) is None and permutation_p(1.0, []) is None
    assert smallest_p(20) == pytest.approx(1 / 21) and draws_needed(10) == 199 and draws_needed(1) == 19


def test_holm_on_known_inputs():
    # sorted 0.01, 0.02, 0.03, 0.04 -> 4*0.01, 3*0.02, 2*0.03, 1*0.04, made monotone: 0.04, 0.06, 0.06, 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.01, None, 0.02]) == [pytest.approx(0.02), None, pytest.approx(0.02)]  # None is not a test
    assert holm([]) == []
    # the textbook case: 0.01, 0.04, 0.03, 0.005 at 0.05 rejects only the smallest two (adjusted 0.02, 0.03)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_fisher_and_bootstrap():
    assert fisher([1.0, 1.0]) == pytest.approx(1.0) and fisher([0.05, None]) is None
    assert fisher([0.05]) == pytest.approx(0.05)  # one p-value combines to itself
    assert fisher([1 / 21] * 3) == pytest.approx(0.00560, abs=1e-4)
    rng = np.random.default_rng(0)
    sums, tokens = rng.normal(2.0, 1.0, 200) * 10, np.full(200, 10.0)
    low, high = bootstrap_interval(sums, tokens, resample_weights(200, seed=0))
    assert low < 2.0 < high and high - low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.2)  # +- 1.96 se
    assert bootstrap_interval([1.0], [1.0], resample_weights(1, 0)) == (None, None)
    assert np.array_equal(resample_weights(5, 3), resample_weights(5, 3))  # seeded


def test_draw_seeds_are_not_shared_between_experiment_seeds():
    first = {s.random_seed for s in with_controls((0,), "lesion", 20, seed=0)[1:]}
    second = {s.random_seed for s in with_controls((0,), "lesion", 20, seed=1)[1:]}
    other_template = {s.random_seed for s in with_controls((0,), "lesion", 20, seed=0, stream=1)[1:]}
    assert len(first) == len(second) == 20 and not first & second and not first & other_template


def test_the_ordering_split_is_disjoint_from_the_scoring_split(planted_lm):
    order, score = split_units(7)
    assert not set(order) & set(score) and sorted(order + score) == list(range(7))
    run = prepare(planted_lm, make_template(), make_config(task="sentiment", task_items=2), no_progress)
    assert not set(run.order_units) & set(run.score_units) and len(run.order_units) == len(run.score_units) == 3
    curve_units = run.phase_units("preserve")
    assert not set(curve_units) & set(run.order_units)  # the curve is scored on texts that did not order it
    assert curve_units[-len(run.task.units):] == run.task_units  # and on the task's items


@pytest.fixture(scope="module")
def tested(planted_lm):
    """Component 1 is itself a random draw of component 0's per-layer sizes: a set with nothing special."""
    template = make_template()
    drawn = random_control(template.neurons([0]), template.width, seed=12345)
    template.components[1] = {layer: drawn[layer].tolist() for layer in LAYERS}
    return run_experiment(planted_lm, template, make_config(draws=19, samples_per_dataset=2, curve=False))


def test_a_planted_effect_has_a_small_p_and_a_random_set_has_not(tested):
    planted, drawn = tested.rows
    assert planted.tests["p"].mean == pytest.approx(1 / 20)  # above every one of its 19 draws
    assert drawn.tests["p"].mean > 0.2
    assert planted.tests["p_holm"].mean == pytest.approx(2 / 20)  # two components tested
    assert not tested.survivors()  # 0.1 > 0.05: 19 draws are too few for two tests
    dce, excess = planted.tests["dce"], planted.tests["excess"]
    assert dce.low <= dce.mean <= dce.high and dce.low > 0
    assert excess.mean == pytest.approx(planted.network["dce"] - planted.random["dce"].mean) and excess.low > 0
    assert "no component can survive" in tested.reading() and "at least 39 draws" in tested.reading()


def test_survivors_are_named_in_the_reading_and_marked_on_the_figure(tested):
    tested.settings["level"] = 0.2  # a looser family-wise rate: the planted group (Holm p 0.1) survives
    try:
        assert [r.component for r in tested.survivors()] == ["0"]
        assert "1 of 2 survives: component 0 (p = 0.050, Holm 0.100)" in tested.reading()
        bars = lesion_figure(tested)
        assert "★" in bars.data[0].text[0] and "★" not in bars.data[0].text[1]
        assert list(bars.data[0].error_y.array) == pytest.approx(
            [r.tests["dce"].high - r.network["dce"] for r in tested.lesion_rows])
    finally:
        tested.settings["level"] = 0.05


def test_more_draws_than_the_cap(planted_lm):
    with pytest.raises(FnwebError, match=f"between 1 and {MAX_DRAWS} \\(got {MAX_DRAWS + 1}\\)"):
        run_experiment(planted_lm, make_template(), make_config(draws=MAX_DRAWS + 1))
    assert draw_seed(0, 0) != draw_seed(1, 0)
