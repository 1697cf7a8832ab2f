"""Masked LoRA fine-tuning on a tiny model: every mode learns, masks hold, restriction holds, Stop saves."""

import json

import pytest
import torch
from ftkit import save_planted, small_config, step_losses

from fnweb.archs import layout_of
from fnweb.errors import FnwebError, Stopped
from fnweb.finetune import finetune, load_run, prepare, read_events
from fnweb.finetune.pipeline import execute
from fnweb.finetune.train import causal_lm_loss
from fnweb.masks import apply_masks
from fnweb.progress import StopFlag

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run faster on one thread

IDS = torch.tensor([[5, 17, 42, 99, 7, 8, 9, 10], [300, 301, 302, 303, 304, 305, 306, 307]])


@pytest.fixture(scope="module")
def planted(tiny_lm, tmp_path_factory):
    return save_planted(tiny_lm.model, tmp_path_factory.mktemp("templates"))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["none", "lesion", "preserve", "random"])
def test_each_mode_trains_and_its_loss_falls(tiny_lm, planted, tmp_path, mode):
    before = snapshot(tiny_lm.model)
    # The random control computes its template from the training prompts: that path is covered too.
    template = None if mode == "random" else planted
    config = small_config(tmp_path / mode, mask_mode=mode, template_path=template if mode != "none" else None,
                          component_ids=[2] if mode != "random" else [0])
    result = finetune(config, tiny_lm)

    assert result.state == "finished"
    learning = result.summary["learning"]
    assert learning["task_loss_after"] < learning["task_loss_before"]
    losses = step_losses(result.folder)
    assert len(losses) == 6 and losses[-1] < losses[0]
    steps = [e for e in read_events(result.folder) if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 7))
    assert all({"loss", "lr", "tokens_per_s", "seconds_left", "total"} <= set(e) for e in steps)
    for name in ("adapter_model.safetensors", "adapter_config.json", "train_config.json", "metrics.jsonl",
                 "summary.json", "README.md", "state.json", "mask.json"):
        assert (result.folder / name).exists(), name
    assert (result.folder / "template.json").exists() == (mode != "none")
    assert json.loads((result.folder / "state.json").read_text())["state"] == "finished"
    forgetting = result.summary["forgetting"]
    assert forgetting["kl_after"] >= 0 and forgetting["ppl_after"] > 1 and forgetting["general_tokens"] > 0
    if mode == "random":
        template = json.loads((result.folder / "template.json").read_text())
        assert template["name"] == "groupwise_v1" and template["fnweb"]["datasets"][0]["name"] == "builtin:sentiment"
        assert result.plan.spec.random_seed == 0 and result.plan.spec.mode == "lesion"
    # The shared model was never touched.
    assert all(torch.equal(v, before[k]) for k, v in tiny_lm.model.state_dict().items())
    assert not any(hasattr(m, "lora_A") for m in tiny_lm.model.modules())


def _capture_lora_inputs(model, layers, seen, recording=lambda: True):
    """Pre-hooks on the base layer and the LoRA path inside each wrapped down-projection."""
    layout = layout_of(model)
    handles = []
    for layer in layers:
        wrapped = layout.module(model, layer, "neurons")
        for part, module in (("base", wrapped.base_layer), ("lora", wrapped.lora_A["default"])):
            def hook(_m, args, layer=layer, part=part):
                if recording():
                    seen.append((layer, part, args[0].detach().clone()))
            handles.append(module.register_forward_pre_hook(hook))
    return handles


