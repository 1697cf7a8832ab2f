"""Which prompts an experiment scores: held-out texts (without the template's own prompts) and multiple-choice items.

The template's prompts are recomputed from its metadata (its datasets, sample count and
seed), so held-out prompts it was built from are left out (or counted in a warning when
kept). Each scored token sequence is a ``Unit``: a held-out prompt + response, cut to
``max_tokens``, scored from the response on (or from the second token); or one choice of
a multiple-choice item. It knows nothing about masks or models beyond their tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from ..errors import FnwebError
from ..models import LoadedModel
from ..prompts import (
    Pair, PromptSource, detect_layout, encode_pair, encode_prompt_and_response, load_pairs, read_rows,
    rows_to_pairs, sample_pairs,
)
from ..templates import Template
from .config import MIN_PROMPTS, ExperimentConfig


@dataclass(frozen=True)
class Unit:
    """One scored token sequence: a held-out text, or one choice of a multiple-choice item."""

    ids: tuple[int, ...]
    first: int  # index of the first scored target token (>= 1)
    item: int = -1  # multiple-choice item, -1 for a held-out text
    choice: int = -1


def _key(pair: Pair) -> str:
    return " ".join(pair.prompt.split())


def template_prompts(template: Template) -> tuple[Optional[set[str]], list[str]]:
    """The prompts the template was built from (recomputed from its metadata), or None and why not."""
    meta = template.meta
    if meta is None or not meta.datasets or meta.samples_per_dataset < 1:
        return None, ["This template records no datasets, so overlap with its prompts cannot be checked."]
    sources = [PromptSource(d["name"], d.get("config"), d.get("split") or "train") for d in meta.datasets]
    try:
        pairs = sample_pairs(sources, meta.samples_per_dataset, meta.seed)
    except FnwebError as exc:
        return None, [f"Could not re-read the template's prompts to check overlap: {exc}"]
    return {_key(p) for p in pairs}, []


def heldout_pairs(config: ExperimentConfig, used: Optional[set[str]]) -> tuple[list[Pair], list[str]]:
    """Up to ``samples_per_dataset`` pairs per source (seeded), without (or counting) the template's."""
    pairs, notes = [], []
    for source in config.sources:
        available = load_pairs(source)
        random.Random(config.seed).shuffle(available)
        overlap = sum(_key(p) in used for p in available) if used else 0
        if overlap and config.exclude_template_prompts:
            kept = [p for p in available if _key(p) not in used]
            notes.append(
                f"{source.label()}: {overlap} of its {len(available)} prompts were used to build the template; "
                f"they were left out of the held-out set ({len(kept)} remain)."
            )
            available = kept
        pairs.extend(available[: config.samples_per_dataset or None])
    if used and not config.exclude_template_prompts:
        shared = sum(_key(p) in used for p in pairs)
        if shared:
            notes.append(
                f"The held-out set overlaps the template's prompts: {shared} of {len(pairs)} held-out prompts "
                f"({100 * shared / len(pairs):.0f} %) were used to build the template, so they are not held out "
                "and the effects may be overstated. Leave them out (the default) or choose other prompts."
            )
    return pairs, notes


def check_readable(config: ExperimentConfig) -> None:
    """Read every held-out set and the multiple-choice set once, so that a bad one fails before a model loads."""
    for source in config.sources:
        load_pairs(source)
    if config.mcq is not None:
        read_rows(config.mcq)


def _text_unit(tokenizer, pair: Pair, config: ExperimentConfig) -> Optional[Unit]:
    """The pair's tokens (cut to max_tokens) and where scoring starts; None if nothing is left to score."""
    if pair.response:
        prompt_ids, response_ids = encode_prompt_and_response(tokenizer, pair, config.prompt_format)
    else:  # no response: score the prompt itself
        prompt_ids, response_ids = encode_pair(tokenizer, pair, config.prompt_format, with_response=False), []
    ids = (list(prompt_ids) + list(response_ids))[: config.max_tokens]
    first = len(prompt_ids) if config.score == "response" and response_ids else 1
    return Unit(tuple(ids), first) if first < len(ids) else None


def mcq_units(tokenizer, config: ExperimentConfig, used: Optional[set[str]]) -> tuple[list[Unit], list[int], list[str]]:
    """One unit per choice of each item, the right answers, and notes."""
    rows = [r for r in read_rows(config.mcq) if isinstance(r, dict)]
    if not rows or detect_layout(rows[0].keys()) != "multiple choice":
        seen = ", ".join(sorted(rows[0].keys())) if rows else "(none)"
        raise FnwebError(
            f"{config.mcq.label()} is not a multiple-choice set: it needs fields question, choices and answer "
            f"(fields seen: {seen})."
        )
    random.Random(config.seed).shuffle(rows)
    units, answers, dropped = [], [], 0
    for row in rows:
        try:
            pair = rows_to_pairs([row], config.mcq.label())[0]
            choices = [str(c) for c in row["choices"]]
        except (FnwebError, TypeError):
            continue
        answer = "ABCDEFGH".find(pair.response[:1])
        if len(choices) < 2 or not 0 <= answer < len(choices):
            continue
        if used and config.exclude_template_prompts and _key(pair) in used:
            dropped += 1
            continue
        item = len(answers)
        for i, choice in enumerate(choices):
            option = Pair(pair.prompt, f"{chr(65 + i)}. {choice}")
            prompt_ids, response_ids = encode_prompt_and_response(tokenizer, option, config.prompt_format)
            units.append(Unit(tuple(prompt_ids) + tuple(response_ids), len(prompt_ids), item, i))
        answers.append(answer)
        if config.mcq_items and len(answers) >= config.mcq_items:
            break
    notes = ([f"{config.mcq.label()}: {dropped} items were used to build the template and were left out."]
             if dropped else [])
    if not answers:
        raise FnwebError(f"{config.mcq.label()} has no usable multiple-choice items (question, choices, answer).")
    return units, answers, notes


def text_units(lm: LoadedModel, config: ExperimentConfig, used: Optional[set[str]]) -> tuple[list[Unit], list[str]]:
    """The held-out texts as units, or an error when too few are left for the draws."""
    pairs, notes = heldout_pairs(config, used)
    left_out = " after leaving out the template's prompts" if notes and config.exclude_template_prompts else ""
    units = [u for u in (_text_unit(lm.tokenizer, p, config) for p in pairs) if u is not None]
    skipped = ""
    if len(units) < len(pairs):
        skipped = (f"{len(pairs) - len(units)} prompts had no tokens left to score within max tokens "
                   f"({config.max_tokens}) and were skipped")
        notes.append(skipped + ".")
    need = max(MIN_PROMPTS, config.draws)
    if len(units) < need:
        raise FnwebError(
            f"The held-out set has {len(units)} usable prompts{left_out}{' (' + skipped + ')' if skipped else ''}; "
            f"{config.draws} random draws need at least {need} (at least {MIN_PROMPTS}, and no fewer than the "
            "draws). Add prompt sets, raise the prompts per set, or lower the draws."
        )
    return units, notes
