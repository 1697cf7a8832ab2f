"""Random controls (per layer, per magnitude), their seeds, massive channels; mean ablation and scaling by alpha."""

import json
import math

import numpy as np
import pytest
import tiny
import torch

from fnweb.archs import layout_of
from fnweb.capture import capture
from fnweb.channel_stats import ChannelStats
from fnweb.compare import DEFAULT_COLUMNS, GenerationSettings, compare, plan_rows
from fnweb.controls import CONTROLS, STRATA, draw_control, draw_seed, strata_of
from fnweb.errors import FnwebError
from fnweb.finetune.network import plan_for
from fnweb.finetune.runs import MaskFile
from fnweb.interventions import ALPHA_RANGE, INTERVENTIONS
from fnweb.masks import MaskSpec, apply_masks, chosen_neurons, layer_masks, spilled
from fnweb.templates import Template

WIDTH = 200
IDS = torch.tensor([[5, 17, 42, 99, 7, 8, 9]])


def scaled_template(massive=((1, 150),)) -> Template:
    """Two layers of 200 channels whose scale grows with the index (channel i: about i + 1), some massive."""
    std = np.tile(np.arange(1, WIDTH + 1, dtype=np.float32), (2, 1))
    for layer, channel in massive:
        std[layer, channel] = 5e4  # 500x its layer's median
    stats = ChannelStats.from_moments([0, 1], np.zeros(2 * WIDTH), std.ravel(), tokens=50)
    # Component 0 takes channels of every decile of layer 0 (more of the top ones) and 15 of layer 1.
    chosen = sorted({*range(0, WIDTH, 20), *range(186, 192), 1})
    return Template(layers=[0, 1], width=WIDTH, components={0: {0: chosen, 1: list(range(100, 160, 4))}}, stats=stats)


