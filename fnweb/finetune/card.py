"""The model card (README.md) of a fine-tuning run: one writer for the run folder and for the Hub.

``run_card`` writes the card from what a run folder holds (train_config, summary, the
mask as ``MaskFile`` reads it, the template, the adapter's base): a front matter that
``huggingface_hub.ModelCard`` parses (``base_model`` when it is a Hub id, ``library_name:
peft``, ``datasets``, tags including ``fnweb`` and ``mask-MODE``, and an ``fnweb`` block
with the settings and figures), then the figures, the settings and how to load it with
its mask. Training writes it into the run folder; a push to the Hub gives the repo id,
which adds how to download it, and keeps the text of a card that exists already (only
its metadata is refreshed). It knows nothing about training or the Hub's API.
"""

from __future__ import annotations

import json
from typing import Optional

from .. import __version__
from ..hubcard import front_matter, markdown_table
from ..ids import hub_model_id, is_hub_dataset
from ..templates import Template
from .runs import MaskFile

RUN_TAGS = ["fnweb", "functional-networks", "peft", "lora", "masked-fine-tuning"]
TRAIN_FIELDS = ("dataset", "model_id", "quantization", "lora_r", "lora_alpha", "lora_targets", "mask_mode",
                "control_of", "component_ids", "mask_layers", "restrict_updates", "learning_rate", "num_epochs",
                "max_steps", "batch_size", "grad_accum", "seed")
HUB_USAGE_MARK = "fnweb.hub import download_run"  # a card that says this already tells how to load it from the Hub

# Said wherever a card tells how to load a run: a run is data, and never chooses to run code.
REMOTE_CODE_NOTE = (
    "Loading runs no code from the base model's repo: fnweb's `load_run` uses `trust_remote_code=False` whatever "
    "this run's files say (a base model that needs custom code is refused), as `from_pretrained` does by default. "
    "Pass `trust_remote_code=True` yourself only if you trust that model's code."
)


