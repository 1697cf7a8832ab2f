"""Every entry of the axis tables (sites, thresholds, metrics, interventions) runs through the engine's paths.

Each test is parametrised over a table, so an entry added there is tested here at
once; the ``new_*`` tests add an entry for the test's length and follow it through
the paths that read the table (capture, masks, hooks, merging, validation, the CLI).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import tiny
import torch

from fnweb.archs import SITES, Site, hook_site, layout_of
from fnweb.build import BuildConfig
from fnweb.capture import capture
from fnweb.channel_stats import ChannelStats
from fnweb.errors import FnwebError
from fnweb.finetune.config import TrainConfig
from fnweb.finetune.merge import bake_masks
from fnweb.finetune.network import plan_for
from fnweb.interventions import INTERVENTIONS, Intervention, LayerMask
from fnweb.masks import MaskSpec, apply_masks, layer_masks, masked_share, stacked_masks
from fnweb.metrics import METRICS, TOKEN_METRICS, Stat, next_token_stats
from fnweb.prompts import PromptSource
from fnweb.stability import component_stability
from fnweb.templates import Template
from fnweb.thresholds import THRESHOLDS, Threshold, threshold

SEQUENCES = [[5, 17, 42, 99, 7], [8, 9, 10], [300, 301, 302, 303, 304, 305, 306]]
IDS = torch.tensor([SEQUENCES[2]])
ARCHS = ["llama", "gpt2", "opt"]  # a Linear with and without bias, GPT-2's Conv1D


def layer0(model, site, masks=None) -> torch.Tensor:
    """The site's activations of layer 0 for every real token (float32), optionally under masks."""
    if masks is None:
        return capture(model, SEQUENCES, site=site, layers=[0], storage="float32").matrix
    with apply_masks(model, masks, site):
        return capture(model, SEQUENCES, site=site, layers=[0], storage="float32").matrix


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


ALPHA = 0.5  # the factor given to every intervention that takes one


def template_for(layout, site: str) -> Template:
    width = layout.width(site)
    n = layout.n_layers * width
    stats = ChannelStats.from_moments(range(layout.n_layers), np.linspace(-1, 1, n), np.ones(n), tokens=10)
    return Template(layers=list(range(layout.n_layers)), width=width,
                    components={0: {0: [1, 5, 9], 2: [0, width - 1]}, 1: {1: [3, 4]}}, stats=stats)


# ---- sites ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("site", list(SITES))
def test_every_site_captures_its_width_and_is_edited_where_it_is_read(arch, site):
    model = tiny.make_model(arch)
    layout = layout_of(model)
    width = layout.width(site)
    plain = layer0(model, site)
    assert plain.shape == (sum(map(len, SEQUENCES)), width)
    keep = torch.ones(width)
    keep[[1, 5]] = 0.0
    edited = layer0(model, site, {0: keep})
    assert torch.all(edited[:, [1, 5]] == 0) and (plain[:, [1, 5]] != 0).any()
    assert torch.equal(edited[:, 2:5], plain[:, 2:5])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("site", list(SITES))
def test_every_site_bakes_into_the_weights_what_its_hooks_do(arch, site):
    model = tiny.make_model(arch)
    masks = layer_masks(template_for(layout_of(model), site), MaskSpec((0, 1), "lesion"))
    with apply_masks(model, masks, site):
        hooked = logits(model)
    baked = copy.deepcopy(model)
    bake_masks(baked, masks, site)
    assert torch.allclose(logits(baked), hooked, atol=1e-5)
    assert not torch.allclose(logits(model), hooked, atol=1e-5)


@pytest.mark.parametrize("site", list(SITES))
def test_an_original_template_gets_the_site_its_width_matches(site):
    layout = layout_of(tiny.make_model("llama"))  # intermediate 64, hidden 32: every site's width differs
    assert template_for(layout, site).infer_site(layout) == site


def test_hook_site_returns_a_handle_and_leaves_activations_alone_when_told_nothing():
    model = tiny.make_model("llama")
    layout = layout_of(model)
    before = logits(model)
    seen = []
    handles = [hook_site(layout.module(model, 0, site), site, lambda x: seen.append(x.shape) or None)
               for site in SITES]
    try:
        assert torch.equal(logits(model), before) and len(seen) == len(SITES)
    finally:
        for handle in handles:
            handle.remove()
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


