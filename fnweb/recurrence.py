"""Does a template's network recur in single samples? Per-sample ICA matched to the template by IoU.

For each held-out sample (one prompt with its response, or a small group of them
pooled) ``recurrence_stream`` captures that sample's own activations at the template's
site and layers, decomposes them with the same low-rank ICA at a small k, thresholds
the maps as the template was thresholded, and compares every per-sample mask with every
template component by IoU (|and| / |or|). A template component *recurs* in a sample
when its best IoU exceeds the threshold (the paper: IoU > 0.2, strict). Beside each
component, a random twin (as many channels per layer, drawn outside it, afresh for each
sample) is matched the same way: how often a network of that size and layer spread
recurs by chance.

The result is a table of template component x prompt set: the share of samples in
which the component recurs, its mean best IoU, and the same for its random twin. After
each sample the engine yields a snapshot (partial until the end); a stop request ends
the run with the last snapshot, marked partial. Samples too short for k components are
skipped with a note, and a set with none left is an error.

It knows nothing about the UI, files or lesions.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np

from . import __version__
from .archs import layout_of
from .capture import capture
from .decompose import decompose
from .errors import FnwebError, Stopped
from .experiments import template_prompts
from .masks import random_control
from .models import LoadedModel
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .prompts import PromptSource, encode_pair, load_pairs
from .templates import Template
from .thresholds import DEFAULT_RULE, resolved_value, threshold, threshold_rule

DEFAULT_IOU = 0.2  # the paper's bar: a template recurs in a sample when IoU > 0.2
MAX_K = 64
IN_PROGRESS, STOPPED = "In progress", "Stopped by request"


@dataclass
class RecurrenceConfig:
    """Which samples to decompose and how to match them (recorded in the result's settings)."""

    sources: list[PromptSource] = field(default_factory=list)  # held-out prompt sets
    samples_per_dataset: int = 20  # samples per set (each of group_size prompts)
    group_size: int = 1  # prompts pooled into one sample (more tokens for the ICA)
    k: int = 10  # ICA components per sample
    iou_threshold: float = DEFAULT_IOU  # recurs when the best IoU is above this
    max_tokens: int = 128  # per prompt + response, as templates are built
    seed: int = 0  # held-out sampling, the per-sample ICA and the random twins
    threshold: Optional[str] = None  # None: the template's (percentile | zscore)
    threshold_value: Optional[float] = None  # None: the template's
    exclude_template_prompts: bool = True  # leave out the prompts the template was built from
    prompt_format: str = "auto"
    batch_size: int = 8

    def validate(self) -> None:
        if not self.sources:
            raise FnwebError("No held-out prompt set chosen: pick a built-in set, a file or a Hub dataset.")
        if not 1 <= self.samples_per_dataset <= 10_000:
            raise FnwebError(f"Samples per set must lie between 1 and 10000 (got {self.samples_per_dataset}).")
        if not 1 <= self.group_size <= 100:
            raise FnwebError(f"Prompts per sample must lie between 1 and 100 (got {self.group_size}).")
        if not 1 <= self.k <= MAX_K:
            raise FnwebError(f"Per-sample components k must lie between 1 and {MAX_K} (got {self.k}).")
        if not 0.0 <= self.iou_threshold < 1.0:
            raise FnwebError(f"The IoU threshold must lie in [0, 1) (got {self.iou_threshold}).")
        if not 2 <= self.max_tokens <= 8192:
            raise FnwebError(f"Max tokens per prompt must lie between 2 and 8192 (got {self.max_tokens}).")


@dataclass
class SampleMatch:
    """One sample's per-sample networks matched to the template."""

    source: str  # the prompt set's label
    index: int  # the sample's number within its set (0-based)
    prompts: int
    tokens: int
    best_iou: list[float]  # per template component (RecurrenceResult.components order)
    best_match: list[int]  # the per-sample component that gave the best IoU
    random_iou: list[Optional[float]]  # the best IoU of each component's random twin (None: no twin fits)
    converged: bool  # the per-sample FastICA converged
    seconds: float


@dataclass
class RecurrenceCell:
    """One template component on one prompt set."""

    source: str
    component: int
    samples: int
    share: float  # share of samples where the component recurs (best IoU > threshold)
    mean_iou: float  # mean best IoU over the samples
    random_share: Optional[float]  # the same for its random twins (None: no twin fits)
    random_mean_iou: Optional[float]


@dataclass
class RecurrenceResult:
    """The template x prompt-set table and the per-sample matches behind it."""

    components: list[int]
    sets: list[str]
    cells: list[RecurrenceCell]
    samples: list[SampleMatch]
    k: int
    iou_threshold: float
    settings: dict
    partial: bool = False
    partial_note: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def share_table(self) -> dict[str, dict[int, float]]:
        """set -> component -> share of its samples where the component recurs (a heatmap's values)."""
        table: dict[str, dict[int, float]] = {s: {} for s in self.sets}
        for cell in self.cells:
            table[cell.source][cell.component] = cell.share
        return table

    def to_dict(self) -> dict:
        return asdict(self)


# ---- masks and matching ------------------------------------------------------------------


def template_masks(template: Template, ids: Sequence[int]) -> np.ndarray:
    """The components' binary masks over the captured channels: (len(layers) * width, len(ids))."""
    masks = np.zeros((len(template.layers) * template.width, len(ids)), dtype=bool)
    column = {layer: i for i, layer in enumerate(template.layers)}
    for j, c in enumerate(ids):
        for layer, channels in template.components[c].items():
            masks[column[layer] * template.width + np.asarray(channels, dtype=np.int64), j] = True
    return masks


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every column of ``a`` with every column of ``b`` (boolean, same rows): (a cols, b cols)."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    inter = a32.T @ b32
    union = a32.sum(0)[:, None] + b32.sum(0)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)