def _fmt(value: Optional[float], digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


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


def _figures(summary: dict, prefix: str = "") -> dict:
    """Numeric entries of summary.json, flattened ('learning.task_loss_after': 1.9)."""
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update(_figures(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


def run_fields(train_config: dict, mask: MaskFile, template: Optional[Template], summary: dict) -> dict:
    """The ``fnweb`` block of a run card."""
    fields = {
        "kind": "run", "fnweb_version": __version__,
        "mask": mask.to_dict(), "template_components": len(template.components) if template else None,
        "template_site": template.site if template else None,
        "summary": _figures(summary),
        "train": {k: train_config[k] for k in TRAIN_FIELDS if train_config.get(k) is not None},
    }
    return {k: v for k, v in fields.items() if v not in (None, {}, [])}


def _base_model(adapter_config: dict, train_config: dict, template: Optional[Template]) -> tuple[Optional[str], str]:
    """(the base model's Hub id, or None; its name for people): the first Hub id among what the run says."""
    candidates = [adapter_config.get("base_model_name_or_path"), train_config.get("model_id"),
                  template.meta.model_id if template and template.meta else None]
    base = next((hub_model_id(c) for c in candidates if hub_model_id(c)), None)
    return base, base or next((c for c in candidates if c), "its base model")


def run_card(train_config: dict, summary: dict, mask: MaskFile, template: Optional[Template],
             adapter_config: Optional[dict] = None, repo_id: Optional[str] = None, existing: Optional[str] = None,
             merged: bool = False) -> str:
    """README.md for a run: in its folder (no ``repo_id``) or on the Hub (``repo_id``).

    ``existing``: a card the run has already; its text is kept and its metadata refreshed.
    ``merged``: the repo also holds ``merged/``, and the card says how to load it.
    """
    from huggingface_hub import ModelCard

    base, base_name = _base_model(adapter_config or {}, train_config, template)
    names = train_config.get("datasets") or [train_config.get("dataset")]
    metadata = {
        "base_model": base, "library_name": "peft",
        "datasets": list(dict.fromkeys(str(n) for n in names if n and is_hub_dataset(str(n)))),
        "fnweb": run_fields(train_config, mask, template, summary),
    }
    tags = [*RUN_TAGS, f"mask-{mask.mask_mode}"]
    if existing:
        card = ModelCard(existing, ignore_metadata_errors=True)
        data = {**card.data.to_dict(), **{k: v for k, v in metadata.items() if v not in (None, [], {})}}
        data["tags"] = list(dict.fromkeys(list(card.data.to_dict().get("tags") or []) + tags))
        body = card.text
    else:
        data, body = {**metadata, "tags": tags}, _body(base_name, mask, summary, train_config)
    if repo_id and HUB_USAGE_MARK not in body:
        body = body.rstrip() + "\n\n## Loading it from the Hub (with its mask)\n\n" + _HUB_USAGE.format(
            repo_id=repo_id, base=base_name)
    if merged and "subfolder=\"merged\"" not in body:
        body = body.rstrip() + "\n\n" + _MERGED_USAGE.format(repo_id=repo_id, baked=_baked(mask))
    return front_matter(data) + body


def _body(base_name: str, mask: MaskFile, summary: dict, train_config: dict) -> str:
    c = train_config
    steps = f" for {summary['steps']} of {summary.get('total_steps', 0)} steps ({summary.get('state', '')})" \
        if "steps" in summary else ""
    lora = f"LoRA r {c['lora_r']}" if "lora_r" in c else "LoRA"
    settings = [[k, f"`{json.dumps(c[k])}`"] for k in TRAIN_FIELDS if c.get(k) is not None]
    parts = [
        f"# LoRA adapter for {base_name}: {mask.plan().label()}\n",
        f"Fine-tuned with fnweb {__version__} on `{c.get('dataset', '?')}`{steps}: {lora}"
        + (f", alpha {c['lora_alpha']:g}" if "lora_alpha" in c else "")
        + (f", learning rate {c['learning_rate']:g}" if "learning_rate" in c else "")
        + (f", batch {c['batch_size']} x {c.get('grad_accum', 1)} accumulation" if "batch_size" in c else "")
        + (f", seed {c['seed']}" if "seed" in c else "") + ".\n",
        "## Learning and forgetting\n", figures_table(summary) + "\n",
    ]
    if summary.get("general_sets") is not None:
        parts.append("General prompts: built-in sets " + ", ".join(summary["general_sets"]) + " (not trained on).\n")
    if settings:
        parts += ["## Training settings\n", markdown_table(["setting", "value"], settings) + "\n"]
    parts += ["## Loading it\n", (_MASKED_USAGE if mask.spec is not None else _PLAIN_USAGE.format(base=base_name))
              + "\n" + REMOTE_CODE_NOTE + "\n"]
    return "\n".join(parts)


_MASKED_USAGE = '''This adapter was trained with a neuron mask (`template.json` + `mask.json`); load it with the mask,
as it was trained:

```python
from fnweb.finetune import load_run
run = load_run("path/to/this/folder")
with run.masked():
    ids = run.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
                                            add_generation_prompt=True, return_tensors="pt")
    out = run.model.generate(ids, max_new_tokens=40)
```

Plain `PeftModel.from_pretrained` loads the adapter without its mask: a different model.
'''

_PLAIN_USAGE = '''```python
from transformers import AutoModelForCausalLM
from peft import PeftModel
base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "path/to/this/folder")
```
'''

_HUB_USAGE = '''```python
from fnweb.hub import download_run
from fnweb.finetune import load_run

files = download_run("{repo_id}")  # adapter, template.json, mask.json, configs: checked like a local run
run = load_run(files.folder)  # the adapter on a private copy of its base model
with run.masked():  # the mask it was trained with
    ...
```

Without fnweb's fine-tuning module: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"),
files.folder)`, then `with fnweb.masks.masked(model, files.template, files.mask): ...`. The adapter was
trained with the mask on: loaded without it, it is a different model.

A run is data: `load_run` loads its base model with `trust_remote_code=False` whatever the run's files say
(a base model that needs custom code is refused). Pass `trust_remote_code=True` yourself, only if you trust
that model's code.
'''


def _baked(mask: MaskFile) -> str:
    if mask.spec is None:
        return "The run was trained without a mask."
    if not mask.mask_activations:
        return "It needs no mask: the run's mask only chose which weights could change."
    return ("The run's mask is baked into its down-projections (the masked channels' weights are zero), "
            "so it behaves as the adapter does with the mask on, with no hooks.")


_MERGED_USAGE = '''## The merged model

`merged/` holds the adapter folded into the base weights: a plain model. {baked}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo_id}", subfolder="merged")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}", subfolder="merged")
```
'''
