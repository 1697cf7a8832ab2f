"""Capture keeps exactly the real tokens' activations, and its column statistics are exact."""

import copy

import pytest
import torch

from fnweb.archs import layout_of
from fnweb.capture import capture
from fnweb.decompose import column_moments
from fnweb.errors import FnwebError, Stopped
from fnweb.progress import StopFlag

SEQUENCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [15, 16, 17, 18, 19, 20, 21], [22]]


def one_by_one(model, sequences, site="neurons"):
    """Each sequence alone (no padding), site activations stacked layer after layer."""
    layout = layout_of(model)
    rows = []
    for seq in sequences:
        per_layer = []
        handles = [layout.module(model, layer, site).register_forward_pre_hook(
            lambda _m, args, keep=per_layer: keep.append(args[0].reshape(-1, args[0].shape[-1]).clone()))
            for layer in range(layout.n_layers)]
        try:
            with torch.inference_mode():
                model(input_ids=torch.tensor([seq]))
        finally:
            for handle in handles:
                handle.remove()
        rows.append(torch.cat(per_layer, dim=1))
    return torch.cat(rows)


def test_batched_capture_equals_one_sequence_at_a_time(tiny_lm):
    acts = capture(tiny_lm.model, SEQUENCES, batch_size=3, storage="float32")
    # Rows come in length-sorted batch order; compare as sets of rows by sorting both.
    expected = one_by_one(tiny_lm.model, SEQUENCES)
    assert acts.matrix.shape == expected.shape
    key = lambda m: m[torch.argsort(m[:, 0])]  # noqa: E731
    assert torch.allclose(key(acts.matrix), key(expected), atol=1e-5)


def test_statistics_match_the_stored_matrix(tiny_lm):
    acts = capture(tiny_lm.model, SEQUENCES, batch_size=2, storage="float32")
    mean, std = column_moments(acts.matrix)
    assert torch.allclose(acts.mean, mean, atol=1e-5) and torch.allclose(acts.std, std, atol=1e-5)


def test_statistics_stay_exact_when_a_mean_dwarfs_its_spread(tiny_lm):
    # Sums of squares in float32 lose a channel whose mean is 10^4 times its spread,
    # unless they are shifted: the capture's are.
    module = layout_of(tiny_lm.model).module(tiny_lm.model, 0, "neurons")
    handle = module.register_forward_pre_hook(lambda _m, args: (args[0] * 1e-3 + 50.0,))
    try:
        acts = capture(tiny_lm.model, SEQUENCES * 4, batch_size=3, storage="float32")
    finally:
        handle.remove()
    exact = acts.matrix.double()
    assert torch.allclose(acts.mean.double(), exact.mean(0), rtol=1e-6)
    assert torch.allclose(acts.std.double(), exact.std(0, unbiased=False), rtol=1e-3, atol=1e-7)


def test_a_bfloat16_model_gets_float32_statistics(tiny_lm):
    model = copy.deepcopy(tiny_lm.model).to(torch.bfloat16)
    acts = capture(model, SEQUENCES, batch_size=2, storage="bfloat16")
    assert acts.matrix.dtype == torch.bfloat16 and acts.mean.dtype == torch.float32
    mean, std = column_moments(acts.matrix)
    assert torch.allclose(acts.mean, mean, atol=1e-4) and torch.allclose(acts.std, std, rtol=1e-2, atol=1e-4)


def test_chosen_layers_only(tiny_lm):
    full = capture(tiny_lm.model, SEQUENCES, storage="float32")
    some = capture(tiny_lm.model, SEQUENCES, layers=[1], storage="float32")
    assert some.layers == [1] and torch.equal(some.matrix, full.layer_block(1))


def test_massive_activations_stay_finite_in_float16(tiny_lm):
    module = layout_of(tiny_lm.model).module(tiny_lm.model, 0, "neurons")
    handle = module.register_forward_pre_hook(lambda _m, args: (args[0] * 1e9,))
    try:
        acts = capture(tiny_lm.model, [[5, 6, 7, 8, 9]], storage="float16")
    finally:
        handle.remove()
    assert torch.isfinite(acts.matrix).all() and acts.matrix.abs().max() == 65504


@pytest.mark.parametrize("sequences, layers, message", [
    ([[1, 2], []], None, "at least one token"),
    ([[1, 2]], [99], "Layers must lie in"),
])
def test_bad_input_is_refused(tiny_lm, sequences, layers, message):
    with pytest.raises(FnwebError, match=message):
        capture(tiny_lm.model, sequences, layers=layers)


def test_stop_leaves_no_hooks_behind(tiny_lm):
    stop = StopFlag()
    stop.set()
    with pytest.raises(Stopped):
        capture(tiny_lm.model, SEQUENCES, stop=stop)
    layout = layout_of(tiny_lm.model)
    assert all(not layout.module(tiny_lm.model, layer, "neurons")._forward_pre_hooks
               for layer in range(layout.n_layers))