@pytest.fixture
def down_output(monkeypatch) -> str:
    """A new site for the test's length: the down-projection's output (the MLP output of a Llama)."""
    monkeypatch.setitem(SITES, "down_output", Site(
        name="down_output", module="down_proj", reads_input=False, width="hidden_size", weight_axis="out",
        has_bias=True, unit="channel", units="down-projection outputs", help="the down-projection's output"))
    return "down_output"


def test_a_new_site_entry_is_captured_masked_baked_and_accepted(down_output):
    from fnweb.cli.buildtemplates import parser
    from fnweb.ui.templates_tab import config_from_form

    model = tiny.make_model("llama")
    assert torch.equal(layer0(model, down_output), layer0(model, "mlp_output"))  # Llama's MLP ends in down_proj
    test_every_site_bakes_into_the_weights_what_its_hooks_do("llama", down_output)
    BuildConfig([PromptSource("builtin:factual")], site=down_output).validate()
    TrainConfig(dataset="builtin:factual", output_dir="x", site=down_output).validate()
    assert config_from_form(dict(builtin=["factual"], hub="", files=None, samples=10, max_tokens=32, k=3,
                                 site=down_output, threshold="percentile", threshold_value=98,
                                 seed=0)).site == down_output
    assert parser().parse_args(["m", "d", "--site", down_output]).site == down_output
    with pytest.raises(FnwebError, match="Unknown site 'attention'; choose one of: neurons, mlp_output, down_output"):
        BuildConfig([PromptSource("builtin:factual")], site="attention").validate()


# ---- thresholds ------------------------------------------------------------------------------


def planted_maps(channels: int = 200, k: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(channels, k))
    maps[:3] += 8.0  # a heavy positive tail in every component
    return maps


@pytest.mark.parametrize("kind", list(THRESHOLDS))
def test_every_threshold_rule_checks_its_range_and_makes_masks(kind):
    rule = THRESHOLDS[kind]
    assert rule.check(rule.default) == rule.default
    for outside in (rule.low, rule.high):
        if np.isfinite(outside):
            with pytest.raises(FnwebError, match=f"The {rule.value_name} must {rule.range_words()}"):
                threshold(planted_maps(), kind, outside)
    masks = threshold(planted_maps(), kind)
    assert masks.dtype == bool and masks.shape == (200, 3) and masks[:3].all()
    assert not masks.all()
    with pytest.raises(FnwebError, match=rule.value_name):
        BuildConfig([PromptSource("builtin:factual")], threshold=kind, threshold_value=rule.low).validate()


@pytest.mark.parametrize("kind", list(THRESHOLDS))
def test_every_threshold_rule_is_a_choice_of_the_cli_and_the_form(kind):
    from fnweb.cli.buildtemplates import parser
    from fnweb.ui.templates_tab import _default_value, config_from_form

    rule = THRESHOLDS[kind]
    args = parser().parse_args(["m", "d", "--threshold", kind, f"--{rule.cli_flag}", str(rule.default)])
    assert args.threshold == kind and getattr(args, rule.cli_flag) == rule.default
    assert _default_value(kind) == rule.default
    config = config_from_form(dict(builtin=["factual"], hub="", files=None, samples=10, max_tokens=32, k=3,
                                   site="neurons", threshold=kind, threshold_value=None, seed=0))
    assert config.resolved_threshold == rule.default


@pytest.fixture
def top_share(monkeypatch) -> str:
    """A new rule for the test's length: channels with |map| at or above a share of the component's largest."""
    monkeypatch.setitem(THRESHOLDS, "top_share", Threshold(
        "top_share", default=0.5, low=0.0, high=1.0, value_name="share of the largest |map|",
        apply=lambda maps, value: np.abs(maps) >= value * np.abs(maps).max(0, keepdims=True),
        hint="share 0.3-0.9", help="|map| above a share of its largest", cli_flag="top_share"))
    return "top_share"