def test_lesioned_neurons_stay_silent_in_training_and_after_reloading(tiny_lm, planted, tmp_path):
    seen, handles, training = [], [], [False]

    def loss_fn(model, batch):  # records what the training steps' forward passes see, nothing else
        if not handles:
            handles.extend(_capture_lora_inputs(model, [0, 1, 2], seen, lambda: training[0]))
        training[0] = True
        try:
            return causal_lm_loss(model, batch)
        finally:
            training[0] = False

    result = finetune(small_config(tmp_path / "run", mask_mode="lesion", template_path=planted, component_ids=[0, 1],
                                   lora_targets=["down_proj", "up_proj"]), tiny_lm, loss_fn=loss_fn)
    for handle in handles:
        handle.remove()
    lesioned = {layer: (mask.keep == 0).nonzero().flatten() for layer, mask in result.plan.masks.items()}
    assert {part for _, part, _ in seen} == {"base", "lora"} and len(seen) >= 6 * 3 * 2
    for layer, part, x in seen:
        assert torch.all(x[..., lesioned[layer]] == 0), (layer, part)
        assert x.abs().sum() > 0

    run = load_run(result.folder, tiny_lm)
    seen.clear()
    handles = _capture_lora_inputs(run.model, [0, 1, 2], seen)
    try:
        with torch.no_grad(), run.masked():
            run.model(IDS)
        for layer, part, x in seen:
            assert torch.all(x[..., lesioned[layer]] == 0), (layer, part)
        seen.clear()
        with torch.no_grad():
            run.model(IDS)  # without the mask the same neurons fire: the check above is not vacuous
        assert any(x[..., lesioned[layer]].abs().sum() > 0 for layer, _, x in seen)
    finally:
        for handle in handles:
            handle.remove()


def _neuron_weights(layout, model, layer, site):
    """(weight, axis of the neuron index) of each MLP module that holds the layer's neurons at ``site``."""
    block = dict(model.named_modules())[layout.block_paths[layer]]
    mlp = block.mlp
    if site == "mlp_output":
        return {"down_proj": (mlp.down_proj.weight, 0)}
    return {"down_proj": (mlp.down_proj.weight, 1), "up_proj": (mlp.up_proj.weight, 0),
            "gate_proj": (mlp.gate_proj.weight, 0)}


@pytest.mark.parametrize("mode,site,mask_activations", [
    ("preserve", "neurons", True), ("lesion", "neurons", True), ("preserve", "mlp_output", True),
    ("preserve", "neurons", False),  # updates only: the network alone learns, the model runs unmasked
])
def test_restricted_updates_leave_every_other_weight_bit_identical(tiny_lm, tmp_path, mode, site, mask_activations):
    template = save_planted(tiny_lm.model, tmp_path, site)
    config = small_config(tmp_path / "run", mask_mode=mode, template_path=template, component_ids=[2],
                          restrict_updates=True, weight_decay=0.5, learning_rate=5e-2, mask_layers="0,2",
                          mask_activations=mask_activations)
    result = finetune(config, tiny_lm)
    assert (result.summary["forgetting"]["kl_before"] == 0) == (not mask_activations)
    if mode == "preserve":  # trainable: r per allowed neuron in the pinned factor, the other factor whole
        layout, r = layout_of(tiny_lm.model), 4
        allowed = sum(int(result.plan.allowed(layer, layout.width(site)).sum()) for layer in (0, 2))
        modules = 3 if site == "neurons" else 1  # down, up, gate (or down alone); layer 1 has none
        other = r * (layout.hidden_size if site == "neurons" else layout.intermediate_size)
        assert result.summary["trainable_parameters"] == modules * (allowed * r + 2 * other)
    assert json.loads((result.folder / "mask.json").read_text())["mask_activations"] == mask_activations
    assert result.summary["learning"]["task_loss_after"] < result.summary["learning"]["task_loss_before"]
    base = dict(tiny_lm.model.named_parameters())
    layout = layout_of(tiny_lm.model)
    width = layout.width(site)
    for merged in (result.model.merge_and_unload(), load_run(result.folder, tiny_lm, merge=True).model):
        params = dict(merged.named_parameters())
        neuron_params, changed = set(), 0
        for layer in range(layout.n_layers):
            allowed = result.plan.allowed(layer, width)
            for name, (weight, axis) in _neuron_weights(layout, merged, layer, site).items():
                key = next(k for k, v in params.items() if v is weight)
                neuron_params.add(key)
                frozen = torch.ones(width, dtype=torch.bool) if allowed is None else allowed == 0
                assert torch.equal(weight.index_select(axis, frozen.nonzero().flatten()),
                                   base[key].index_select(axis, frozen.nonzero().flatten())), (layer, name)
                changed += int((weight != base[key]).sum())
        assert changed > 0  # the allowed neurons did learn
        for key, value in params.items():
            if key not in neuron_params:
                assert torch.equal(value, base[key]), key
    if mode == "preserve":  # preserve: no adapter where no mask keeps a neuron (layer 1 is unmasked)
        assert not any(".layers.1." in name for name, m in result.model.named_modules() if hasattr(m, "lora_A"))