def test_the_magnitude_control_draws_as_many_per_stratum_from_the_right_strata():
    template = scaled_template(massive=())
    stratum = strata_of(template.stats.scale()[0])
    assert np.bincount(stratum, minlength=STRATA).tolist() == [WIDTH // STRATA] * STRATA  # deciles
    selected = template.neurons([0])
    for draw in range(20):
        spec = MaskSpec((0,), "lesion", random_seed=draw_seed(3, draw), control="magnitude")
        drawn = chosen_neurons(template, spec)
        for layer, chosen in selected.items():
            assert not set(drawn[layer]) & set(chosen) and len(drawn[layer]) == len(chosen)
            assert sorted(stratum[drawn[layer]]) == sorted(stratum[chosen])  # the same count from each stratum
        assert spilled(template, spec) == 0
    uniform = chosen_neurons(template, MaskSpec((0,), "lesion", random_seed=draw_seed(3, 0)))
    assert sorted(stratum[uniform[0]]) != sorted(stratum[selected[0]])  # the layer control does not match scale


def test_a_short_stratum_is_filled_from_the_nearest_and_counted():
    template = scaled_template(massive=())
    template.components[1] = {0: list(range(170, 200)) + [0]}  # the top decile, all of it, and 10 of the ninth
    spec = MaskSpec((1,), "lesion", random_seed=draw_seed(0, 0), control="magnitude")
    drawn = chosen_neurons(template, spec)[0]
    stratum = strata_of(template.stats.scale()[0])
    assert len(drawn) == 31 and not set(drawn) & set(template.components[1][0])
    assert spilled(template, spec) == 20  # the top decile has nothing left: its 20 come from the ninth, then the eighth
    assert sorted(stratum[drawn]).count(8) == 10 and sorted(stratum[drawn]).count(7) == 20


def test_excluded_massive_channels_are_never_drawn_and_spared_ones_are_left_alone():
    template = scaled_template()
    assert template.stats.massive == [(1, 150)]
    hits = {policy: sum(150 in chosen_neurons(template, MaskSpec((0,), "lesion", random_seed=draw_seed(0, d),
                                                                   massive=policy))[1] for d in range(300))
            for policy in ("keep", "undrawn")}
    assert hits["keep"] > 0 and hits["undrawn"] == 0  # 15 of 185 drawn: channel 150 came up under "keep"
    for control in CONTROLS:
        drawn = chosen_neurons(template, MaskSpec((0,), "lesion", random_seed=1, control=control, massive="undrawn"))
        assert 150 not in drawn[1]
    template.components[0][1].append(150)
    spared = MaskSpec((0,), "lesion", massive="spared")
    assert 150 not in chosen_neurons(template, spared)[1] and len(chosen_neurons(template, spared)[1]) == 15
    assert layer_masks(template, spared)[1].keep[150] == 1 and layer_masks(template, MaskSpec((0,)))[1].keep[150] == 0
    assert spared.label() == "lesion components 0, massive channels spared"


def test_draw_seeds_are_never_shared_between_experiment_seeds():
    seeds = {seed: [draw_seed(seed, d) for d in range(20)] for seed in range(5)}
    every = [s for draws in seeds.values() for s in draws]
    assert len(set(every)) == len(every)  # seed s+1 no longer reuses seed s's draws 1..19
    template = scaled_template(massive=())
    masks = {(s, d): tuple(chosen_neurons(template, MaskSpec((0,), random_seed=draw_seed(s, d)))[0])
             for s in range(2) for d in range(5)}
    assert not {masks[0, d] for d in range(1, 5)} & {masks[1, d] for d in range(4)}
    with pytest.raises(FnwebError, match="from 0 up"):
        draw_seed(-1, 0)


def test_the_layer_control_draws_what_saved_runs_drew():
    """A run saved before the control table re-draws its random mask the same (default_rng(seed) over the rest)."""
    template = scaled_template(massive=())
    selected = template.neurons([0])
    rng = np.random.default_rng(7)
    legacy = {layer: np.sort(rng.choice(np.setdiff1d(np.arange(WIDTH), ch), size=len(ch), replace=False))
              for layer, ch in sorted(selected.items())}
    drawn = draw_control(selected, WIDTH, 7).channels
    assert all(np.array_equal(drawn[layer], legacy[layer]) for layer in legacy)


def test_what_needs_the_statistics_says_a_rebuild_adds_them():
    template = scaled_template()
    template.stats = None
    for spec in (MaskSpec((0,), random_seed=1, control="magnitude"), MaskSpec((0,), random_seed=1, massive="undrawn"),
                 MaskSpec((0,), massive="spared"), MaskSpec((0,), "mean")):
        with pytest.raises(FnwebError, match="Rebuild the template"):
            layer_masks(template, spec)
    assert layer_masks(template, MaskSpec((0,), "lesion", massive="undrawn"))  # a network mask draws nothing


@pytest.mark.parametrize("alpha", [math.nan, math.inf, -0.1, 10.5, "two", None])
def test_alpha_out_of_range_or_not_finite_is_refused(alpha):
    with pytest.raises(FnwebError, match=f"α must be a finite number from {ALPHA_RANGE[0]:g} to {ALPHA_RANGE[1]:g}"):
        MaskSpec((0,), "scale", alpha=alpha)
    with pytest.raises(FnwebError, match="α must be"):
        GenerationSettings(alpha=alpha).validate()
    assert MaskSpec((0,), "lesion", alpha=alpha).alpha is None  # an intervention without a factor drops it


def logits(model, masks=None):
    with torch.no_grad(), apply_masks(model, masks or {}, "neurons"):
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def built(tiny_lm):
    from fnweb.build import BuildConfig, build_template
    from fnweb.prompts import PromptSource

    config = BuildConfig(sources=[PromptSource("builtin:factual")], samples_per_dataset=8, max_tokens=32, k=2,
                         stability_runs=0, card_contexts=0)
    return build_template(tiny_lm, config).template


def test_alpha_one_is_bit_identical_and_alpha_zero_is_the_lesion(tiny_lm, built):
    model = tiny_lm.model
    assert torch.equal(logits(model, layer_masks(built, MaskSpec((0, 1), "scale", alpha=1.0))), logits(model))
    lesion = logits(model, layer_masks(built, MaskSpec((0, 1), "lesion")))
    assert torch.equal(logits(model, layer_masks(built, MaskSpec((0, 1), "scale", alpha=0.0))), lesion)
    assert not torch.equal(lesion, logits(model))
    doubled = layer_masks(built, MaskSpec((0,), "scale", alpha=2.0))
    layer = next(iter(doubled))
    assert set(doubled[layer].keep.unique().tolist()) == {1.0, 2.0} and doubled[layer].add is None


def test_mean_ablation_replaces_the_channels_by_the_stored_means_exactly(tiny_lm, built):
    masks = layer_masks(built, MaskSpec((0, 1), "mean"))
    with apply_masks(tiny_lm.model, masks, "neurons"):
        seen = capture(tiny_lm.model, [IDS[0].tolist()], site="neurons", storage="float32").matrix
    seen = seen.view(-1, len(built.layers), built.width)
    for layer, channels in built.neurons([0, 1]).items():
        row = built.stats.row(layer)
        expected = torch.from_numpy(built.stats.mean[row, channels]).expand(seen.shape[0], -1)
        assert torch.equal(seen[:, row, channels], expected)  # every token, exactly the stored mean
        others = np.setdiff1d(np.arange(built.width), channels)
        assert not torch.equal(seen[:, row, others], torch.from_numpy(built.stats.mean[row, others]).expand(
            seen.shape[0], -1))


def test_mask_json_keeps_every_field_and_older_files_load(built, tmp_path):
    layout = layout_of(tiny.make_model("llama"))
    spec = MaskSpec((0,), "scale", random_seed=draw_seed(1, 2), control="magnitude", massive="undrawn", alpha=1.5)
    plan = plan_for(built, spec, "random", "neurons", restrict=False)
    written = json.loads(json.dumps(MaskFile.of(plan, plan.share(layout)).to_dict()))
    read = MaskFile.from_dict(written)
    again = plan_for(built, read.spec, read.mask_mode, read.site, read.restrict_updates, read.mask_activations)
    assert again.spec == spec and all(torch.equal(again.masks[k].keep, plan.masks[k].keep) for k in plan.masks)
    older = {"mask_mode": "lesion", "site": "neurons", "components": [0], "mode": "lesion", "random_seed": None,
             "layers": None, "restrict_updates": False}
    assert MaskFile.from_dict(older).spec == MaskSpec((0,), "lesion")
    assert MaskSpec.from_dict(spec.to_dict()) == spec and json.loads(json.dumps(spec.to_dict())) == spec.to_dict()


def test_compare_columns_follow_the_table_and_take_alpha_and_the_control(tiny_lm, built):
    assert set(DEFAULT_COLUMNS) == {"baseline", "lesion", "preserve", "random"}
    settings = GenerationSettings(alpha=0.5, control_of="scale", control="magnitude", random_draws=2)
    settings.validate()
    rows = plan_rows(built, [0], ["baseline", *INTERVENTIONS, "random"], settings)
    by_column = {r.column: r.spec for r in rows}
    assert by_column["scale"].alpha == 0.5 and by_column["mean"].alpha is None
    # every intervention shown gets its own random control, drawn by the chosen control, with the same factor
    randoms = [r.spec for r in rows if r.column == "random-scale"]
    assert [(s.mode, s.alpha, s.control) for s in randoms] == [("scale", 0.5, "magnitude")] * 2
    assert {r.spec.mode for r in rows if r.column == "random"} == {"lesion"}
    alone = plan_rows(built, [0], ["baseline", "random"], settings)  # no intervention shown: control_of's
    assert [(r.column, r.spec.mode) for r in alone[1:]] == [("random-scale", "scale")] * 2
    done = compare(tiny_lm, "Name a colour.", built, [0], ["baseline", "mean", "scale", "random"],
                   GenerationSettings(max_new_tokens=3, alpha=0.0, control_of="mean"))
    assert [c.name for c in done.columns] == ["baseline", "mean", "scale", "random-mean", "random-scale"]
    assert done.columns[2].label == "scale ×0 components 0"
    older = Template(layers=built.layers, width=built.width, components=built.components, meta=built.meta)
    with pytest.raises(FnwebError, match="Mean ablation .*Rebuild the template"):
        compare(tiny_lm, "Name a colour.", older, [0], ["baseline", "mean"], GenerationSettings(max_new_tokens=2))
    with pytest.raises(FnwebError, match="Unknown control 'size'"):
        GenerationSettings(control="size").validate()
