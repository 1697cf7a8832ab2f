"""Templates: per-component binary neuron masks, saved as shareable JSON.

A template file keeps the original's ``global_templates.json`` keys (``name``,
``layout`` with ``captured_layers_sorted`` and ``hidden_size``, and ``templates``
mapping string component ids to string layer ids to sorted channel indices), so its
readers still work, and adds an ``fnweb`` block of metadata (model, site, k,
threshold, datasets, seed, version, time), with the component cards (``fnweb.cards``)
and the capture statistics (``fnweb.channel_stats``: per-channel mean and spread, and the
massive-activation channels) under their own keys. ``hidden_size`` is the width per layer at
the capture site. Files written by the original (no ``fnweb`` block) load too; their
site is inferred from the width when applied.

Files are read and written through ``fnweb.io`` (UTF-8, atomic). A template may come from a
stranger (an upload, the Hub), so what it claims is bounded before anything is built
from it (``BOUNDS``; reasons beside each): a file larger than ``MAX_TEMPLATE_BYTES`` is
not read, and a claim of more layers, channels or components than any real model has is
refused before its lists are converted, so a small file cannot make the app draw or
allocate for 20,000 layers. Whether it fits a given model is ``check_fits``. This module
knows nothing about how masks are applied.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .archs import SITES, Layout
from .channel_stats import STATS_KEY, ChannelStats
from .checks import whole_number
from .errors import FnwebError
from .io import read_json, write_atomic  # noqa: F401  (write_atomic: also imported from here)

TEMPLATE_FILENAME = "global_templates.json"

# What a template may claim. The largest public language models have ~126 layers (Llama 3.1
# 405B) and MLP widths up to ~74k (Nemotron-4 340B: 96 x 73,728 = 7.1 M channels); the
# bounds leave several times that, and keep what drawing and masking allocate small.
MAX_LAYERS = 1024  # 8x the deepest model; drawing and masking cost grows with the layers
MAX_WIDTH = 1_048_576  # 2^20 channels per layer: 14x the widest MLP
MAX_CHANNELS = 2**25  # layers x width (33.5 M): 4.7x the largest model; a dense per-channel map stays <= 128 MB
MAX_COMPONENTS = 512  # the most a build makes (BuildConfig: k <= 512)
MAX_COMPONENT_LAYERS = 2**16  # component x layer cells: 512 components over 126 layers fits; drawing is <= 64 MB
MAX_LISTED = 2**24  # channel indices listed in all (16.8 M, ~600 MB as Python ints at worst)
MAX_TEMPLATE_BYTES = 32 * 2**20  # a 20-component template of a 405B model at the 98th percentile is ~17 MB
BOUNDS = {"layers": MAX_LAYERS, "width": MAX_WIDTH, "channels": MAX_CHANNELS, "components": MAX_COMPONENTS,
          "component x layer cells": MAX_COMPONENT_LAYERS, "listed indices": MAX_LISTED,
          "file bytes": MAX_TEMPLATE_BYTES}


@dataclass
class TemplateMeta:
    """How a template was made (the ``fnweb`` block of the file)."""

    model_id: str
    site: str  # a name in fnweb.archs.SITES
    n_layers: int  # layers of the model it was made on
    width: int  # channels per layer at the site
    k: int
    threshold: str  # a name in fnweb.thresholds.THRESHOLDS
    threshold_value: float
    model_revision: Optional[str] = None
    architecture: str = ""
    datasets: list = field(default_factory=list)  # [{"name", "config", "split", "samples"}]
    samples_per_dataset: int = 0
    max_tokens: int = 0
    n_tokens: int = 0
    seed: int = 0
    standardise: bool = True
    fnweb_version: str = ""
    created: str = ""
    ica: dict = field(default_factory=dict)  # converged, iterations, explained variance
    processes: int = 1  # how many processes built it (their token shares add up to n_tokens)

    @classmethod
    def from_dict(cls, data: dict) -> "TemplateMeta":
        known = {f.name for f in fields(cls)}
        missing = {"model_id", "site", "n_layers", "width", "k", "threshold", "threshold_value"} - set(data)
        if missing:
            raise FnwebError(f"The template's fnweb block lacks: {', '.join(sorted(missing))}.")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Template:
    """Component masks: ``components[c][layer]`` is a sorted list of channel indices."""

    layers: list[int]  # captured layers, sorted
    width: int  # channels per layer at the site
    components: dict[int, dict[int, list[int]]]
    name: str = "global_templates_v1"
    meta: Optional[TemplateMeta] = None
    cards: Optional[dict] = None  # the component cards (``fnweb.cards``), kept in the fnweb block as they are
    stats: Optional[ChannelStats] = None  # per-channel capture statistics; None: an older file (or a huge model)

    # ---- building ----

    @classmethod
    def from_masks(cls, masks: np.ndarray, layers: Sequence[int], width: int, meta: Optional[TemplateMeta] = None):
        """From binary masks (len(layers) * width, k), flat channel j = layer block j // width."""
        components: dict[int, dict[int, list[int]]] = {}
        for c in range(masks.shape[1]):
            per_layer = masks[:, c].reshape(len(layers), width)
            components[c] = {
                int(layer): np.flatnonzero(row).tolist() for layer, row in zip(layers, per_layer) if row.any()
            }
        return cls(layers=sorted(int(x) for x in layers), width=int(width), components=components, meta=meta)

    # ---- questions ----

    @property
    def component_ids(self) -> list[int]:
        return sorted(self.components)

    @property
    def site(self) -> Optional[str]:
        return self.meta.site if self.meta else None

    def total_channels(self) -> int:
        return len(self.layers) * self.width

    def check_components(self, ids: Sequence[int]) -> list[int]:
        """The ids as ints, or an error naming those not in the template (or not whole numbers)."""
        ids = [whole_number(i, "A component id") for i in ids]
        unknown = [i for i in ids if i not in self.components]
        if unknown:
            raise FnwebError(
                f"Component {', '.join(map(str, unknown))} is not in this template; it has "
                f"components {self.component_ids[0]}..{self.component_ids[-1]}." if self.components else
                "This template has no components."
            )
        return ids

    def neurons(self, ids: Sequence[int], layers: Optional[Sequence[int]] = None) -> dict[int, np.ndarray]:
        """Union of the components' channels per layer (sorted arrays), optionally only some layers."""
        ids = self.check_components(ids)
        keep = None if layers is None else set(int(x) for x in layers)
        union: dict[int, set] = {}
        for c in ids:
            for layer, channels in self.components[c].items():
                if keep is None or layer in keep:
                    union.setdefault(layer, set()).update(channels)
        return {layer: np.array(sorted(ch), dtype=np.int64) for layer, ch in sorted(union.items())}

    def coverage(self) -> list[dict]:
        """Per component: channels, layers touched, share of all channels, and stability when recorded."""
        total = self.total_channels()
        stability = self.stability()
        rows = []
        for c in self.component_ids:
            count = sum(len(ch) for ch in self.components[c].values())
            massive = {"massive": self.stats.massive_in(self.components[c])} if self.stats else {}
            rows.append({
                "component": c,
                "channels": count,
                "layers": len(self.components[c]),
                "share": count / total if total else 0.0,
                **({"stability": stability["correlation"][c], "mask_stability": stability["mask_iou"][c]}
                   if stability and c < len(stability["correlation"]) else {}),
                **massive,  # (layer, channel) of its massive-activation channels, when the statistics are known
            })
        return rows

    def stability(self) -> Optional[dict]:
        """The build's stability check ({runs, correlation, mask_iou} per component id), if it ran."""
        found = self.meta.ica.get("stability") if self.meta else None
        return found if isinstance(found, dict) and "correlation" in found and "mask_iou" in found else None

    def coverage_summary(self) -> str:
        """The original's 'Component Coverage Summary', one line per component (and its stability, if known)."""
        lines = ["Component Coverage Summary:"]
        for row in self.coverage():
            stable = (f"; stability {row['stability']:.2f}, mask {row['mask_stability']:.2f}"
                      if "stability" in row else "")
            massive = (f"; massive-activation channels: {self.stats.describe(row['massive'])}"
                       if row.get("massive") else "")
            lines.append(
                f"  Component {row['component']}: {row['channels']} channels across {row['layers']} layers"
                f" ({100 * row['share']:.2f} % of {self.total_channels():,}){stable}{massive}"
            )
        if self.stability():
            lines.append(f"  (stability: mean matched |correlation| of the map over {self.stability()['runs']} re-runs "
                         "of the PCA and ICA on resampled tokens; mask: mean IoU of the masks; 1 = found every time)")
        if self.stats is not None:
            found = self.stats.describe(self.stats.massive) if self.stats.massive else "none"
            lines.append(f"  Massive-activation channels (root mean square over {self.stats.massive_ratio:g}x its "
                         f"layer's median): {found}")
        return "\n".join(lines)

    def infer_site(self, layout: Layout) -> str:
        """The template's site, or for an original file the one its width matches."""
        if self.meta:
            return self.meta.site
        for site in SITES:  # the table's order decides when two sites have the same width
            if self.width == layout.width(site):
                return site
        widths = " and ".join(f"{layout.width(name)} {site.units}" for name, site in SITES.items())
        raise FnwebError(
            f"This template has {self.width} channels per layer, but the model has {widths} per layer: "
            "it was made for another model."
        )

    def check_fits(self, layout: Layout, model_id: Optional[str] = None) -> Optional[str]:
        """Refuse a template that does not fit the model; return a warning when ids differ."""
        site = self.infer_site(layout)
        width = layout.width(site)
        made_for = f" (made for {self.meta.model_id})" if self.meta else ""
        if self.width != width:
            raise FnwebError(
                f"This template{made_for} has {self.width} channels per layer at '{site}', but this model "
                f"has {width}: it was made for another model."
            )
        n_layers = self.meta.n_layers if self.meta else (max(self.layers) + 1 if self.layers else 0)
        if (self.meta and n_layers != layout.n_layers) or n_layers > layout.n_layers:
            raise FnwebError(
                f"This template{made_for} covers {n_layers} layers, but this model has {layout.n_layers}: "
                "it was made for another model."
            )
        if self.meta and model_id and self.meta.model_id != model_id:
            return f"This template was made on {self.meta.model_id}; its shape fits {model_id}, so it is used as is."
        return None

    # ---- files ----

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "layout": {"captured_layers_sorted": list(self.layers), "hidden_size": self.width},
            "templates": {
                str(c): {str(layer): list(ch) for layer, ch in sorted(self.components[c].items())}
                for c in self.component_ids
            },
        }
        if self.meta is not None:
            data["fnweb"] = asdict(self.meta)
            if self.cards:
                data["fnweb"]["cards"] = self.cards
            if self.stats is not None:
                data["fnweb"][STATS_KEY] = self.stats.to_dict()
        return data

    def to_json(self) -> str:
        data = self.to_dict()
        cards = data.get("fnweb", {}).get("cards")
        if cards is not None:
            data["fnweb"]["cards"] = _CARDS_SLOT
        text = json.dumps(data, indent=2, ensure_ascii=False)
        # Lists of channel indices on one line each: readable and ~5x smaller.
        text = re.sub(r"\[[\d,\s]+\]", lambda m: re.sub(r"\s+", "", m.group(0)), text) + "\n"
        return text if cards is None else text.replace(json.dumps(_CARDS_SLOT), _compact(cards), 1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; return the path written."""
        return write_atomic(Path(path), self.to_json())

    @classmethod
    def from_dict(cls, data: dict, source: str = "template") -> "Template":
        if not isinstance(data, dict) or "templates" not in data or "layout" not in data:
            seen = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
            raise FnwebError(
                f"{source} is not an fnweb template: expected keys 'layout' and 'templates' (saw: {seen})."
            )
        check_claims(data, source)
        try:
            layout = data["layout"]
            components = {
                _whole(c, source, "component id"): {
                    _whole(layer, source, f"component {c}'s layer"): _channels(ch, source, c)
                    for layer, ch in per_layer.items()
                }
                for c, per_layer in data["templates"].items()
            }
            template = cls(
                layers=sorted(_whole(x, source, "captured layer") for x in layout["captured_layers_sorted"]),
                width=_whole(layout["hidden_size"], source, "hidden_size"),
                components=components,
                name=str(data.get("name", "global_templates_v1")),
                meta=TemplateMeta.from_dict(data["fnweb"]) if "fnweb" in data else None,
                cards=_cards_of(data.get("fnweb")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FnwebError(f"{source} is a malformed template ({type(exc).__name__}: {exc}).") from exc
        template._validate(source)
        stats = data["fnweb"].get(STATS_KEY) if isinstance(data.get("fnweb"), dict) else None
        if stats is not None:  # checked against the layers and width just validated
            template.stats = ChannelStats.from_dict(stats, template.layers, template.width)
        return template

    def _validate(self, source: str) -> None:
        if len(set(self.layers)) != len(self.layers) or (self.layers and not 0 <= self.layers[0] <= self.layers[-1]
                                                          < MAX_LAYERS):
            raise FnwebError(f"{source}: its captured layers must be distinct numbers from 0 to {MAX_LAYERS - 1}.")
        if not 1 <= self.width <= MAX_WIDTH:
            raise FnwebError(f"{source}: its width ({self.width}) must lie between 1 and {MAX_WIDTH:,}.")
        allowed = set(self.layers)
        for c, per_layer in self.components.items():
            for layer, channels in per_layer.items():
                if layer not in allowed:
                    raise FnwebError(f"{source}: component {c} uses layer {layer}, which was not captured.")
                if channels and (channels[0] < 0 or channels[-1] >= self.width):
                    raise FnwebError(f"{source}: component {c} has channels outside 0..{self.width - 1}.")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Template":
        path = Path(path)
        if not path.exists():
            raise FnwebError(f"Template file not found: {path}")
        if path.is_dir():
            path = path / TEMPLATE_FILENAME
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise FnwebError(f"Cannot read {path}: {exc.strerror}.") from exc
        if size > MAX_TEMPLATE_BYTES:
            raise FnwebError(f"{path.name} is {size / 2**20:,.1f} MB: a template file may be at most "
                             f"{MAX_TEMPLATE_BYTES / 2**20:,.0f} MB (far more than any real model's). It was not read.")
        return cls.from_dict(read_json(path, f"Template file {path.name}"), source=path.name)


def check_claims(data: dict, source: str = "template") -> None:
    """Refuse, before converting anything, a template whose claimed shape is beyond ``BOUNDS``.

    Only sizes are looked at (lengths and a few numbers), so a claim of 20,000 layers is
    refused at once, however it is spread over the file. Malformed data is left to the
    conversion, which says what is wrong.
    """
    layout, per_component = data.get("layout"), data.get("templates")
    if not isinstance(layout, dict) or not isinstance(per_component, dict):
        return
    layers, width = layout.get("captured_layers_sorted"), layout.get("hidden_size")
    n_layers = len(layers) if isinstance(layers, list) else 0
    meta = data.get("fnweb") if isinstance(data.get("fnweb"), dict) else {}
    claims = [("{:,} layers", n_layers, MAX_LAYERS), ("{:,} components", len(per_component), MAX_COMPONENTS),
              ("{:,} component x layer cells", len(per_component) * n_layers, MAX_COMPONENT_LAYERS)]
    for key, what, limit in (("n_layers", "{:,} layers", MAX_LAYERS), ("k", "{:,} components", MAX_COMPONENTS),
                             ("width", "a width of {:,} channels per layer", MAX_WIDTH)):
        if isinstance(meta.get(key), (int, float)):
            claims.append((what, meta[key], limit))
    if isinstance(width, (int, float)):
        claims += [("a width of {:,} channels per layer", width, MAX_WIDTH),
                   ("{:,} channels in all", n_layers * width, MAX_CHANNELS)]
    listed = sum(len(ch) for per_layer in per_component.values() if isinstance(per_layer, dict)
                 for ch in per_layer.values() if isinstance(ch, list))
    claims.append(("{:,} listed channel indices", listed, MAX_LISTED))
    for what, value, limit in claims:
        if value > limit:
            raise FnwebError(
                f"{source} claims {what.format(value)}, more than fnweb accepts ({limit:,}; the largest real models "
                "need a fraction of that). It was refused before anything was built from it.")

def _whole(value, source: str, what: str) -> int:
    """A whole number of a template file: '3', 3 or 3.0; 2.5, 'x' or true make the file refused."""
    try:
        return whole_number(value, what)
    except FnwebError as exc:
        raise FnwebError(f"{source}: {what} {value!r} is not a whole number; the file was not loaded.") from exc


def _channels(values, source: str, component) -> list[int]:
    """A layer's sorted channel indices (plain ints pass at list speed; anything else one by one)."""
    if not isinstance(values, list):
        raise TypeError(f"component {component} has {type(values).__name__} where a list of channels belongs")
    if all(type(x) is int for x in values):
        return sorted(values)
    return sorted(_whole(x, source, f"component {component}'s channel") for x in values)


_CARDS_SLOT = "\u0000cards\u0000"  # stands in for the cards while the rest is indented


def _compact(value) -> str:
    """Compact JSON with each top-level key (and each item of a top-level list) on its own line."""
    if not isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    lines = []
    for key, item in value.items():
        if isinstance(item, list) and item and isinstance(item[0], dict):
            inner = ",\n".join(json.dumps(x, ensure_ascii=False, separators=(",", ":")) for x in item)
            lines.append(f"{json.dumps(key)}:[\n{inner}]")
        else:
            lines.append(f"{json.dumps(key)}:{json.dumps(item, ensure_ascii=False, separators=(',', ':'))}")
    return "{\n" + ",\n".join(lines) + "}"


def _cards_of(block) -> Optional[dict]:
    """The fnweb block's cards, read by ``fnweb.cards`` when used (a bad block never stops the template loading)."""
    cards = block.get("cards") if isinstance(block, dict) else None
    return cards if isinstance(cards, dict) else None

