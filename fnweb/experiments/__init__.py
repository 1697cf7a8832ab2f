"""Does a network matter? Lesion and preserve experiments against matched random controls.

For a model, a template and a held-out prompt set (disjoint from the prompts the
template was built from: those are recomputed from its metadata and left out, or
counted in a warning), ``experiment_stream`` measures teacher-forced on each prompt +
response (through the chat template):

1. **lesion** phase: each component lesioned, then all of them together (the union),
   each beside ``draws`` seeded random controls of the same per-layer sizes: the
   change in cross-entropy and the mean next-token KL from the unchanged model.
2. **preserve** phase (the preservation curve): components ordered by their lesion
   effect; the top m kept (m = 1..k, every other neuron of the masked layers zeroed),
   beside random keeps of the same per-layer sizes.

Optionally a multiple-choice set (``builtin:mcq``) gives accuracy by answer
log-likelihood under the same interventions.

Every condition of a phase is one row of a batch over the same prompt (one
``(rows, 1, width)`` mask per layer), the unchanged model is row 0, and only the
scored positions reach the LM head. After each prompt the engine yields an
``ExperimentResult`` snapshot (marked partial until the end), so a page can draw the
charts as they fill; a stop request ends the run with the last snapshot, marked
partial. This module knows nothing about the UI or files (see experiment_results).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from . import __version__
from .archs import layout_of, unwrap
from .errors import FnwebError, Stopped
from .experiment_results import CurvePoint, ExperimentResult, LesionRow, ratio
from .masks import MaskSpec, apply_masks, layer_masks, masked_share, stacked_masks
from .metrics import mean_and_spread, next_token_stats
from .models import LoadedModel
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .prompts import (
    Pair, PromptSource, detect_layout, encode_pair, encode_prompt_and_response, load_pairs, read_rows,
    rows_to_pairs, sample_pairs,
)
from .templates import Template

__all__ = ["ExperimentConfig", "ExperimentResult", "LesionRow", "CurvePoint", "experiment_stream",
           "run_experiment", "template_prompts", "heldout_pairs"]

SCORES = ("response", "all")
MIN_PROMPTS = 4  # below this a mean over prompts is one text's quirks
MAX_DRAWS = 50
LOGIT_BYTES = 512 * 2**20  # float32 logits held per forward pass
IN_PROGRESS, STOPPED = "In progress", "Stopped by request"  # how a partial result's note begins


@dataclass
class ExperimentConfig:
    """What to measure and on which prompts (recorded in the result's settings)."""

    sources: list[PromptSource] = field(default_factory=list)  # held-out prompt sets
    samples_per_dataset: int = 20  # held-out prompts per set (0: all that are left)
    draws: int = 5  # seeded random controls per condition
    seed: int = 0  # held-out sampling and random draws
    max_tokens: int = 128  # per prompt + response
    score: str = "response"  # response: score the response's tokens | all: every next token
    components: Optional[list[int]] = None  # None: every component of the template
    exclude_template_prompts: bool = True  # leave out held-out prompts the template was built from
    curve: bool = True  # measure the preservation curve
    mcq: Optional[PromptSource] = None  # a multiple-choice set for accuracy, e.g. builtin:mcq
    mcq_items: int = 0  # items of it (0: all)
    prompt_format: str = "auto"  # auto | chat | alpaca | chatml | basic
    batch_tokens: int = 4096  # rows x length per forward pass (lower it to save memory)

    def validate(self) -> None:
        if not self.sources:
            raise FnwebError("No held-out prompt set chosen: pick a built-in set, a file or a Hub dataset.")
        if not 1 <= self.draws <= MAX_DRAWS:
            raise FnwebError(f"Random draws must lie between 1 and {MAX_DRAWS} (got {self.draws}).")
        if self.samples_per_dataset < 0:
            raise FnwebError(f"Prompts per set must be 0 (all) or more (got {self.samples_per_dataset}).")
        if not 2 <= self.max_tokens <= 8192:
            raise FnwebError(f"Max tokens per prompt must lie between 2 and 8192 (got {self.max_tokens}).")
        if self.score not in SCORES:
            raise FnwebError(f"Unknown scoring '{self.score}'; choose response or all.")
        if self.batch_tokens < 1:
            raise FnwebError(f"Batch tokens must be at least 1 (got {self.batch_tokens}).")
        if self.mcq_items < 0:
            raise FnwebError(f"Multiple-choice items must be 0 (all) or more (got {self.mcq_items}).")


@dataclass(frozen=True)
class Unit:
    """One scored token sequence: a held-out text, or one choice of a multiple-choice item."""

    ids: tuple[int, ...]
    first: int  # index of the first scored target token (>= 1)
    item: int = -1  # multiple-choice item, -1 for a held-out text
    choice: int = -1


# ---- held-out prompts ------------------------------------------------------------------


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


def _text_unit(tokenizer, pair: Pair, config: ExperimentConfig) -> Optional[Unit]:
    """The pair's tokens (cut to max_tokens) and where scoring starts; None if nothing is left to score."""
    if pair.response:
        prompt_ids, response_ids = encode_prompt_and_response(tokenizer, pair, config.prompt_format)
    else:  # no response: score the prompt itself
        prompt_ids, response_ids = encode_pair(tokenizer, pair, config.prompt_format, with_response=False), []
    ids = (list(prompt_ids) + list(response_ids))[: config.max_tokens]
    first = len(prompt_ids) if config.score == "response" and response_ids else 1
    return Unit(tuple(ids), first) if first < len(ids) else None


def _mcq_units(tokenizer, config: ExperimentConfig, used: Optional[set[str]]) -> tuple[list[Unit], list[int], list[str]]:
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
    notes = [f"{config.mcq.label()}: {dropped} items were used to build the template and were left out."] if dropped else []
    if not answers:
        raise FnwebError(f"{config.mcq.label()} has no usable multiple-choice items (question, choices, answer).")
    return units, answers, notes


# ---- the plan ---------------------------------------------------------------------------


def with_controls(ids: Sequence[int], mode: str, draws: int, seed: int) -> list[MaskSpec]:
    """The components' mask, then ``draws`` random masks of the same per-layer sizes."""
    ids = tuple(ids)
    return [MaskSpec(ids, mode)] + [MaskSpec(ids, mode, random_seed=seed + d) for d in range(draws)]


@dataclass
class _Phase:
    name: str  # lesion | preserve
    label: str  # for progress messages
    chunks: list[list[Optional[MaskSpec]]]  # rows of each forward pass; None = unchanged model
    masks: list[dict]  # stacked masks of each chunk


def _phase(name: str, label: str, template: Template, specs: list[MaskSpec], rows: int) -> _Phase:
    """Chunks of at most ``rows`` rows, the unchanged model first (every mask built now, so bad ones fail early)."""
    ordered: list[Optional[MaskSpec]] = [None] + list(dict.fromkeys(specs))
    chunks = [ordered[i : i + rows] for i in range(0, len(ordered), rows)]
    return _Phase(name, label, chunks, [stacked_masks(template, chunk) for chunk in chunks])


@dataclass
class _Run:
    """Everything one experiment needs and has measured so far."""

    lm: LoadedModel
    template: Template
    config: ExperimentConfig
    site: str
    ids: list[int]  # the components studied
    units: list[Unit]  # held-out texts first, then multiple-choice options
    n_text: int
    answers: list[int]  # right choice per multiple-choice item
    n_choices: list[int]  # choices per multiple-choice item
    rows_per_pass: int
    n_layers: int
    width: int  # channels per layer at the site
    warnings: list[str]
    tally: dict = field(default_factory=dict)  # spec (None: unchanged) -> (units, 3) ce sum, kl sum, tokens
    done: dict = field(default_factory=dict)  # phase name -> units measured
    shares: dict = field(default_factory=dict)  # spec -> share of channels selected / kept
    union: bool = True  # the union's random control fits (see _controllable)
    order: list[int] = field(default_factory=list)  # components by lesion effect, strongest first
    curve_len: int = 0  # points of the preservation curve whose random keeps fit
    started: float = field(default_factory=time.monotonic)

    def lesion_specs(self) -> list[MaskSpec]:
        draws, seed = self.config.draws, self.config.seed
        specs = [s for c in self.ids for s in with_controls((c,), "lesion", draws, seed)]
        return specs + (with_controls(self.ids, "lesion", draws, seed) if self.union else [])

    def preserve_specs(self) -> list[MaskSpec]:
        draws, seed = self.config.draws, self.config.seed
        return [s for m in range(1, self.curve_len + 1) for s in with_controls(self.order[:m], "preserve", draws, seed)]

    @property
    def total_channels(self) -> int:
        return self.n_layers * self.width

    def chunks_for(self, n_specs: int) -> int:
        return math.ceil((n_specs + 1) / self.rows_per_pass)


def _vocab_size(model) -> int:
    head = unwrap(model).get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(unwrap(model).config.vocab_size)


def _text_units(lm: LoadedModel, config: ExperimentConfig, used: Optional[set[str]]) -> tuple[list[Unit], list[str]]:
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


def _rows_per_pass(lm: LoadedModel, units: list[Unit], batch_tokens: int) -> int:
    """Rows per forward pass: within ``batch_tokens`` and the logits' memory budget."""
    longest = max(len(u.ids) for u in units)
    scored = max(len(u.ids) - u.first + 1 for u in units)
    return max(1, min(batch_tokens // longest, LOGIT_BYTES // (4 * scored * _vocab_size(lm.model))))


def _prepare(lm: LoadedModel, template: Template, config: ExperimentConfig, progress: ProgressFn) -> _Run:
    config.validate()
    layout = layout_of(lm.model)
    warnings = [w for w in [template.check_fits(layout, lm.model_id)] if w]
    ids = template.check_components(config.components) if config.components else template.component_ids
    if not ids:
        raise FnwebError("This template has no components to test.")
    ids, skipped = _controllable_ids(template, ids, config.seed)
    union = len(ids) > 1 and _controllable(template, ids, config.seed) is None
    if len(ids) > 1 and not union:
        skipped.append("The union of all components leaves too few channels outside it in some layer for a random "
                       "control: it has no row, and the preservation curve stops where its random keeps stop fitting.")
    progress(Progress("loading", 0, 1, "", "Reading held-out prompts"))
    used, notes = template_prompts(template)
    units, text_notes = _text_units(lm, config, used)
    n_text, answers = len(units), []
    if config.mcq is not None:
        mcq_units, answers, mcq_notes = _mcq_units(lm.tokenizer, config, used)
        units, text_notes = units + mcq_units, text_notes + mcq_notes
    n_choices = [sum(1 for u in units if u.item == item) for item in range(len(answers))]
    site = template.infer_site(layout)
    return _Run(lm, template, config, site, list(ids), units, n_text, answers, n_choices,
                _rows_per_pass(lm, units, config.batch_tokens), layout.n_layers, layout.width(site),
                warnings + skipped + notes + text_notes, union=union)


def _controllable(template: Template, ids: Sequence[int], seed: int) -> Optional[str]:
    """None when a random control of these components can be drawn, else why not."""
    try:
        layer_masks(template, MaskSpec(tuple(ids), "lesion", random_seed=seed))
    except FnwebError as exc:
        return str(exc)
    return None


def _controllable_ids(template: Template, ids: Sequence[int], seed: int) -> tuple[list[int], list[str]]:
    """The components whose random control fits, and a note for each one left out."""
    kept, notes = [], []
    for c in ids:
        why = _controllable(template, (c,), seed)
        if why is None:
            kept.append(c)
        else:
            notes.append(f"Component {c} was left out: {why.split(':')[0]}: no random control of the same size "
                         "can be drawn from the rest of that layer.")
    if not kept:
        raise FnwebError("No component can be compared with a random control: each takes over half of some "
                         "layer's channels. Build the template with a stricter threshold.")
    return kept, notes


# ---- measuring --------------------------------------------------------------------------


def _measure_unit(run: _Run, phase: _Phase, index: int, report: Progress, progress: ProgressFn, stop: StopFlag):
    """Every row of the phase over one unit: per spec, (ce sum, kl sum, tokens)."""
    unit = run.units[index]
    device = run.lm.device
    ids = torch.tensor(unit.ids, dtype=torch.long, device=device).unsqueeze(0)  # (1, T)
    targets = ids[0, unit.first :]  # (P,)
    keep = len(unit.ids) - unit.first + 1  # positions first-1 .. T-1; the last predicts nothing
    base = None
    for chunk, masks in zip(phase.chunks, phase.masks):
        stop.check()
        with torch.inference_mode(), apply_masks(run.lm.model, masks, run.site):
            out = run.lm.model(input_ids=ids.expand(len(chunk), -1), use_cache=False, logits_to_keep=keep)
        logits = out.logits[:, :-1]  # (rows, P, vocab)
        if chunk[0] is None:
            base = logits[0]
        for spec, row in zip(chunk, logits):
            stats = next_token_stats(base, row, targets)
            table = run.tally.setdefault(spec, np.zeros((len(run.units), 3)))
            table[index] = (stats["ce"] * stats["tokens"], stats["kl"] * stats["tokens"], stats["tokens"])
        report.done += 1
        progress(report)


def _phases(run: _Run) -> Iterator[_Phase]:
    """The lesion phase, then (once the lesions are known) the preserve phase."""
    yield _make_phase(run, "lesion", "Lesions and random controls", run.lesion_specs())
    if run.config.curve:
        run.order = _order(run)
        run.curve_len = next((m - 1 for m in range(1, len(run.order) + 1)
                              if _controllable(run.template, run.order[:m], run.config.seed)), len(run.order))
        yield _make_phase(run, "preserve", "Preservation curve", run.preserve_specs())


def _make_phase(run: _Run, name: str, label: str, specs: list[MaskSpec]) -> _Phase:
    for spec in specs:
        run.shares.setdefault(spec, _share(run, spec))
    return _phase(name, label, run.template, specs, run.rows_per_pass)


def _share(run: _Run, spec: MaskSpec) -> float:
    masks = layer_masks(run.template, spec)
    zeroed = masked_share(masks, run.n_layers, run.width)
    return zeroed if spec.mode == "lesion" else 1.0 - zeroed


def _order(run: _Run) -> list[int]:
    effect = {c: _mean(run, MaskSpec((c,), "lesion"), run.n_text)[0] for c in run.ids}
    return sorted(run.ids, key=lambda c: (-effect[c], c))


def experiment_stream(
    lm: LoadedModel,
    template: Template,
    config: ExperimentConfig,
    progress: ProgressFn = no_progress,
    stop: Optional[StopFlag] = None,
) -> Iterator[ExperimentResult]:
    """Yield a result snapshot after each prompt (partial), then the final result.

    Bad input raises ``FnwebError`` before any measuring. A stop request ends the run:
    the last snapshot is yielded with ``partial`` set and a note of what it covers.
    """
    stop = stop or StopFlag()
    run = _prepare(lm, template, config, progress)
    n_lesion = len(dict.fromkeys(run.lesion_specs()))
    n_curve = len(run.ids) * (config.draws + 1) if config.curve else 0
    total = len(run.units) * (run.chunks_for(n_lesion) + (run.chunks_for(n_curve) if n_curve else 0))
    report = Progress("measuring", 0, total, "passes", "Lesions and random controls")
    try:
        for phase in _phases(run):
            later = len(run.units) * run.chunks_for(n_curve) if phase.name == "lesion" and n_curve else 0
            report.total = report.done + len(run.units) * len(phase.chunks) + later
            for index in range(len(run.units)):
                report.message = f"{phase.label}: prompt {index + 1} of {len(run.units)}"
                _measure_unit(run, phase, index, report, progress, stop)
                run.done[phase.name] = index + 1
                yield _assemble(run, finished=False)
    except Stopped:
        yield _assemble(run, finished=False, stopped=True)
        return
    progress(Progress("done", 1, 1, "", "Done"))
    yield _assemble(run, finished=True)


def run_experiment(lm, template, config, progress: ProgressFn = no_progress, stop=None) -> ExperimentResult:
    """The final result of ``experiment_stream`` (partial if stopped)."""
    last = None
    for last in experiment_stream(lm, template, config, progress, stop):
        pass
    return last


# ---- assembling -------------------------------------------------------------------------


def _mean(run: _Run, spec: Optional[MaskSpec], n_units: int) -> tuple[float, float, int]:
    """Token-weighted mean CE and KL of a spec over the first ``n_units`` held-out texts."""
    sums = run.tally[spec][: min(n_units, run.n_text)].sum(0)
    tokens = max(sums[2], 1.0)
    return float(sums[0] / tokens), float(sums[1] / tokens), int(sums[2])


def _accuracy(run: _Run, spec: Optional[MaskSpec], n_units: int) -> Optional[float]:
    """Share of fully measured multiple-choice items whose right answer has the highest log-likelihood."""
    if not run.answers or n_units <= run.n_text:
        return None
    logp: dict[int, list[float]] = {}
    for index in range(run.n_text, min(n_units, len(run.units))):  # choices of an item are consecutive
        logp.setdefault(run.units[index].item, []).append(-run.tally[spec][index, 0])
    complete = [item for item, scores in logp.items() if len(scores) == run.n_choices[item]]
    if not complete:
        return None
    return float(np.mean([int(np.argmax(logp[item])) == run.answers[item] for item in complete]))


def _controls(run: _Run, specs: list[MaskSpec], n_units: int, base_ce: float) -> dict:
    """Mean and spread over the random draws of dCE (or CE), KL and accuracy."""
    stats = [_mean(run, s, n_units) for s in specs]
    ce_mean, ce_std = mean_and_spread([ce - base_ce for ce, _, _ in stats])
    kl_mean, kl_std = mean_and_spread([kl for _, kl, _ in stats])
    accs = [_accuracy(run, s, n_units) for s in specs]
    acc_mean, acc_std = mean_and_spread(accs) if accs and None not in accs else (None, None)
    return {"ce": (ce_mean, ce_std), "kl": (kl_mean, kl_std), "acc": (acc_mean, acc_std)}


def _lesion_row(run: _Run, name: str, ids: Sequence[int], n_units: int, base_ce: float) -> LesionRow:
    specs = with_controls(ids, "lesion", run.config.draws, run.config.seed)
    ce, kl, _ = _mean(run, specs[0], n_units)
    random_ = _controls(run, specs[1:], n_units, base_ce)
    per_layer = {layer: len(ch) for layer, ch in run.template.neurons(ids).items()}
    densest = max(per_layer, key=lambda layer: (per_layer[layer], -layer), default=-1)
    return LesionRow(
        component=name, ids=list(ids), neurons=sum(per_layer.values()), share=run.shares[specs[0]], ce=ce, dce=ce - base_ce, kl=kl,
        random_dce_mean=random_["ce"][0], random_dce_std=random_["ce"][1],
        random_kl_mean=random_["kl"][0], random_kl_std=random_["kl"][1],
        dce_ratio=ratio(ce - base_ce, random_["ce"][0]), kl_ratio=ratio(kl, random_["kl"][0]),
        prompts=min(n_units, run.n_text), densest_layer=densest,
        densest_share=per_layer.get(densest, 0) / run.width, acc=_accuracy(run, specs[0], n_units),
        random_acc_mean=random_["acc"][0], random_acc_std=random_["acc"][1],
        stability=_stability(run.template, ids),
    )


def _stability(template: Template, ids: Sequence[int]) -> Optional[float]:
    """A single component's map stability, when its template's build recorded one."""
    recorded = template.stability()
    if recorded is None or len(ids) != 1 or not 0 <= ids[0] < len(recorded["correlation"]):
        return None
    return float(recorded["correlation"][ids[0]])


def _curve_point(run: _Run, m: int, n_units: int) -> CurvePoint:
    specs = with_controls(run.order[:m], "preserve", run.config.draws, run.config.seed)
    ce, kl, _ = _mean(run, specs[0], n_units)
    random_ = _controls(run, specs[1:], n_units, 0.0)
    return CurvePoint(
        m=m, ids=list(run.order[:m]), share_kept=run.shares[specs[0]], ce=ce, kl=kl,
        random_ce_mean=random_["ce"][0], random_ce_std=random_["ce"][1],
        random_kl_mean=random_["kl"][0], random_kl_std=random_["kl"][1], prompts=min(n_units, run.n_text),
        acc=_accuracy(run, specs[0], n_units), random_acc_mean=random_["acc"][0], random_acc_std=random_["acc"][1],
    )


def _settings(run: _Run) -> dict:
    meta, config = run.template.meta, run.config
    return {
        "model_id": run.lm.model_id, "template": run.template.name, "template_model": meta.model_id if meta else None,
        "site": run.site, "k": len(run.template.components), "threshold": meta.threshold if meta else None,
        "threshold_value": meta.threshold_value if meta else None, "components": list(run.ids),
        "heldout": [s.label() for s in config.sources], "samples_per_dataset": config.samples_per_dataset,
        "draws": config.draws, "seed": config.seed, "max_tokens": config.max_tokens, "score": config.score,
        "exclude_template_prompts": config.exclude_template_prompts,
        "mcq": config.mcq.label() if config.mcq else None, "fnweb_version": __version__,
    }


def _partial_note(run: _Run, stopped: bool) -> str:
    n = len(run.units)
    lesion, curve = run.done.get("lesion", 0), run.done.get("preserve", 0)
    head = STOPPED if stopped else IN_PROGRESS
    if lesion < n:
        return f"{head}: lesions measured on {lesion} of {n} prompts; the preservation curve was not reached."
    if run.config.curve and curve < n:
        return f"{head}: lesions complete; preservation curve measured on {curve} of {n} prompts."
    return f"{head}."


def _assemble(run: _Run, finished: bool, stopped: bool = False) -> ExperimentResult:
    n_lesion, n_curve = run.done.get("lesion", 0), run.done.get("preserve", 0)
    base_ce = _mean(run, None, n_lesion)[0] if n_lesion else float("nan")
    rows = [_lesion_row(run, str(c), (c,), n_lesion, base_ce) for c in run.ids] if n_lesion else []
    union = _lesion_row(run, "union", run.ids, n_lesion, base_ce) if n_lesion and run.union else None
    curve = [_curve_point(run, m, n_curve) for m in range(1, run.curve_len + 1)] if n_curve else []
    text_tokens = int(sum(len(u.ids) - u.first for u in run.units[: run.n_text]))
    return ExperimentResult(
        baseline_ce=base_ce if n_lesion else 0.0, rows=rows, union=union, curve=curve, settings=_settings(run),
        prompts=run.n_text, tokens=text_tokens, baseline_acc=_accuracy(run, None, n_lesion),
        mcq_items=len(run.answers), partial=not finished, partial_note="" if finished else _partial_note(run, stopped),
        warnings=list(run.warnings), seconds=round(time.monotonic() - run.started, 2),
    )
