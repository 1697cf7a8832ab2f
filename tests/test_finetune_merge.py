"""A merged run is the run with its mask on: adapter folded in, masked channels zeroed in the weights."""

import json
import shutil

import pytest
import tiny
import torch
from ftkit import planted_template, small_config

from fnweb.errors import FnwebError
from fnweb.finetune import finetune, load_run
from fnweb.finetune.merge import merged_run, save_merged
from fnweb.models import LoadedModel, ModelRequest

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run faster on one thread

IDS = torch.tensor([[5, 17, 42, 99, 7, 23, 61]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def trained_run(tokenizer, tmp_path, arch, site, mode="lesion", **changes):
    model_id = f"tiny-{arch}"
    lm = LoadedModel(tiny.make_model(arch), tokenizer, ModelRequest(model_id=model_id))
    template = planted_template(lm.model, site, model_id=model_id).save(tmp_path / "template.json")
    config = small_config(tmp_path / "run", model_id=model_id, mask_mode=mode, template_path=str(template),
                          component_ids=[0, 2], site=site, max_steps=2, **changes)
    return lm, finetune(config, lm).folder


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])  # Linear with and without bias, GPT-2's Conv1D
@pytest.mark.parametrize("site", ["neurons", "mlp_output"])
def test_the_merged_model_computes_what_the_run_computes_under_its_mask(tokenizer, tmp_path, arch, site):
    lm, folder = trained_run(tokenizer, tmp_path, arch, site)
    run = load_run(folder, lm=lm)
    with run.masked():
        expected = logits(run.model)
    merged = merged_run(folder, lm=lm)
    assert not hasattr(merged.model, "peft_config")  # a plain model, no hooks
    assert torch.allclose(logits(merged.model), expected, atol=1e-4)
    assert not torch.allclose(logits(run.model), expected, atol=1e-4)  # the mask matters
    assert torch.allclose(logits(lm.model), logits(tiny.make_model(arch)))  # the shared base is untouched


def test_a_saved_merged_model_loads_with_plain_transformers(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm, folder = trained_run(tokenizer, tmp_path, "llama", "neurons", mode="preserve")
    run = load_run(folder, lm=lm)
    with run.masked():
        expected = logits(run.model)
    saved = save_merged(merged_run(folder, lm=lm), tmp_path / "merged")
    assert (saved / "model.safetensors").exists() and not list(saved.glob("*.bin"))
    plain = AutoModelForCausalLM.from_pretrained(saved)
    assert torch.allclose(logits(plain), expected, atol=1e-4)
    assert AutoTokenizer.from_pretrained(saved)("hello").input_ids == tokenizer("hello").input_ids


def test_a_quantized_run_is_not_merged(tokenizer, tmp_path):
    lm, folder = trained_run(tokenizer, tmp_path, "llama", "neurons")
    qlora = tmp_path / "qlora"
    shutil.copytree(folder, qlora)
    config = json.loads((qlora / "train_config.json").read_text())
    (qlora / "train_config.json").write_text(json.dumps({**config, "quantization": "4bit"}))
    with pytest.raises(FnwebError, match="4bit base model .*Share the adapter alone"):
        merged_run(qlora, lm=lm)
