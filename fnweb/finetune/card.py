"""The model card (README.md) of a run folder: metadata, figures, and how to load it masked.

The front matter says ``base_model`` (when it is a Hub id) and ``library_name: peft``
so the Hub shows the adapter properly. It knows nothing about training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .config import TrainConfig

# Said wherever a card tells how to load a run: a run is data, and never chooses to run code.
REMOTE_CODE_NOTE = (
    "Loading runs no code from the base model's repo: fnweb's `load_run` uses `trust_remote_code=False` whatever "
    "this run's files say (a base model that needs custom code is refused), as `from_pretrained` does by default. "
    "Pass `trust_remote_code=True` yourself only if you trust that model's code."
)


def _fmt(value: Optional[float], digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _looks_like_hub_id(model_id: str) -> bool:
    return model_id.count("/") == 1 and not model_id.startswith((".", "/", "~")) and not Path(model_id).exists()


def figures_table(summary: dict) -> str:
    learning, forgetting = summary.get("learning", {}), summary.get("forgetting", {})
    return "\n".join([
        "| | before | after |",
        "|---|---|---|",
        f"| Task loss, validation split ({learning.get('task_tokens', 0)} tokens; learning) | "
        f"{_fmt(learning.get('task_loss_before'))} | {_fmt(learning.get('task_loss_after'))} |",
        f"| KL from the base model, general prompts ({forgetting.get('general_tokens', 0)} tokens; forgetting) | "
        f"{_fmt(forgetting.get('kl_before'))} | {_fmt(forgetting.get('kl_after'))} |",
        f"| Perplexity, general prompts (base model: {_fmt(forgetting.get('ppl_base'), 2)}) | "
        f"{_fmt(forgetting.get('ppl_before'), 2)} | {_fmt(forgetting.get('ppl_after'), 2)} |",
    ])


def model_card(config: TrainConfig, summary: dict, base_model: str) -> str:
    """README.md text for a run folder."""
    front = ["---"]
    if _looks_like_hub_id(base_model):
        front.append(f"base_model: {base_model}")
    front += ["library_name: peft", "tags:", "- fnweb", "- lora", "- functional-networks",
              f"- mask-{config.mask_mode}", "---", ""]
    masked = config.mask_mode != "none"
    body = [
        f"# LoRA adapter for {base_model}: {summary.get('mask', 'no mask')}",
        "",
        f"Fine-tuned with fnweb on `{config.dataset}` for {summary.get('steps', 0)} of "
        f"{summary.get('total_steps', 0)} steps ({summary.get('state', '')}): LoRA r {config.lora_r}, "
        f"alpha {config.lora_alpha:g}, learning rate {config.learning_rate:g}, batch {config.batch_size} x "
        f"{config.grad_accum} accumulation, seed {config.seed}.",
        "",
        "## Learning and forgetting",
        "",
        figures_table(summary),
        "",
        "General prompts: built-in sets " + ", ".join(summary.get("general_sets", [])) + " (not trained on).",
        "",
        "## Loading it",
        "",
    ]
    if masked:
        body += [
            "This adapter was trained with a neuron mask (`template.json` + `mask.json`); load it with the mask, "
            "as it was trained:",
            "",
            "```python",
            "from fnweb.finetune import load_run",
            "run = load_run(\"path/to/this/folder\")",
            "with run.masked():",
            "    ids = run.tokenizer.apply_chat_template([{\"role\": \"user\", \"content\": \"Hi\"}],",
            "                                            add_generation_prompt=True, return_tensors=\"pt\")",
            "    out = run.model.generate(ids, max_new_tokens=40)",
            "```",
            "",
            "Plain `PeftModel.from_pretrained` loads the adapter without its mask: a different model.",
            "",
            REMOTE_CODE_NOTE,
        ]
    else:
        body += ["```python", "from transformers import AutoModelForCausalLM", "from peft import PeftModel",
                 f"base = AutoModelForCausalLM.from_pretrained(\"{base_model}\")",
                 "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")", "```", "", REMOTE_CODE_NOTE]
    return "\n".join(front + body) + "\n"
