"""Fine-tuning inputs: labels and splits, and every bad input refused with a clear message, nothing written."""

import json
import sys

import pytest
import tiny
import torch
from ftkit import save_planted, small_config

from fnweb.errors import FnwebError
from fnweb.finetune import TrainConfig, finetune, prepare
from fnweb.finetune.data import IGNORE, collate, encode_example, split_pairs
from fnweb.prompts import Pair
from fnweb.templates import Template, TemplateMeta

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run faster on one thread

PAIR = Pair("What is 2 + 2?", "4")


# ---- labels and splits ---------------------------------------------------------------


def test_eos_is_learned_even_when_it_is_the_pad_token():
    tokenizer = tiny.make_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # the common setup that hid EOS from the original's loss
    eos = tokenizer.eos_token_id
    short = encode_example(tokenizer, PAIR, 512, "response")
    long = encode_example(tokenizer, Pair("Name three colours of the rainbow, please.", "Red, orange and yellow."),
                          512, "response")
    # The chat template ends the turn with EOS (and maybe a newline after it).
    assert eos in short.input_ids[short.loss_from:] and eos in long.input_ids[long.loss_from:]
    batch = collate([short, long], pad_id=eos)
    row = 0 if len(short.input_ids) < len(long.input_ids) else 1
    n = len((short, long)[row].input_ids)
    labels, ids = batch["labels"][row], batch["input_ids"][row]
    end = max(i for i in range(n) if ids[i] == eos)
    assert labels[end] == eos  # the real EOS is a target ...
    assert n < ids.numel() and torch.all(labels[n:] == IGNORE) and torch.all(ids[n:] == eos)  # ... padding is not
    loss_from = (short, long)[row].loss_from
    assert torch.all(labels[:loss_from] == IGNORE) and torch.all(labels[loss_from:n] == ids[loss_from:n])


def test_loss_on_all_tokens_labels_the_prompt_too():
    tokenizer = tiny.make_tokenizer()
    example = encode_example(tokenizer, PAIR, 512, "all")
    assert example.loss_from == 0
    assert torch.all(collate([example], 0)["labels"][0] != IGNORE)


def test_max_length_cuts_and_drops_examples_without_a_response():
    tokenizer = tiny.make_tokenizer()
    full = encode_example(tokenizer, PAIR, 512, "response")
    cut = encode_example(tokenizer, PAIR, full.loss_from + 1, "response")
    assert len(cut.input_ids) == full.loss_from + 1 and cut.n_labels == 1
    assert encode_example(tokenizer, PAIR, full.loss_from, "response") is None


def test_validation_split_is_seeded():
    pairs = [Pair(f"q{i}", f"a{i}") for i in range(20)]
    train, val = split_pairs(pairs, 0.1, seed=3)
    assert len(val) == 2 and len(train) == 18 and not set(train) & set(val)
    assert split_pairs(pairs, 0.1, seed=3) == (train, val)
    assert split_pairs(pairs, 0.1, seed=4)[1] != val
    assert split_pairs(pairs, 0.0, seed=3)[1] == []
    with pytest.raises(FnwebError, match="too few for a validation split"):
        split_pairs(pairs[:1], 0.1, seed=0)


# ---- bad inputs: each refused before anything is written ------------------------------


def refused(tiny_lm, config, match):
    with pytest.raises(FnwebError, match=match) as info:
        prepare(config, tiny_lm)
    assert not __import__("pathlib").Path(config.output_dir).exists()
    return str(info.value)


def test_dataset_without_usable_fields_lists_the_fields_seen(tiny_lm, tmp_path):
    data = tmp_path / "odd.jsonl"
    data.write_text("".join(json.dumps({"foo": i, "bar": "x"}) + "\n" for i in range(5)))
    message = refused(tiny_lm, small_config(tmp_path / "run", dataset=str(data)), "fields seen were: bar, foo")
    assert "prompt/response" in message


def test_dataset_with_prompts_only_needs_the_loss_on_all_tokens(tiny_lm, tmp_path):
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"Sentence number {i}."}) + "\n" for i in range(10)))
    refused(tiny_lm, small_config(tmp_path / "run", dataset=str(data)), "no responses")
    assert prepare(small_config(tmp_path / "run", dataset=str(data), loss_on="all"), tiny_lm).data.train


def test_a_missing_dataset_file_is_named(tiny_lm, tmp_path):
    refused(tiny_lm, small_config(tmp_path / "run", dataset=str(tmp_path / "nope.jsonl")), "not found")


