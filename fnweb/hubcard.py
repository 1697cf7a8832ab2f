"""Model cards (README.md with Hub metadata) for shared templates, their shared parts, and a coverage image.

``template_card`` returns the text of a template repo's model card: a YAML front matter
that ``huggingface_hub.ModelCard`` parses (``base_model``, ``datasets``, ``tags``
including ``fnweb``, and an ``fnweb`` block with the settings), then a body with the
coverage table and how to load it (and, when the template keeps cards, what each
component does). ``front_matter`` and ``markdown_table`` are shared with the run card
(``fnweb.finetune.card``). ``coverage_png`` draws the component x layer coverage as a
PNG (no plotting library needed). This module knows nothing about the network.
"""

from __future__ import annotations

import struct
import zlib
from typing import Optional

import numpy as np

from . import __version__
from .cards import DIRECT_NOTE, shown, stored_cards
from .ids import hub_model_id, is_hub_dataset
from .templates import TEMPLATE_FILENAME, Template

HEATMAP_FILENAME = "coverage.png"
TEMPLATE_TAGS = ["fnweb", "functional-networks", "ica", "interpretability"]


# ---- metadata helpers ----

def front_matter(data: dict) -> str:
    """A card's YAML front matter, as the Hub parses it (empty values left out)."""
    from huggingface_hub import ModelCardData

    clean = {k: v for k, v in data.items() if v not in (None, [], {})}
    return "---\n" + ModelCardData(**clean).to_yaml() + "\n---\n"


def markdown_table(header: list[str], rows: list[list]) -> str:
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
    front = front_matter({
        "base_model": hub_model_id(meta.model_id) if meta else None,
        "datasets": [d for d in dict.fromkeys(datasets) if is_hub_dataset(d)],
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
        parts += ["## Settings\n", markdown_table(["setting", "value"], settings) + "\n"]
    coverage = template.coverage()
    stable = bool(coverage) and all("stability" in r for r in coverage)
    rows = [[r["component"], f"{r['channels']:,}", r["layers"], f"{100 * r['share']:.2f} %"]
            + ([f"{r['stability']:.2f}", f"{r['mask_stability']:.2f}"] if stable else []) for r in coverage]
    header = ["component", "channels", "layers", "share of all channels"]
    header += ["stability (map)", "stability (mask)"] if stable else []
    parts += ["## Coverage\n", markdown_table(header, rows) + "\n"]
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