def best_matches(reference: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each reference mask, its best IoU with any sample mask, and which sample mask that was."""
    iou = iou_matrix(reference, sample)
    return iou.max(1), iou.argmax(1)


def random_twins(template: Template, ids: Sequence[int], seed: int, sample: int = 0) -> tuple[np.ndarray, list[bool]]:
    """Per component, as many channels per layer drawn outside it (seeded per sample); and which fit at all."""
    twins = np.zeros((len(template.layers) * template.width, len(ids)), dtype=bool)
    column = {layer: i for i, layer in enumerate(template.layers)}
    fits = []
    for j, c in enumerate(ids):
        twin_seed = int(np.random.SeedSequence([seed, sample, c]).generate_state(1)[0])
        try:
            drawn = random_control(template.neurons([c]), template.width, twin_seed)
        except FnwebError:  # the component takes over half of some layer: no twin of its size fits
            fits.append(False)
            continue
        for layer, channels in drawn.items():
            twins[column[layer] * template.width + channels, j] = True
        fits.append(True)
    return twins, fits


def sample_masks(matrix, k: int, kind: str, value: float, seed: int, standardise: bool = True,
                 mean=None, std=None, stop: Optional[StopFlag] = None) -> tuple[np.ndarray, bool]:
    """A sample's own networks: ICA with k components of its (tokens, channels) matrix, thresholded."""
    tokens = matrix.shape[0]
    if tokens <= k + 1:
        raise FnwebError(too_short_message(tokens, k))
    result = decompose(matrix, k=k, seed=seed, standardise=standardise, mean=mean, std=std, stop=stop)
    return threshold(result.maps, kind, value), result.converged


def too_short_message(tokens: int, k: int) -> str:
    return (f"A sample of {tokens} tokens is too short for k = {k} per-sample components: the ICA needs more "
            f"than k + 1 = {k + 1} tokens. Lower k, pool prompts into larger groups, or raise max tokens.")


# ---- samples -----------------------------------------------------------------------------


@dataclass
class _Sample:
    source: str
    index: int
    sequences: list[list[int]]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def _samples_of(lm: LoadedModel, source: PromptSource, config: RecurrenceConfig,
                used: Optional[set[str]]) -> tuple[list[_Sample], list[str]]:
    """Up to ``samples_per_dataset`` samples of one set (seeded), each of ``group_size`` prompts."""
    pairs = load_pairs(source)
    random.Random(config.seed).shuffle(pairs)
    notes = []
    if used and config.exclude_template_prompts:
        kept = [p for p in pairs if " ".join(p.prompt.split()) not in used]  # as template_prompts keys them
        if len(kept) < len(pairs):
            notes.append(f"{source.label()}: {len(pairs) - len(kept)} of its {len(pairs)} prompts were used to build "
                         f"the template; they were left out ({len(kept)} remain).")
        pairs = kept
    if len(pairs) < config.group_size:
        raise FnwebError(f"{source.label()} has {len(pairs)} prompts left, fewer than one sample of "
                         f"{config.group_size}: choose another set or a smaller group.")
    wanted = config.samples_per_dataset * config.group_size
    encoded = [encode_pair(lm.tokenizer, p, config.prompt_format)[: config.max_tokens] for p in pairs[:wanted]]
    groups = [encoded[i : i + config.group_size] for i in range(0, len(encoded) - config.group_size + 1,
                                                                 config.group_size)]
    samples = [_Sample(source.label(), i, g) for i, g in enumerate(groups)]
    short = [s for s in samples if s.tokens <= config.k + 1]
    if short:
        notes.append(f"{source.label()}: {len(short)} of its {len(samples)} samples have {config.k + 1} tokens or "
                     f"fewer, too few for k = {config.k} per-sample components; they were skipped. Lower k or pool "
                     "prompts into larger groups to keep them.")
    if len(short) == len(samples):
        longest = max(s.tokens for s in samples)
        raise FnwebError(f"{source.label()} has no usable sample. " + too_short_message(longest, config.k))
    return [s for s in samples if s.tokens > config.k + 1], notes


# ---- the run -----------------------------------------------------------------------------


@dataclass
class _Run:
    lm: LoadedModel
    template: Template
    config: RecurrenceConfig
    site: str
    ids: list[int]
    kind: str  # threshold kind and value for the per-sample maps
    value: float
    standardise: bool
    reference: np.ndarray  # the template's masks (channels, components)
    samples: list[_Sample]
    sets: list[str]
    warnings: list[str]
    matches: list[SampleMatch] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def _threshold_of(template: Template, config: RecurrenceConfig) -> tuple[str, float, list[str]]:
    """The threshold for per-sample maps: the config's, else the template's, else the default percentile."""
    meta = template.meta
    kind = config.threshold or (meta.threshold if meta else None)
    notes = []
    if kind is None:
        kind = DEFAULT_RULE
        notes.append(f"This template records no threshold; the per-sample maps use the default {kind} "
                     f"({threshold_rule(kind).default:g}).")
    value = config.threshold_value
    if value is None and meta and meta.threshold == kind:
        value = meta.threshold_value
    value = threshold_rule(kind).check(resolved_value(kind, value))  # a bad kind or value fails before any work
    return kind, value, notes


def _prepare(lm: LoadedModel, template: Template, config: RecurrenceConfig, progress: ProgressFn) -> _Run:
    config.validate()
    layout = layout_of(lm.model)
    warnings = [w for w in [template.check_fits(layout, lm.model_id)] if w]
    ids = template.component_ids
    if not ids:
        raise FnwebError("This template has no components to look for.")
    kind, value, notes = _threshold_of(template, config)
    progress(Progress("loading", 0, 1, "", "Reading held-out prompts"))
    used, used_notes = template_prompts(template) if config.exclude_template_prompts else (None, [])
    samples: list[_Sample] = []
    for source in config.sources:
        found, set_notes = _samples_of(lm, source, config, used)
        samples += found
        notes += set_notes
    sets = list(dict.fromkeys(s.source for s in samples))
    standardise = template.meta.standardise if template.meta else True
    return _Run(lm, template, config, template.infer_site(layout), ids, kind, value, standardise,
                template_masks(template, ids), samples, sets, warnings + notes + used_notes)


def _match(run: _Run, ordinal: int, stop: StopFlag) -> SampleMatch:
    """Capture, decompose and threshold one sample; match its networks to the template's and the twins'."""
    sample, clock = run.samples[ordinal], time.perf_counter()
    acts = capture(run.lm.model, sample.sequences, site=run.site, layers=run.template.layers,
                   batch_size=run.config.batch_size, pad_id=run.lm.tokenizer.pad_token_id or 0, stop=stop)
    masks, converged = sample_masks(acts.matrix, run.config.k, run.kind, run.value, run.config.seed,
                                    run.standardise, acts.mean, acts.std, stop)
    best, which = best_matches(run.reference, masks)
    twins, fits = random_twins(run.template, run.ids, run.config.seed, ordinal)
    twin_best, _ = best_matches(twins, masks)
    return SampleMatch(
        source=sample.source, index=sample.index, prompts=len(sample.sequences), tokens=sample.tokens,
        best_iou=[round(float(x), 4) for x in best], best_match=[int(x) for x in which],
        random_iou=[round(float(x), 4) if fit else None for x, fit in zip(twin_best, fits)],
        converged=converged, seconds=round(time.perf_counter() - clock, 3),
    )


def recurrence_stream(
    lm: LoadedModel,
    template: Template,
    config: RecurrenceConfig,
    progress: ProgressFn = no_progress,
    stop: Optional[StopFlag] = None,
) -> Iterator[RecurrenceResult]:
    """Yield a result snapshot after each sample (partial), then the final result.

    Bad input raises ``FnwebError`` before any capture. A stop request ends the run: the
    last snapshot is yielded with ``partial`` set and a note of what it covers.
    """
    stop = stop or StopFlag()
    run = _prepare(lm, template, config, progress)
    report = Progress("measuring", 0, len(run.samples), "samples", "Per-sample ICA")
    progress(report)
    try:
        for ordinal, sample in enumerate(run.samples):
            stop.check()
            report.message = f"Per-sample ICA: {sample.source}, sample {sample.index + 1}"
            run.matches.append(_match(run, ordinal, stop))
            report.done = ordinal + 1
            progress(report)
            if ordinal + 1 < len(run.samples):
                yield _assemble(run, finished=False)
    except Stopped:
        yield _assemble(run, finished=False, stopped=True)
        return
    progress(Progress("done", 1, 1, "", "Done"))
    yield _assemble(run, finished=True)


def run_recurrence(lm, template, config, progress: ProgressFn = no_progress, stop=None) -> RecurrenceResult:
    """The final result of ``recurrence_stream`` (partial if stopped)."""
    last = None
    for state in recurrence_stream(lm, template, config, progress, stop):
        last = state
    return last


# ---- assembling --------------------------------------------------------------------------


def _cell(run: _Run, source: str, j: int) -> RecurrenceCell:
    matches = [m for m in run.matches if m.source == source]
    bar = run.config.iou_threshold
    best = np.array([m.best_iou[j] for m in matches])
    twins = [m.random_iou[j] for m in matches if m.random_iou[j] is not None]
    return RecurrenceCell(
        source=source, component=run.ids[j], samples=len(matches),
        share=float((best > bar).mean()), mean_iou=float(best.mean()),
        random_share=float((np.array(twins) > bar).mean()) if twins else None,
        random_mean_iou=float(np.mean(twins)) if twins else None,
    )


def _settings(run: _Run) -> dict:
    meta, config = run.template.meta, run.config
    return {
        "model_id": run.lm.model_id, "template": run.template.name, "template_model": meta.model_id if meta else None,
        "site": run.site, "template_k": len(run.ids), "k": config.k, "threshold": run.kind,
        "threshold_value": run.value, "iou_threshold": config.iou_threshold, "standardise": run.standardise,
        "heldout": [s.label() for s in config.sources], "samples_per_dataset": config.samples_per_dataset,
        "group_size": config.group_size, "max_tokens": config.max_tokens, "seed": config.seed,
        "exclude_template_prompts": config.exclude_template_prompts, "fnweb_version": __version__,
    }


def _assemble(run: _Run, finished: bool, stopped: bool = False) -> RecurrenceResult:
    done = {m.source for m in run.matches}
    cells = [_cell(run, source, j) for source in run.sets if source in done for j in range(len(run.ids))]
    unconverged = sum(not m.converged for m in run.matches)
    notes = list(run.warnings) + ([f"The per-sample ICA did not converge on {unconverged} of {len(run.matches)} "
                                   "samples; their networks are less reliable."] if unconverged else [])
    note = "" if finished else (f"{STOPPED if stopped else IN_PROGRESS}: {len(run.matches)} of "
                                f"{len(run.samples)} samples decomposed.")
    return RecurrenceResult(
        components=list(run.ids), sets=list(run.sets), cells=cells, samples=list(run.matches), k=run.config.k,
        iou_threshold=run.config.iou_threshold, settings=_settings(run), partial=not finished, partial_note=note,
        warnings=notes, seconds=round(time.monotonic() - run.started, 2),
    )