def test_template_for_another_model_is_refused(tiny_lm, tmp_path):
    meta = TemplateMeta(model_id="other/model", site="neurons", n_layers=3, width=96, k=1, threshold="percentile",
                        threshold_value=98.0)
    path = Template(layers=[0, 1, 2], width=96, components={0: {0: [1, 2]}}, meta=meta).save(tmp_path / "t.json")
    refused(tiny_lm, small_config(tmp_path / "run", mask_mode="lesion", template_path=str(path)),
            "made for another model")


def test_component_ids_not_in_the_template_are_refused(tiny_lm, tmp_path):
    path = save_planted(tiny_lm.model, tmp_path)
    refused(tiny_lm, small_config(tmp_path / "run", mask_mode="preserve", template_path=path, component_ids=[0, 7]),
            "Component 7 is not in this template")
    with pytest.raises(FnwebError, match="not among the 3 components"):
        small_config(tmp_path / "run", mask_mode="preserve", component_ids=[5]).validate()


def test_bad_mask_layers_are_refused(tiny_lm, tmp_path):
    path = save_planted(tiny_lm.model, tmp_path)
    refused(tiny_lm, small_config(tmp_path / "run", mask_mode="lesion", template_path=path, mask_layers="0,9"),
            "outside this model")


@pytest.mark.parametrize("change,match", [
    ({"learning_rate": 0.0}, "Learning rate must be above 0"),
    ({"learning_rate": 5.0}, "Learning rate must be above 0"),
    ({"max_steps": 0}, "Max steps must be -1"),
    ({"max_steps": -5}, "Max steps must be -1"),
    ({"max_steps": -1, "num_epochs": 0}, "Epochs must lie between"),
    ({"batch_size": 0}, "Batch size must lie between 1 and 1024"),
    ({"batch_size": 5000}, "Batch size must lie between 1 and 1024"),
    ({"grad_accum": 0}, "Gradient accumulation"),
    ({"lora_r": 0}, "LoRA rank"),
    ({"lora_dropout": 1.0}, "LoRA dropout"),
    ({"validation_split": 0.9}, "Validation split"),
    ({"mask_mode": "erase"}, "Unknown mask mode 'erase'"),
    ({"restrict_updates": True}, "Restricted updates need a mask"),
    ({"quantization": "2bit"}, "Unknown quantization"),
    ({"dataset": ""}, "No dataset given"),
])
def test_settings_out_of_range_are_refused(tiny_lm, tmp_path, change, match):
    refused(tiny_lm, small_config(tmp_path / "run", **change), match)


def test_an_empty_output_folder_name_is_refused(tiny_lm):
    with pytest.raises(FnwebError, match="No output folder"):
        prepare(small_config(""), tiny_lm)


def test_an_unknown_lora_target_names_the_defaults(tiny_lm, tmp_path):
    refused(tiny_lm, small_config(tmp_path / "run", lora_targets=["c_attn"]), "default targets are: q_proj")


def test_an_existing_run_folder_is_never_overwritten_silently(tiny_lm, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FnwebError, match="already exists"):
        prepare(small_config(folder), tiny_lm)
    with pytest.raises(FnwebError, match="not an fnweb run folder"):  # even with overwrite: not a run
        prepare(small_config(folder, overwrite=True), tiny_lm)
    assert (folder / "notes.txt").read_text() == "mine"

    run_folder = tmp_path / "done"
    finetune(small_config(run_folder, max_steps=1), tiny_lm)
    with pytest.raises(FnwebError, match="already exists"):
        finetune(small_config(run_folder, max_steps=1), tiny_lm)
    result = finetune(small_config(run_folder, max_steps=2, overwrite=True), tiny_lm)
    assert result.summary["steps"] == 2


def test_quantized_training_where_bitsandbytes_cannot_run(monkeypatch, tiny_lm, tmp_path):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails, as on a machine without it
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    for quantization in ("4bit", "8bit"):
        message = refused(tiny_lm, small_config(tmp_path / "run", quantization=quantization), "cannot run here")
        assert "Train without quantization" in message


def test_config_round_trips_through_json(tmp_path):
    config = small_config(tmp_path / "run", mask_mode="random", component_ids=(0, 2), lora_targets="q_proj, v_proj")
    assert config.lora_targets == ["q_proj", "v_proj"] and config.component_ids == [0, 2]
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
