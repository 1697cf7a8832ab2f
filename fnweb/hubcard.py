"""Model cards (README.md with Hub metadata) for shared templates and runs, and a coverage image.

``template_card`` and ``run_card`` return the text of a Hub model card: a YAML front
matter that ``huggingface_hub.ModelCard`` parses (``base_model``, ``datasets``,
``tags`` including ``fnweb``, ``library_name: peft`` for runs, and an ``fnweb`` block
with the settings), then a body with the coverage table or the run's figures and how
to load it (and, when the template keeps cards, what each component does).
``coverage_png`` draws the component x layer coverage as a PNG (no plotting library
needed). This module knows nothing about the network.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from . import __version__
from .cards import DIRECT_NOTE, shown, stored_cards
from .models import EMBEDDED_HUB_ID, EMBEDDED_ID
from .prompts import LOCAL_SUFFIXES
from .templates import TEMPLATE_FILENAME, Template

HEATMAP_FILENAME = "coverage.png"
TEMPLATE_TAGS = ["fnweb", "functional-networks", "ica", "interpretability"]
RUN_TAGS = ["fnweb", "functional-networks", "peft", "lora", "masked-fine-tuning"]


# ---- metadata helpers ----

def hub_model_id(model_id: Optional[str]) -> Optional[str]:
    """The Hub id a model id stands for (the embedded copy's original), or None for local folders."""
    if not model_id:
        return None
    if model_id == EMBEDDED_ID:
        return EMBEDDED_HUB_ID
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if "/" not in model_id or Path(model_id).expanduser().exists():
        return None
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        return None
    return model_id


def hub_datasets(names: list[str]) -> list[str]:
    """The names that are Hub datasets (not built-in sets, not local files)."""
    keep = []
    for name in names:
        if name.startswith("builtin:") or Path(name).suffix.lower() in LOCAL_SUFFIXES:
            continue
        if name not in keep:
            keep.append(name)
    return keep


def _front_matter(data: dict) -> str:
    from huggingface_hub import ModelCardData

    clean = {k: v for k, v in data.items() if v not in (None, [], {})}
    return "---\n" + ModelCardData(**clean).to_yaml() + "\n---\n"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- templates ----

def template_fields(template: Template) -> dict:
    """The ``fnweb`` block of a template card."""
    meta = template.meta
    fields = {"kind": "template", "file": TEMPLATE_FILENAME, "components": len(template.components),
              "layers": len(template.layers), "width": template.width}
    if meta is not None:
        fields.update({
            "model_id": meta.model_id, "model_revision": meta.model_revision, "site": meta.site, "k": meta.k,
            "threshold": meta.threshold, "threshold_value": meta.threshold_value, "seed": meta.seed,
            "datasets": [d.get("name") for d in meta.datasets], "samples_per_dataset": meta.samples_per_dataset,
            "max_tokens": meta.max_tokens, "n_tokens": meta.n_tokens, "standardise": meta.standardise,
            "fnweb_version": meta.fnweb_version or __version__, "created": meta.created,
        })
    else:
        fields["fnweb_version"] = __version__
    return {k: v for k, v in fields.items() if v is not None}


def template_card(template: Template, repo_id: str, heatmap: Optional[str] = None) -> str:
    """README.md for a template repo; ``heatmap`` is the image's file name in the repo, if any."""
    meta = template.meta
    fields = template_fields(template)
    datasets = [d.get("name", "") for d in meta.datasets] if meta else []
    front = _front_matter({
        "base_model": hub_model_id(meta.model_id) if meta else None,
        "datasets": hub_datasets(datasets),
        "tags": TEMPLATE_TAGS,
        "fnweb": fields,
    })
    model = meta.model_id if meta else "an unrecorded model"
    parts = [
        front,
        f"# Functional-network template: {repo_id.split('/')[-1]}\n",
        f"ICA functional networks of **{model}**, made with fnweb {fields['fnweb_version']}: "
        f"{len(template.components)} components, each a set of channels per layer "
        f"({len(template.layers)} layers x {template.width} channels"
        + (f" at the `{meta.site}` site" if meta else "") + ").\n",
    ]
    if meta:
        settings = [
            ["model", f"`{meta.model_id}`" + (f" @ `{meta.model_revision}`" if meta.model_revision else "")],
            ["datasets", ", ".join(f"`{d}`" for d in datasets) or "-"],
            ["samples per dataset", meta.samples_per_dataset], ["tokens captured", f"{meta.n_tokens:,}"],
            ["k (ICA components)", meta.k], ["site", meta.site],
            ["threshold", f"{meta.threshold} {meta.threshold_value:g}"], ["seed", meta.seed],
            ["standardised", meta.standardise], ["created", meta.created or "-"],
        ]
        parts += ["## Settings\n", _table(["setting", "value"], settings) + "\n"]
    coverage = template.coverage()
    stable = bool(coverage) and all("stability" in r for r in coverage)
    rows = [[r["component"], f"{r['channels']:,}", r["layers"], f"{100 * r['share']:.2f} %"]
            + ([f"{r['stability']:.2f}", f"{r['mask_stability']:.2f}"] if stable else []) for r in coverage]
    header = ["component", "channels", "layers", "share of all channels"]
    header += ["stability (map)", "stability (mask)"] if stable else []
    parts += ["## Coverage\n", _table(header, rows) + "\n"]
    if stable:
        parts += [f"Stability: the mean matched |correlation| of each component's map, and the mean IoU of its "
                  f"mask, over {template.stability()['runs']} re-runs of the PCA and ICA on bootstrap resamples "
                  "of the tokens (1: found every time).\n"]
    if heatmap:
        ids = template.component_ids or [0]
        parts += [f"![Coverage: rows are components {ids[0]}..{ids[-1]} from the top, columns are layers from the "
                  f"left; darker is a larger share of the layer's channels (square-root scale)]({heatmap})\n"]
    parts += _cards_section(template)
    base = hub_model_id(meta.model_id) if meta else None
    parts += ["## How to load it\n", _TEMPLATE_USAGE.format(repo_id=repo_id, model=base or model,
                                                             file=TEMPLATE_FILENAME)]
    return "\n".join(parts)


def _md(text: str) -> str:
    """Text shown literally in Markdown (tokens such as <|im_end|> or `*` included)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join("\\" + ch if ch in "\\`*_[]|#" else ch for ch in text)


def _cards_section(template: Template, contexts: int = 3) -> list[str]:
    """What each component does, from the template's stored cards (nothing when it has none)."""
    cards = stored_cards(template)
    if cards is None:
        return []
    lines = ["## What the components do\n",
             "Each component's strongest contexts (its token in bold; the value is the component's signal there, "
             "in standard deviations over the build's tokens) and the tokens its neurons promote by their "
             f"{DIRECT_NOTE}. Labels are made automatically from these. `python -m fnweb explain` prints the "
             "full cards.\n"]
    for c, card in sorted(cards.components.items()):
        lines.append(f"**Component {c}**: {card.label}\n")  # the label's tokens are code spans already
        for context in card.top[:contexts]:
            pieces = [_md(shown(piece)) for piece in context.pieces]
            token = pieces[context.at]
            space = token[: len(token) - len(token.lstrip())]  # bold does not open on a space
            pieces[context.at] = f"{space}**{token.strip() or '␣'}**"
            lines.append(f"- {context.value:.2f} · …{''.join(pieces)}…")
        if card.promotes:
            lines.append("- promotes " + " ".join(f"`{shown(e.piece).strip() or '␣'}`" for e in card.promotes[:5]))
        lines.append("")
    return lines


_TEMPLATE_USAGE = '''With fnweb (the template is validated like a local file):

```python
from fnweb.hub import load_template_from_hub
from fnweb.masks import MaskSpec, masked
from fnweb.models import load_model

template = load_template_from_hub("{repo_id}")
lm = load_model("{model}")
with masked(lm.model, template, MaskSpec(components=(0,), mode="lesion")):
    ...  # generate or score with component 0 lesioned
```

Without fnweb, `{file}` is plain JSON: `templates[component][layer]` lists the channel
indices (the original `global_templates.json` layout, plus an `fnweb` block of settings):

```python
import json
from huggingface_hub import hf_hub_download

data = json.load(open(hf_hub_download("{repo_id}", "{file}")))
```
'''


# ---- runs ----

def _figures(summary: dict, prefix: str = "") -> list[list]:
    """Numeric entries of summary.json, flattened to (name, value) rows ('learning.task_loss')."""
    rows = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _figures(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append([name, value])
    return rows


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


TRAIN_FIELDS = ("dataset", "model_id", "quantization", "lora_r", "lora_alpha", "lora_targets", "mask_mode",
                "control_of", "component_ids", "mask_layers", "restrict_updates", "learning_rate", "num_epochs",
                "max_steps", "batch_size", "grad_accum", "seed")


def run_fields(adapter_config: dict, train_config: dict, mask: Optional[dict], template: Optional[Template],
               summary: dict) -> dict:
    """The ``fnweb`` block of a run card."""
    fields = {
        "kind": "run", "fnweb_version": __version__,
        "mask": mask, "template_components": len(template.components) if template else None,
        "template_site": template.site if template else None,
        "summary": {r[0]: r[1] for r in _figures(summary)},
        "train": {k: train_config[k] for k in TRAIN_FIELDS if train_config.get(k) is not None},
    }
    return {k: v for k, v in fields.items() if v not in (None, {}, [])}


def _train_datasets(train_config: dict) -> list[str]:
    names = train_config.get("datasets") or [train_config.get("dataset")]
    return [str(n) for n in names if n]


def run_card(repo_id: str, adapter_config: dict, train_config: dict, mask: Optional[dict],
             template: Optional[Template], summary: dict, existing: Optional[str] = None,
             merged: bool = False) -> str:
    """README.md for a run repo. An existing card keeps its text; its metadata is refreshed.

    ``merged``: the repo also holds ``merged/``, and the card says how to load it.
    """
    from huggingface_hub import ModelCard

    candidates = [adapter_config.get("base_model_name_or_path"), train_config.get("model_id"),
                  template.meta.model_id if template and template.meta else None]
    base = next((hub_model_id(c) for c in candidates if hub_model_id(c)), None)  # the first that is a Hub id
    base_id = base or next((c for c in candidates if c), None)
    metadata = {
        "base_model": base, "library_name": "peft", "datasets": hub_datasets(_train_datasets(train_config)),
        "fnweb": run_fields(adapter_config, train_config, mask, template, summary),
    }
    if existing:
        card = ModelCard(existing, ignore_metadata_errors=True)
        data = card.data.to_dict()
        data.update({k: v for k, v in metadata.items() if v not in (None, [], {})})
        data["tags"] = list(dict.fromkeys(list(data.get("tags") or []) + RUN_TAGS))
        body = card.text
        if "fnweb.hub import download_run" not in body:  # say how to load it from the Hub with its mask
            body = body.rstrip() + "\n\n## Loading it from the Hub (with its mask)\n\n" + _RUN_USAGE.format(
                repo_id=repo_id, base=base or base_id)
    else:
        data = {**metadata, "tags": RUN_TAGS}
        body = _run_body(repo_id, base, base_id, mask, summary, train_config)
    if merged and "subfolder=\"merged\"" not in body:
        body = body.rstrip() + "\n\n" + _MERGED_USAGE.format(repo_id=repo_id, baked=_baked(mask))
    return _front_matter(data) + body


def _run_body(repo_id, base, base_id, mask, summary, train_config) -> str:
    if mask:
        how = (f"with a functional-network mask applied ({mask.get('mode', '?')} of components "
               f"{', '.join(map(str, mask.get('components', [])))} of the included template"
               + (", as a matched random control" if mask.get("random_seed") is not None else "") + ")")
    else:
        how = "without a mask"
    parts = [
        f"# LoRA fine-tune with fnweb: {repo_id.split('/')[-1]}\n",
        f"A LoRA adapter for **{base_id or 'its base model'}**, trained with fnweb {__version__} {how}.\n",
    ]
    figures = _figures(summary)
    if figures:
        rows = [[name, _shown(value)] for name, value in figures]
        parts += ["## Learning and forgetting\n", _table(["figure", "value"], rows) + "\n"]
    settings = [[k, f"`{json.dumps(train_config[k])}`"] for k in TRAIN_FIELDS if train_config.get(k) is not None]
    if settings:
        parts += ["## Training settings\n", _table(["setting", "value"], settings) + "\n"]
    parts += ["## Loading it from the Hub (with its mask)\n", _RUN_USAGE.format(repo_id=repo_id, base=base or base_id)]
    return "\n".join(parts)


_RUN_USAGE = '''```python
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


def _baked(mask: Optional[dict]) -> str:
    if not mask or mask.get("mask_mode") == "none" or not mask.get("components"):
        return "The run was trained without a mask."
    if mask.get("mask_activations") is False:
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


# ---- coverage image ----

def coverage_png(template: Template, cell: Optional[int] = None) -> bytes:
    """A PNG heatmap: one row per component, one column per captured layer, darker = larger share."""
    comps, layers = template.component_ids, template.layers
    share = np.zeros((max(len(comps), 1), max(len(layers), 1)))
    column = {layer: j for j, layer in enumerate(layers)}
    for i, c in enumerate(comps):
        for layer, channels in template.components[c].items():
            share[i, column[layer]] = len(channels) / template.width
    # Square root: one dense cell would otherwise wash every other cell out to white.
    scaled = np.sqrt(share / share.max()) if share.max() > 0 else share
    cell = cell or max(4, min(24, 720 // share.shape[1]))
    light, dark = np.array([247, 251, 255]), np.array([8, 48, 107])  # white to deep blue
    rgb = (light + (dark - light) * scaled[..., None]).round().astype(np.uint8)
    image = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    return _png(image)


def _png(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG."""
    height, width, _ = image.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
