"""A few preserve-masked LoRA steps on the embedded model, with learning and forgetting figures."""

import math

import pytest
import torch

from fnweb.build import BuildConfig, build_template
from fnweb.finetune import TrainConfig, finetune, load_run
from fnweb.prompts import PromptSource

pytestmark = pytest.mark.usefixtures("one_thread")  # one thread is faster on a shared CPU


@pytest.mark.slow
def test_embedded_model_preserve_fine_tune_reports_learning_and_forgetting(embedded_lm, tmp_path):
    template = build_template(embedded_lm, BuildConfig(
        sources=[PromptSource("builtin:arithmetic")], samples_per_dataset=16, max_tokens=48, k=5, seed=0,
    )).template
    path = template.save(tmp_path / "template.json")
    before = embedded_lm.model.model.layers[3].mlp.down_proj.weight.detach().clone()
    config = TrainConfig(
        dataset="builtin:arithmetic", output_dir=str(tmp_path / "run"), max_steps=3, learning_rate=1e-3,
        batch_size=2, lora_r=8, mask_mode="preserve", template_path=str(path), component_ids=[0, 1, 2, 3, 4],
        general_per_set=1, max_eval_examples=4, eval_batch_size=6, eval_interval=0, max_seq_len=128,
    )
    result = finetune(config, embedded_lm)
    learning, forgetting = result.summary["learning"], result.summary["forgetting"]
    print(f"\npreserve components 0-4 ({100 * result.summary['masked_share']:.1f} % of neurons zeroed), 3 steps: "
          f"task loss {learning['task_loss_before']:.3f} -> {learning['task_loss_after']:.3f}; "
          f"KL from base {forgetting['kl_before']:.4f} -> {forgetting['kl_after']:.4f}; "
          f"perplexity {forgetting['ppl_base']:.2f} (base) -> {forgetting['ppl_after']:.2f}; "
          f"{result.summary['seconds_per_step']:.2f} s/step")

    assert result.state == "finished" and (result.folder / "adapter_model.safetensors").exists()
    assert learning["task_loss_after"] < learning["task_loss_before"]
    assert forgetting["kl_before"] > 0  # preserving a network alone already departs from the base model
    assert all(math.isfinite(v) for v in (forgetting["kl_after"], forgetting["ppl_after"], forgetting["ppl_base"]))
    assert torch.equal(embedded_lm.model.model.layers[3].mlp.down_proj.weight, before)  # the shared model is intact
    card = (result.folder / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "library_name: peft" in card

    run = load_run(result.folder, embedded_lm)
    ids = embedded_lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}],
                                                    add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad(), run.masked():
        out = run.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