def test_without_restriction_lora_also_changes_the_masked_neurons_weights(tiny_lm, planted, tmp_path):
    """Why restriction exists: a plain masked LoRA run rewrites weights of neurons the mask silences."""
    config = small_config(tmp_path / "run", mask_mode="lesion", template_path=planted, component_ids=[2],
                          weight_decay=0.5, lora_targets=["down_proj"])
    result = finetune(config, tiny_lm)
    merged = result.model.merge_and_unload()
    lesioned = (result.plan.masks[0].keep == 0).nonzero().flatten()
    down = merged.model.layers[0].mlp.down_proj.weight
    assert not torch.equal(down[:, lesioned], tiny_lm.model.model.layers[0].mlp.down_proj.weight[:, lesioned])


def test_stop_during_the_first_step_saves_an_adapter_that_reproduces_the_model(tiny_lm, planted, tmp_path):
    stop = StopFlag()

    def loss_fn(model, batch):
        stop.set()  # pressed while step 1 runs
        return causal_lm_loss(model, batch)

    config = small_config(tmp_path / "run", mask_mode="lesion", template_path=planted, component_ids=[2],
                          max_steps=50)
    result = finetune(config, tiny_lm, stop=stop, loss_fn=loss_fn)
    assert result.state == "stopped" and result.summary["steps"] == 1
    assert "Stopped at step 1 of 50" in result.message
    state = json.loads((result.folder / "state.json").read_text())
    assert state["state"] == "stopped" and state["step"] == 1
    assert [e["state"] for e in read_events(result.folder) if e["event"] == "end"] == ["stopped"]

    run = load_run(result.folder, tiny_lm)
    with torch.no_grad():
        with apply_masks(result.model, result.plan.hooks, result.plan.site):
            expected = result.model(IDS).logits
        with run.masked():
            got = run.model(IDS).logits
        unmasked = run.model(IDS).logits
        with apply_masks(result.model, {}, "neurons"), result.model.disable_adapter():
            base = result.model(IDS).logits
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, base, atol=1e-4)  # one step did change the model ...
    assert not torch.allclose(got, unmasked, atol=1e-4)  # ... and the mask matters


def test_stop_before_training_saves_nothing_but_says_so(tiny_lm, planted, tmp_path):
    stop = StopFlag()
    stop.set()
    with pytest.raises(Stopped, match="before the first step"):
        finetune(small_config(tmp_path / "run"), tiny_lm, stop=stop)
    folder = tmp_path / "run"
    assert json.loads((folder / "state.json").read_text())["state"] == "stopped"
    assert not (folder / "adapter_model.safetensors").exists()


def test_out_of_memory_is_reported_with_what_to_lower(tiny_lm, tmp_path):
    def loss_fn(model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(FnwebError, match="Out of memory at step 1") as info:
        finetune(small_config(tmp_path / "run"), tiny_lm, loss_fn=loss_fn)
    assert "batch size" in str(info.value) and "max sequence length" in str(info.value)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["state"] == "failed" and "Out of memory" in state["message"]


def test_a_nan_loss_stops_the_run_without_saving(tiny_lm, tmp_path):
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        loss = causal_lm_loss(model, batch)
        return loss * float("nan") if len(calls) == 3 else loss

    with pytest.raises(FnwebError, match="loss became nan at step 3"):
        finetune(small_config(tmp_path / "run"), tiny_lm, loss_fn=loss_fn)
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "run" / "state.json").read_text())["state"] == "failed"


def test_prepare_checks_everything_before_writing(tiny_lm, planted, tmp_path):
    run = prepare(small_config(tmp_path / "run", mask_mode="preserve", template_path=planted), tiny_lm)
    assert not (tmp_path / "run").exists()
    assert run.total_steps == 6 and run.task_set == "validation" and run.general
    assert {"sentiment"} & set(run.general_names) == set()  # forgetting uses sets not trained on
    result = execute(run)
    assert result.summary["general_sets"] == run.general_names