def test_a_new_threshold_rule_reaches_validation_the_stability_check_and_the_cli(top_share):
    from fnweb.cli.buildtemplates import parser
    from fnweb.decompose import decompose

    BuildConfig([PromptSource("builtin:factual")], threshold=top_share).validate()
    with pytest.raises(FnwebError, match="must lie strictly between 0 and 1"):
        BuildConfig([PromptSource("builtin:factual")], threshold=top_share, threshold_value=1.5).validate()
    assert threshold(planted_maps(), top_share)[:3].all()
    rng = np.random.default_rng(1)
    data = rng.laplace(size=(400, 3)) ** 3 @ rng.normal(size=(3, 40)) + 0.1 * rng.normal(size=(400, 40))
    stability = component_stability(decompose(torch.tensor(data, dtype=torch.float32), k=3), top_share, None, 2)
    assert len(stability.mask_iou) == 3 and all(0.0 <= v <= 1.0 for v in stability.mask_iou)
    assert parser().parse_args(["m", "d", "--threshold", top_share, "--top_share", "0.7"]).top_share == 0.7


# ---- metrics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(METRICS))
def test_every_metric_formats_and_knows_which_way_is_worse(key):
    metric = METRICS[key]
    assert metric.key == key and metric.better in ("lower", "higher") and metric.help
    assert metric.format(None) == "—" and metric.format(None, missing="n/a") == "n/a"
    text = metric.format(0.25, 0.05)
    assert "±" in text and text.startswith(("+" if metric.signed else "0", "2"))
    worse = 1.0 if metric.better == "lower" else -1.0
    assert metric.worse(worse, Stat(0.0, 0.1), 2.0) and not metric.worse(-worse, Stat(0.0, 0.1), 2.0)


@pytest.mark.parametrize("key", TOKEN_METRICS)
def test_every_per_token_metric_is_measured_and_the_unchanged_model_scores_its_fixed_value(key):
    torch.manual_seed(0)
    logits_a, logits_b = torch.randn(7, 50), torch.randn(7, 50)
    targets = torch.randint(0, 50, (7,))
    same, other = next_token_stats(logits_a, logits_a, targets), next_token_stats(logits_a, logits_b, targets)
    assert same["tokens"] == 7 and np.isfinite(other[key])
    if METRICS[key].unchanged is not None:
        assert same[key] == pytest.approx(METRICS[key].unchanged, abs=1e-6)
        assert other[key] != pytest.approx(METRICS[key].unchanged, abs=1e-6)


def test_compare_shows_every_per_token_metric(tiny_lm):
    from fnweb.compare import GenerationSettings, compare
    from fnweb.ui import render

    template = template_for(layout_of(tiny_lm.model), "neurons")
    done = compare(tiny_lm, "Name a colour.", template, [0], settings=GenerationSettings(max_new_tokens=4))
    assert all(set(c.metrics) == set(TOKEN_METRICS) for c in done.columns)
    frame = render.metrics_frame(done)
    assert all(METRICS[key].label in frame.columns for key in TOKEN_METRICS)
    assert all("±" in frame.iloc[-1][METRICS[key].label] for key in TOKEN_METRICS)  # the random control's draws


# ---- interventions ------------------------------------------------------------------------------


@pytest.mark.parametrize("site", list(SITES))
@pytest.mark.parametrize("mode", list(INTERVENTIONS))
def test_every_intervention_changes_the_channels_it_says_by_its_factor(mode, site):
    model = tiny.make_model("llama")
    layout = layout_of(model)
    template = template_for(layout, site)
    intervention = INTERVENTIONS[mode]
    masks = layer_masks(template, MaskSpec((0,), mode, alpha=ALPHA))
    network = torch.zeros(template.width, dtype=torch.bool)
    network[[1, 5, 9]] = True
    changed = network if intervention.acts_on_network else ~network
    assert torch.equal(masks[0].changed(), changed)
    plain, edited = layer0(model, site), layer0(model, site, {0: masks[0]})
    put = torch.from_numpy(getattr(template.stats, intervention.fill)[0][changed.numpy()]) if intervention.fill else 0.0
    assert torch.allclose(edited[:, changed], plain[:, changed] * intervention.factor(ALPHA) + put)
    assert torch.equal(edited[:, ~changed], plain[:, ~changed])
    touched = {0, 2} if intervention.acts_on_network else set(range(layout.n_layers))
    assert set(masks) == touched  # a layer without the network: left alone, or all of it changed
    share = masked_share(masks, layout.n_layers, template.width)
    assert intervention.network_share(share) == pytest.approx(5 / (3 * template.width))  # the network's 5 channels
    plan = plan_for(template, MaskSpec((0,), mode, alpha=ALPHA), mode, site, restrict=True)
    assert torch.equal(plan.allowed(0, template.width), (~changed).float())  # only what the mask leaves alone trains


