"""Masks zero exactly what they should, leave the rest alone, and always come off."""

import re

import numpy as np
import pytest
import tiny
import torch

from fnweb.archs import layout_of
from fnweb.capture import capture
from fnweb.errors import FnwebError
from fnweb.masks import (
    MaskSpec,
    apply_masks,
    chosen_neurons,
    component_ids_from_text,
    layer_masks,
    layers_from_text,
    masked,
    random_control,
)
from fnweb.templates import Template

SEQUENCES = [[5, 17, 42, 99, 7], [8, 9, 10], [300, 301, 302, 303, 304, 305, 306]]


def planted_template(layout, site="neurons") -> Template:
    width = layout.width(site)
    components = {
        0: {0: [1, 5, 9], 2: [0, width - 1]},
        1: {1: [3, 4], 2: [7]},
        2: {0: list(range(10, 20))},
    }
    return Template(layers=list(range(layout.n_layers)), width=width, components=components)


def activations(model, site, masks=None):
    if masks is None:
        return capture(model, SEQUENCES, site=site, storage="float32").matrix
    with apply_masks(model, masks, site):
        return capture(model, SEQUENCES, site=site, storage="float32").matrix


@pytest.mark.parametrize("site", ["neurons", "mlp_output"])
@pytest.mark.parametrize("mode", ["lesion", "preserve"])
def test_mask_zeroes_exactly_the_selected_neurons(site, mode):
    model = tiny.make_model("llama")
    layout = layout_of(model)
    template = planted_template(layout, site)
    spec = MaskSpec((0, 1), mode)
    masks = layer_masks(template, spec)
    chosen = chosen_neurons(template, spec)
    # Hooks sit on layer inputs/outputs; capture with a mask active reads the masked values
    # of the same layer, so compare layer 0 only where upstream layers are unchanged.
    plain = activations(model, site)
    hooked = activations(model, site, masks)
    width = layout.width(site)
    block0_plain, block0_hooked = plain[:, :width], hooked[:, :width]
    selected = np.zeros(width, dtype=bool)
    selected[chosen[0]] = True
    zeroed = selected if mode == "lesion" else ~selected
    assert torch.all(block0_hooked[:, torch.as_tensor(zeroed)] == 0)
    assert torch.equal(block0_hooked[:, torch.as_tensor(~zeroed)], block0_plain[:, torch.as_tensor(~zeroed)])
    assert (block0_plain[:, torch.as_tensor(zeroed)] != 0).any()  # they were not silent to begin with


def test_all_ones_mask_leaves_logits_bit_identical():
    model = tiny.make_model("llama")
    layout = layout_of(model)
    ids = torch.tensor([SEQUENCES[2]])
    with torch.no_grad():
        before = model(ids).logits
        ones = {layer: torch.ones(layout.intermediate_size) for layer in range(layout.n_layers)}
        with apply_masks(model, ones, "neurons"):
            during = model(ids).logits
    assert torch.equal(before, during)


def test_hooks_are_removed_after_an_exception():
    model = tiny.make_model("llama")
    layout = layout_of(model)
    template = planted_template(layout)
    ids = torch.tensor([SEQUENCES[0]])
    with torch.no_grad():
        before = model(ids).logits
        with pytest.raises(RuntimeError, match="boom"):
            with masked(model, template, MaskSpec((0,), "preserve")):
                assert not torch.equal(model(ids).logits, before)
                raise RuntimeError("boom")
        after = model(ids).logits
    assert torch.equal(before, after)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_same_mask_twice_equals_once():
    model = tiny.make_model("llama")
    template = planted_template(layout_of(model))
    ids = torch.tensor([SEQUENCES[0]])
    spec = MaskSpec((0,), "lesion")
    with torch.no_grad(), masked(model, template, spec):
        once = model(ids).logits
        with masked(model, template, spec):
            twice = model(ids).logits
    assert torch.equal(once, twice)


