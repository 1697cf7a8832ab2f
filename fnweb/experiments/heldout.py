"""Which prompts an experiment scores: held-out texts (without the template's own prompts) and labelled task items.

The template's prompts are recomputed from its metadata (its datasets, sample count and
seed), so held-out prompts it was built from are left out (or counted in a warning when
kept). Each scored token sequence is a ``Unit``: a held-out prompt + response, cut to
``max_tokens``, scored from the response on (or from the second token). Task items come
from ``fnweb.tasks`` as its ``TaskUnit``s. The texts split in two disjoint halves: one
decides any ordering of the components, the other scores it. It knows nothing about
masks or models beyond their tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from ..errors import FnwebError
from ..models import LoadedModel
from ..prompts import Pair, PromptSource, encode_pair, encode_prompt_and_response, load_pairs, sample_pairs
from ..tasks import TaskData, get_task, load_items, task_data
from ..templates import Template
from .config import MIN_PROMPTS, ExperimentConfig


@dataclass(frozen=True)
class Unit:
    """One scored held-out text."""

    ids: tuple[int, ...]
    first: int  # index of the first scored target token (>= 1)


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
    """Read every held-out set and the task's items once, so that a bad one fails before a model loads."""
    for source in config.sources:
        load_pairs(source)
    if config.task is not None:
        load_items(get_task(config.task), config.task_source, config.task_items, config.seed)


def _text_unit(tokenizer, pair: Pair, config: ExperimentConfig) -> Optional[Unit]:
    """The pair's tokens (cut to max_tokens) and where scoring starts; None if nothing is left to score."""
    if pair.response:
        prompt_ids, response_ids = encode_prompt_and_response(tokenizer, pair, config.prompt_format)
    else:  # no response: score the prompt itself
        prompt_ids, response_ids = encode_pair(tokenizer, pair, config.prompt_format, with_response=False), []
    ids = (list(prompt_ids) + list(response_ids))[: config.max_tokens]
    first = len(prompt_ids) if config.score == "response" and response_ids else 1
    return Unit(tuple(ids), first) if first < len(ids) else None


def task_units(tokenizer, config: ExperimentConfig, used: Optional[set[str]]) -> tuple[TaskData, list[str]]:
    """The labelled task's items and units (``fnweb.tasks``), without the template's prompts when asked."""
    exclude = used if config.exclude_template_prompts else None
    data = task_data(tokenizer, config.task, config.task_source, config.task_items, config.seed, exclude,
                     config.prompt_format)
    return data, list(data.notes)


def split_units(n_text: int) -> tuple[list[int], list[int]]:
    """Two disjoint halves of the held-out texts: one orders the components, the other scores the ordering.

    Alternate units (the sets are concatenated, each shuffled by the seed), so both halves
    draw on every set alike.
    """
    return list(range(0, n_text, 2)), list(range(1, n_text, 2))


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
    if len(units) < MIN_PROMPTS:  # half of them order the preservation curve, the other half score it
        raise FnwebError(
            f"The held-out set has {len(units)} usable prompts{left_out}{' (' + skipped + ')' if skipped else ''}; "
            f"an experiment needs at least {MIN_PROMPTS}. Add prompt sets or raise the prompts per set."
        )
    return units, notes
