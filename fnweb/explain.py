"""Making component cards (from a build's ICA sources, or on demand from fresh activations) and searching a text.

``cards_from_build`` is called by ``fnweb.build`` once the masks exist: the ICA sources
are the signal, each component's readout is fitted to its source, and its direct effect
uses its map. ``cards_on_demand`` serves templates without stored cards (the original
tool's files, older fnweb files, cards made with another tokenizer): it runs the model
over a prompt set and reads each component from its mask (see ``fnweb.readout`` for
how, and what it cannot know). ``cards_for`` picks stored cards when they fit the
model, else on-demand ones. ``search_text`` reads every component's signal on a
visitor's text with the cards' readouts.

It knows nothing about how cards are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .activity import WINDOW, orient, set_means, token_origins, top_contexts
from .archs import layout_of, output_head
from .capture import row_starts
from .cards import PROMPT_CHARS, Cards, ComponentCard, make_label, token_pieces, token_text, tokenizer_mismatch
from .direct_effect import logit_change, top_effects, written_direction
from .errors import FnwebError
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .prompts import BUILTIN_PREFIX, PromptSource, encode_pairs, sample_pairs
from .readout import (
    capture_columns,
    estimate_readout,
    fit_readout,
    flat_columns,
    map_reads,
    mask_channels,
    read_signals,
)
from .templates import Template

DEFAULT_TOP = 20
ON_DEMAND_SETS = ("factual", "arithmetic", "code", "creative", "multilingual", "sentiment")
ON_DEMAND_SAMPLES = 10  # per prompt set
ON_DEMAND_TOKENS = 96


@dataclass
class Signal:
    """Per-token component signals (tokens, k), oriented, over ``sequences`` whose rows start at ``starts``."""

    values: np.ndarray
    sequences: Sequence[Sequence[int]]
    starts: list[int]
    set_of: list[int]  # each sequence's prompt set (index into set names)
    set_names: list[str]
    prompts: list[str]  # each sequence's prompt text


def cards_from_build(lm, template: Template, decomposition, acts, sequences, pairs, set_names: list[str],
                     top: int = DEFAULT_TOP, negative: bool = False, standardised: bool = True,
                     stop: Optional[StopFlag] = None, signals: Optional[np.ndarray] = None) -> Cards:
    """Cards from a build: the decomposition's sources, its maps and the capture's statistics.

    ``signals``: every token's unfitted readout guesses (``build_signals``) when this process
    does not hold all the rows (a sharded build gathers them); else they are read from ``acts``.
    """
    if decomposition.sources is None:
        raise FnwebError("This decomposition kept no sources to make cards from.")
    stop = stop or StopFlag()
    signs = orient(decomposition.sources)
    values = decomposition.sources * signs.astype(np.float32)
    mean, std = acts.mean.numpy(), acts.std.numpy()
    unit = std if standardised else np.ones_like(std)  # what the ICA saw: z-scores or centred activations
    flats = _flats(template)
    reads = map_reads(flats, decomposition.maps, mean, unit)
    if signals is None:
        signals = read_signals(acts.matrix, flats, reads, stop=stop)
    movement, readouts = {}, {}
    for c in template.component_ids:
        stop.check()
        (read, offset), sign = reads[c], float(signs[c])
        readouts[c] = fit_readout(read * sign, offset * sign, signals[:, c] * sign, values[:, c])
        movement[c] = _per_layer(mask_channels(template, c), decomposition.maps[flats[c], c] * sign * unit[flats[c]])
    signal = Signal(values, sequences, row_starts([len(s) for s in sequences]),
                    [set_names.index(p.source) if p.source in set_names else 0 for p in pairs], set_names,
                    [p.prompt for p in pairs])
    return _assemble(lm, template, template.meta.site, signal, movement, readouts, "build", top, negative)


def build_signals(matrix: torch.Tensor, template: Template, maps: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
                  standardised: bool = True, release=None, stop: Optional[StopFlag] = None) -> np.ndarray:
    """(this process's rows, k): each component's unfitted readout guess, for ``cards_from_build(signals=...)``."""
    unit = std.numpy() if standardised else np.ones(std.shape[0], dtype=np.float32)
    flats = _flats(template)
    return read_signals(matrix, flats, map_reads(flats, maps, mean.numpy(), unit), release, stop)


def _flats(template: Template) -> list[np.ndarray]:
    return [flat_columns(template, mask_channels(template, c)) for c in template.component_ids]


def _per_layer(channels: dict[int, np.ndarray], flat_values: np.ndarray) -> dict[int, np.ndarray]:
    """Split values aligned with the concatenated channels back into layers."""
    out, start = {}, 0
    for layer, chosen in channels.items():
        out[layer] = flat_values[start : start + len(chosen)]
        start += len(chosen)
    return out


def _assemble(lm, template: Template, site: str, signal: Signal, movement: dict, readouts: dict, method: str,
              top: int, negative: bool) -> Cards:
    lengths = [len(s) for s in signal.sequences]
    means = set_means(signal.values, signal.starts, lengths, signal.set_of, len(signal.set_names))
    origins = token_origins(signal.starts, lengths)
    effects, error = _direct_effects(lm, template, site, movement)
    components = {}
    for i, c in enumerate(template.component_ids):
        found = [top_contexts(signal.values[:, i], signal.sequences, signal.starts, top, side, WINDOW, origins)
                 for side in ((False, True) if negative else (False,))]
        for context in (x for side in found for x in side):
            context.pieces = token_pieces(lm.tokenizer, context.ids)
        promotes, suppresses = effects.get(c, ([], []))
        components[c] = ComponentCard(c, found[0], [round(float(v), 4) for v in means[i]],
                                      found[1] if negative else [], promotes, suppresses, readouts.get(c))
        components[c].label = make_label(components[c], signal.set_names)
    used = {x.prompt for card in components.values() for x in card.top + card.bottom}
    return Cards(method=method, model_id=lm.model_id, vocab=len(lm.tokenizer), sets=signal.set_names,
                 prompts={i: signal.prompts[i][:PROMPT_CHARS] for i in sorted(used)}, components=components,
                 tokens=int(signal.values.shape[0]), window=WINDOW, direct_effect_error=error)


def _direct_effects(lm, template: Template, site: str, movement: dict) -> tuple[dict, str]:
    """Per component (promoted, suppressed) tokens, or ({}, why not)."""
    layout = layout_of(lm.model)
    decode = lambda token: token_text(lm.tokenizer, token)  # noqa: E731
    try:
        directions = torch.stack([written_direction(lm.model, layout, site, mask_channels(template, c), moves)
                                  for c, moves in movement.items()], dim=1)
        logits = logit_change(output_head(lm.model), directions)
    except FnwebError as exc:
        return {}, str(exc)
    return {c: top_effects(logits[:, i], decode, vocab=len(lm.tokenizer)) for i, c in enumerate(movement)}, ""


# ---- on demand ----

def default_sources(template: Template) -> list[PromptSource]:
    """The template's own prompt sets when they can be read here (built-in sets, local files),
    else the built-in ones."""
    names = [d.get("name", "") for d in template.meta.datasets] if template.meta else []
    local = [n for n in names if n.startswith(BUILTIN_PREFIX) or Path(n).expanduser().is_file()]
    if names and len(local) == len(names):
        return [PromptSource(n, d.get("config"), d.get("split") or "train")
                for n, d in zip(names, template.meta.datasets)]
    return [PromptSource(BUILTIN_PREFIX + name) for name in ON_DEMAND_SETS]


def cards_on_demand(lm, template: Template, sources: Optional[list[PromptSource]] = None,
                    samples: int = ON_DEMAND_SAMPLES, max_tokens: int = ON_DEMAND_TOKENS, top: int = DEFAULT_TOP,
                    negative: bool = False, seed: int = 0, progress: ProgressFn = no_progress,
                    stop: Optional[StopFlag] = None) -> Cards:
    """Cards made now: the model runs over ``samples`` prompts of each set; each component is read from its mask."""
    layout = layout_of(lm.model)
    template.check_fits(layout, lm.model_id)
    site = template.infer_site(layout)
    sources = sources or default_sources(template)
    progress(Progress("loading", 0, 1, "", "Reading prompts"))
    pairs = sample_pairs(sources, samples, seed)
    sequences = encode_pairs(lm.tokenizer, pairs, max_tokens)
    union = np.unique(np.concatenate([flat_columns(template, mask_channels(template, c))
                                      for c in template.component_ids]))
    progress(Progress("capturing", 0, 1, "", f"Capturing {len(union):,} neurons over {len(sequences)} prompts"))
    columns = capture_columns(lm, sequences, site, template.layers, template.width, union, stop=stop)
    progress(Progress("thresholding", 0, 1, "", "Making the component cards"))
    values = np.zeros((columns.shape[0], len(template.component_ids)), dtype=np.float32)
    movement, readouts = {}, {}
    for i, c in enumerate(template.component_ids):
        channels = mask_channels(template, c)
        own = columns[:, np.searchsorted(union, flat_columns(template, channels))].astype(np.float32)
        readouts[c], moves = estimate_readout(own)
        values[:, i] = readouts[c].apply(own)
        movement[c] = _per_layer(channels, moves)
    names = [s.label() for s in sources]
    signal = Signal(values, sequences, list(np.concatenate([[0], np.cumsum([len(s) for s in sequences])[:-1]])),
                    [names.index(p.source) for p in pairs], names, [p.prompt for p in pairs])
    return _assemble(lm, template, site, signal, movement, readouts, "on demand", top, negative)


def cards_for(template: Template, lm=None, **on_demand) -> tuple[Cards, str]:
    """(cards, a note): the stored ones when they fit ``lm`` (or no model is given), else made on demand."""
    note = ""
    if template.cards:
        try:
            stored = Cards.from_dict(template.cards)
            why = None if lm is None else _misfit(stored, template, lm)
            if why is None:
                return stored, ""
            note = f"{why} Cards were made on demand instead."
        except FnwebError as exc:
            note = f"{exc} Cards were made on demand instead."
    if lm is None:
        raise FnwebError(("This template has no stored cards (it was made by the original tool or an older fnweb)"
                          if not note else note.replace(" Cards were made on demand instead.", ""))
                         + ": load a model to make them on demand (in the app) or pass --model.")
    return cards_on_demand(lm, template, **on_demand), note


def _misfit(cards: Cards, template: Template, lm) -> Optional[str]:
    try:
        template.check_fits(layout_of(lm.model), lm.model_id)
    except FnwebError as exc:
        return str(exc)
    return tokenizer_mismatch(cards, lm.tokenizer)


# ---- search ----

@dataclass
class SearchResult:
    """Each component's signal at each token of a text."""

    pieces: list[str]
    components: list[int]
    values: np.ndarray  # (tokens, components)

    def ranking(self) -> list[tuple[int, float, int]]:
        """(component, its largest value, the token where) from the most activated component down."""
        peaks = [(c, float(self.values[:, i].max()), int(self.values[:, i].argmax()))
                 for i, c in enumerate(self.components)]
        return sorted(peaks, key=lambda row: -row[1])


def context_limit(lm) -> int:
    """The longest text the model reads (its position limit; the tokenizer's when the config has none)."""
    config = getattr(lm.model, "config", None)
    for limit in (getattr(config, "max_position_embeddings", None), getattr(lm.tokenizer, "model_max_length", None)):
        if isinstance(limit, int) and 0 < limit < 10**7:
            return limit
    return 8192


def search_text(lm, template: Template, cards: Cards, text: str, stop: Optional[StopFlag] = None) -> SearchResult:
    """Every component's signal on ``text`` (read as plain text, no chat template), by the cards' readouts."""
    if not isinstance(text, str) or not text.strip():
        raise FnwebError("The search text is empty: type a word or paste a text.")
    ids = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) > context_limit(lm):
        raise FnwebError(f"The text is {len(ids):,} tokens long; this model reads at most {context_limit(lm):,}. "
                         "Paste a shorter text.")
    missing = [c for c in template.component_ids if c not in cards.components or cards.components[c].readout is None]
    if missing:
        raise FnwebError(f"The cards have no readout for component(s) {', '.join(map(str, missing))}: "
                         "make the cards on demand first.")
    layout = layout_of(lm.model)
    template.check_fits(layout, lm.model_id)
    flats = {c: flat_columns(template, mask_channels(template, c)) for c in template.component_ids}
    union = np.unique(np.concatenate(list(flats.values())))
    columns = capture_columns(lm, [ids], template.infer_site(layout), template.layers, template.width, union,
                              stop=stop)
    values = np.stack([cards.components[c].readout.apply(columns[:, np.searchsorted(union, flats[c])]
                                                         .astype(np.float32))
                       for c in template.component_ids], axis=1)
    return SearchResult(token_pieces(lm.tokenizer, ids), list(template.component_ids), values)