def test_random_control_matches_counts_and_avoids_the_selection():
    selected = {0: np.array([1, 2, 3]), 4: np.arange(50)}
    drawn = random_control(selected, width=100, seed=7)
    assert {k: len(v) for k, v in drawn.items()} == {0: 3, 4: 50}
    for layer in selected:
        assert not set(drawn[layer]) & set(selected[layer])
        assert len(set(drawn[layer])) == len(drawn[layer])
    assert all(np.array_equal(drawn[k], random_control(selected, 100, 7)[k]) for k in drawn)
    assert any(not np.array_equal(drawn[k], random_control(selected, 100, 8)[k]) for k in drawn)


def test_random_control_refuses_when_the_rest_is_too_small():
    with pytest.raises(FnwebError, match="too many"):
        random_control({0: np.arange(60)}, width=100, seed=0)


def test_generation_with_kv_cache_is_masked_at_every_step(tiny_lm):
    model = tiny_lm.model
    layout = layout_of(model)
    template = planted_template(layout)
    module = layout.module(model, 0, "neurons")
    # A forward hook sees the input after the mask's pre-hook has changed it.
    outputs = []
    handle = module.register_forward_hook(lambda _m, args, _out: outputs.append(args[0][..., [1, 5, 9]].clone()))
    try:
        with torch.no_grad(), masked(model, template, MaskSpec((0,), "lesion")):
            model.generate(torch.tensor([SEQUENCES[0]]), max_new_tokens=4, do_sample=False,
                           pad_token_id=0, min_new_tokens=4)
    finally:
        handle.remove()
    assert len(outputs) >= 4  # the prompt, then one call per new token with the cache
    assert all(torch.all(x == 0) for x in outputs)


def test_mask_spec_and_parsers_reject_bad_input():
    with pytest.raises(FnwebError, match="mode"):
        MaskSpec((0,), "erase")
    with pytest.raises(FnwebError, match="at least one"):
        MaskSpec((), "lesion")
    assert component_ids_from_text("[0, 3]") == [0, 3]
    assert component_ids_from_text("1,2 4") == [1, 2, 4]
    with pytest.raises(FnwebError, match="whole numbers"):
        component_ids_from_text("0,x")
    assert layers_from_text("0,2:5,8", 10) == (0, 2, 3, 4, 8)
    with pytest.raises(FnwebError, match="outside"):
        layers_from_text("0,12", 10)


def test_component_not_in_template_is_refused():
    model = tiny.make_model("llama")
    template = planted_template(layout_of(model))
    with pytest.raises(FnwebError, match="Component 7 is not in this template"):
        with masked(model, template, MaskSpec((7,), "lesion")):
            pass


def test_mask_can_be_restricted_to_some_layers():
    model = tiny.make_model("llama")
    template = planted_template(layout_of(model))
    masks = layer_masks(template, MaskSpec((0,), "preserve", layers=(2,)))
    assert list(masks) == [2]
    assert masks[2].keep.sum() == 2


# ---- preserve scope: the paper's all_layers, the original's network_layers ----------------


def original_preserve_hooks(model, template: Template, ids):
    """The original package's preserve masking, written from its description (original-system.md): in each
    layer where the components have channels, a pre-hook on the down-projection multiplies its input by
    zeros with those channels at 1; a layer where they have none is skipped."""
    layout = layout_of(model)
    handles = []
    for layer, channels in template.neurons(ids).items():
        mask = torch.zeros(layout.intermediate_size)
        mask[torch.as_tensor(channels)] = 1.0
        module = layout.module(model, layer, "neurons")
        handles.append(module.register_forward_pre_hook(lambda _m, args, m=mask: (args[0] * m,) + args[1:]))
    return handles