@pytest.mark.parametrize("mode", list(INTERVENTIONS))
def test_every_intervention_says_what_it_does_in_a_reading(mode):
    from fnweb.experiment_results import LesionRow, _lesion_sentence

    intervention = INTERVENTIONS[mode]
    said = intervention.done_to("component 3", ALPHA)
    assert "component 3" in said and (f"{ALPHA:g}" in said) == intervention.takes_alpha
    row = LesionRow(component="3", ids=[3], neurons=40, share=0.02, prompts=6, network={"dce": 0.9},
                    random={"dce": Stat(0.3, 0.1)}, ratio={"dce": 3.0})
    assert _lesion_sentence(row, 5, "neurons", {"intervention": mode, "alpha": ALPHA}).startswith(said)


@pytest.mark.parametrize("mode", [name for name, i in INTERVENTIONS.items() if i.fill is None])
def test_lesion_and_preserve_hooks_are_a_plain_multiply_bit_for_bit(mode):
    model = tiny.make_model("llama")
    layout = layout_of(model)
    masks = layer_masks(template_for(layout, "neurons"), MaskSpec((0, 1), mode, alpha=ALPHA))
    with apply_masks(model, masks, "neurons"):
        hooked = logits(model)
    handles = [layout.module(model, layer, "neurons").register_forward_pre_hook(
        lambda _m, args, keep=mask.keep: (args[0] * keep,)) for layer, mask in masks.items()]
    try:
        assert torch.equal(logits(model), hooked)
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture
def halve(monkeypatch) -> str:
    """A new intervention for the test's length: the network's channels halved."""
    monkeypatch.setitem(INTERVENTIONS, "halve", Intervention("halve", "Halve", acts_on_network=True, scale=0.5,
                                                             help="the network's neurons halved", colour="#000000"))
    return "halve"


@pytest.mark.parametrize("site", list(SITES))
def test_a_new_intervention_entry_is_masked_stacked_and_baked(halve, site):
    model = tiny.make_model("llama")
    template = template_for(layout_of(model), site)
    spec = MaskSpec((0,), halve)
    assert spec.label() == "halve components 0"
    masks = layer_masks(template, spec)
    assert masks[0].keep[[1, 5, 9]].tolist() == [0.5] * 3 and masks[0].keep.sum() == template.width - 1.5
    plain, edited = layer0(model, site), layer0(model, site, masks)
    assert torch.allclose(edited[:, [1, 5, 9]], plain[:, [1, 5, 9]] * 0.5)
    stacked = stacked_masks(template, [None, spec])
    assert torch.equal(stacked[0].keep[1, 0], masks[0].keep) and bool((stacked[0].keep[0] == 1).all())
    with apply_masks(model, masks, site):
        hooked = logits(model)
    baked = copy.deepcopy(model)
    bake_masks(baked, masks, site)
    assert torch.allclose(logits(baked), hooked, atol=1e-5)


@pytest.mark.parametrize("site", list(SITES))
def test_a_mask_that_puts_values_in_gives_x_times_keep_plus_add(site):
    model = tiny.make_model("llama")
    width = layout_of(model).width(site)
    keep, add = torch.ones(width), torch.zeros(width)
    keep[[2, 3]], add[[2, 3]] = 0.0, torch.tensor([1.5, -2.0])  # as a mean ablation would
    edited = layer0(model, site, {0: LayerMask(keep, add)})
    assert torch.all(edited[:, 2] == 1.5) and torch.all(edited[:, 3] == -2.0)
    assert torch.equal(edited[:, 4:], layer0(model, site)[:, 4:])
    # Per-row, as Compare and the experiments stack them: row 0 unchanged, row 1 edited.
    stacked = LayerMask(torch.stack([torch.ones(width), keep]).unsqueeze(1),
                        torch.stack([torch.zeros(width), add]).unsqueeze(1))
    with torch.no_grad(), apply_masks(model, {0: stacked}, site):
        both = model(input_ids=IDS.expand(2, -1)).logits
    with torch.no_grad(), apply_masks(model, {0: LayerMask(keep, add)}, site):
        alone = model(input_ids=IDS).logits
    assert torch.allclose(both[0], logits(model)[0], atol=1e-5) and torch.allclose(both[1], alone[0], atol=1e-5)
    with pytest.raises(FnwebError, match="cannot be folded into the weights"):
        bake_masks(copy.deepcopy(model), {0: LayerMask(keep, add)}, site)