def test_preserve_scope_network_layers_gives_the_original_masks():
    model = tiny.make_model("llama")
    template = planted_template(layout_of(model))  # component 0 has channels in layers 0 and 2, none in 1
    ids = torch.tensor([SEQUENCES[2]])
    original = layer_masks(template, MaskSpec((0,), "preserve", preserve_scope="network_layers"))
    paper = layer_masks(template, MaskSpec((0,), "preserve"))
    assert sorted(original) == [0, 2] and sorted(paper) == [0, 1, 2]
    assert torch.all(paper[1].keep == 0)  # the paper's code zeroes a layer without network channels whole
    for layer in (0, 2):
        assert torch.equal(original[layer].keep, paper[layer].keep)
    handles = original_preserve_hooks(model, template, [0])
    try:
        with torch.no_grad():
            reference = model(ids).logits
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad(), masked(model, template, MaskSpec((0,), "preserve", preserve_scope="network_layers")):
        scoped = model(ids).logits
    with torch.no_grad(), masked(model, template, MaskSpec((0,), "preserve")):
        whole_model = model(ids).logits
    assert torch.equal(scoped, reference)
    assert (scoped - whole_model).abs().max() > 1e-3  # the two scopes differ where a layer has no network


def test_preserve_scope_leaves_lesions_alone_and_random_controls_follow_it():
    template = planted_template(layout_of(tiny.make_model("llama")))
    for scope in ("all_layers", "network_layers"):
        lesion = layer_masks(template, MaskSpec((0,), "lesion", preserve_scope=scope))
        assert sorted(lesion) == [0, 2]
    control = layer_masks(template, MaskSpec((0,), "preserve", random_seed=3, preserve_scope="network_layers"))
    assert sorted(control) == [0, 2] and [int(control[k].keep.sum()) for k in (0, 2)] == [3, 2]
    scoped = MaskSpec((0,), "preserve", preserve_scope="network_layers")
    assert scoped.label() == "preserve components 0 (network_layers)"
    assert MaskSpec((0,), "lesion", preserve_scope="network_layers").label() == "lesion components 0"
    with pytest.raises(FnwebError, match="Unknown preserve scope 'some'; choose all_layers or network_layers"):
        MaskSpec((0,), "preserve", preserve_scope="some")


@pytest.mark.parametrize("text, n_layers, expected", [
    ("0,2:5,8", 10, (0, 2, 3, 4, 8)), (":3", 10, (0, 1, 2)), ("7:", 10, (7, 8, 9)), ("1,,2", 10, (1, 2)),
    (":", 4, (0, 1, 2, 3)), ("", 10, None), ("  ", 10, None), (None, 10, None), ("3:", None, (3,)),
])
def test_mask_layers_that_select_layers(text, n_layers, expected):
    assert layers_from_text(text, n_layers) == expected


@pytest.mark.parametrize("text, n_layers, message", [
    ("2:1", 10, "the range '2:1' is empty"), ("5:5", 10, "the range '5:5' is empty"),
    ("2:-1", 10, "the range '2:-1' is empty"), (",", 10, "select no layer"), (" , ", 10, "select no layer"),
    ("15:", 12, "the range '15:' starts past this model's last layer, 11"), ("0,12", 10, "Mask layer 12 is outside"),
    ("0:20", 12, "the range '0:20' ends past this model's last layer, 11"), ("-1", None, "Mask layer -1 is outside"),
    ("0:99999999999", None, "the range '0:99999999999' ends past layer 1023"), ("-2:2", 10, "Mask layers -2, -1 are"),
    ("0,12,13,14,15", 10, "Mask layers 12..15 are outside this model's 0..9"),
    ("a", 10, "must look like '0,2:5,8'"), ("1:2:3", 10, "'1:2:3' is not a layer or a range"),
])
def test_mask_layers_that_select_nothing_or_too_much_are_errors(text, n_layers, message):
    with pytest.raises(FnwebError, match=re.escape(message)):
        layers_from_text(text, n_layers)


def test_component_ids_in_every_form_of_the_original():
    for given in ("0 1 2", "0,1,2", "[0,1,2]", "[0, 1, 2]", ["0", "1", "2"], ["[0,", "1,", "2]"], [0, 1, 2]):
        assert component_ids_from_text(given) == [0, 1, 2]
    for given, message in (("1.5", "whole numbers like '0,3'"), ([1.5], "must be a whole number"),
                           ([True], "must be a whole number"), (["0", "x"], "whole numbers like '0,3'")):
        with pytest.raises(FnwebError, match=re.escape(message)):
            component_ids_from_text(given)
