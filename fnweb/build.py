"""Build a template: sample prompts, capture activations, decompose, threshold.

``build_template`` is the one pipeline the CLI, the app and the tests call. It
reports phases through ``progress`` and stops (raising ``Stopped``, returning
nothing) when ``stop`` is set; nothing is written unless ``output`` is given, and then
only once the template is complete.

Under ``accelerate launch`` (``shards``: ``fnweb.shards``) every process reads the same
prompts and captures only its share; the decomposition runs where the rows are and
FastICA, the stability re-runs and the cards on the main process, which alone writes.
The rows stay in memory or, with ``memmap_folder``, in a mapped file (``fnweb.rowstore``).
Before the capture the build says how much memory it needs and refuses when that is
more than is free (``fnweb.fit``); an allocation that fails anyway is said as one error.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from . import __version__
from .archs import DEFAULT_SITE, check_site, layout_of
from .capture import STORAGE_DTYPES, capture, input_device, row_starts
from .channel_stats import ChannelStats
from .checks import check_seed
from .decompose import decompose
from .errors import FnwebError
from .explain import DEFAULT_TOP, build_signals, cards_from_build
from .fit import build_estimate, said_out_of_memory
from .models import LoadedModel, weights_bytes
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .prompts import LOCAL_SUFFIXES, Pair, PromptSource, encode_pairs, sample_pairs
from .rowstore import row_store
from .shards import Shards
from .stability import DEFAULT_RUNS, component_stability
from .templates import Template, TemplateMeta
from .thresholds import DEFAULT_RULE, resolved_value, threshold, threshold_rule


@dataclass
class BuildConfig:
    """Everything that decides a template (recorded in its metadata)."""

    sources: list[PromptSource] = field(default_factory=list)
    samples_per_dataset: int = 100
    max_tokens: int = 128  # per sample, prompt and response together
    k: int = 10  # ICA components
    site: str = DEFAULT_SITE  # a name in fnweb.archs.SITES
    threshold: str = DEFAULT_RULE  # a name in fnweb.thresholds.THRESHOLDS
    threshold_value: Optional[float] = None  # None: the rule's default (98 for percentile, 1.96 for zscore)
    seed: int = 0
    batch_size: int = 8
    standardise: bool = True  # z-score channels before PCA, as the original
    layers: Optional[Sequence[int]] = None  # None: every layer
    prompt_format: str = "auto"  # auto | chat | alpaca | chatml | basic
    activation_dtype: str = "auto"  # storage of captured activations: auto (float16) | bfloat16 | float32
    stability_runs: int = DEFAULT_RUNS  # PCA+ICA re-runs on resampled tokens, for each component's stability; 0: none
    card_contexts: int = DEFAULT_TOP  # strongest contexts kept per component for its card (fnweb.cards); 0: no cards
    card_negative: bool = False  # also keep each component's most negative contexts
    memmap_folder: Optional[str] = None  # keep each process's rows in a float16 file mapped from this folder

    def validate(self) -> None:
        if not self.sources:
            raise FnwebError("No prompt sources chosen: pick a built-in set, a file or a Hub dataset.")
        if not 1 <= self.k <= 512:
            raise FnwebError(f"k must lie between 1 and 512 (got {self.k}).")
        if not 2 <= self.max_tokens <= 8192:
            raise FnwebError(f"Max tokens per sample must lie between 2 and 8192 (got {self.max_tokens}).")
        if not 1 <= self.samples_per_dataset <= 100_000:
            raise FnwebError(f"Samples per dataset must lie between 1 and 100000 (got {self.samples_per_dataset}).")
        if not 1 <= self.batch_size <= 1024:
            raise FnwebError(f"Batch size must lie between 1 and 1024 (got {self.batch_size}).")
        if not 0 <= self.stability_runs <= 100:
            raise FnwebError(f"Stability re-runs must lie between 0 and 100 (got {self.stability_runs}).")
        if not 0 <= self.card_contexts <= 200:
            raise FnwebError(f"Card contexts per component must lie between 0 and 200 (got {self.card_contexts}).")
        if self.memmap_folder is not None and not str(self.memmap_folder).strip():
            raise FnwebError("The memory-map folder is empty: name a folder, or leave it out to keep rows in memory.")
        check_seed(self.seed)
        check_site(self.site)
        threshold_rule(self.threshold).check(self.resolved_threshold)

    @property
    def resolved_threshold(self) -> float:
        return resolved_value(self.threshold, self.threshold_value)


@dataclass
class BuildResult:
    template: Template
    seconds: dict  # per phase
    n_tokens: int
    path: Optional[Path] = None
    parts: dict = field(default_factory=dict)  # the decomposition's seconds per part (fnweb.sketch.PartTimes)
    fit: str = ""  # the memory estimate's line
    maps: Optional[np.ndarray] = None  # (channels, k) component maps before thresholding


def build_template(
    lm: LoadedModel,
    config: BuildConfig,
    output: Optional[str | Path] = None,
    progress: ProgressFn = no_progress,
    stop: Optional[StopFlag] = None,
    shards: Optional[Shards] = None,
    pairs: Optional[Sequence[Pair]] = None,
) -> BuildResult:
    """Run the whole pipeline; save to ``output`` (a .json path) when given (the main process only).

    ``pairs``: the prompts ``sample_pairs`` gives for the config, when the caller read them
    already (before loading the model, so that an unreadable dataset fails first).
    """
    stop, shards = stop or StopFlag(), shards or Shards()
    config.validate()  # bad values fail before any work
    seconds, clock = {}, time.perf_counter()
    pairs, sequences, plan = _read_prompts(lm, config, shards, progress, pairs)
    seconds["prompts"], clock = time.perf_counter() - clock, time.perf_counter()
    own = [sequences[i] for i in plan[shards.rank]]
    stop.check()
    with ExitStack() as held:
        store, fit = _prepare_rows(lm, config, shards, own, plan, sequences, held, progress)
        acts = capture(
            lm.model, own, site=config.site, layers=config.layers, batch_size=config.batch_size,
            pad_id=lm.tokenizer.pad_token_id or 0, storage=config.activation_dtype, progress=progress, stop=stop,
            store=store,
        )
        acts.mean, acts.std = shards.pooled(acts.n_tokens, acts.mean, acts.std)  # over every process's rows
        if shards.distributed:
            progress(Progress("capturing", 1, 1, "", "Captured tokens per process: "
                              + " + ".join(f"{n:,}" for n in shards.counts(acts.n_tokens))))
        seconds["capture"], clock = time.perf_counter() - clock, time.perf_counter()
        order = _gathered_order([len(s) for s in sequences], plan) if shards.distributed else None
        result = decompose(acts.matrix, k=config.k, seed=config.seed, standardise=config.standardise,
                           progress=progress, stop=stop, mean=acts.mean, std=acts.std,
                           device=_pca_device(lm), shards=shards, row_order=order, release=store.release)
        seconds["decompose"], clock = time.perf_counter() - clock, time.perf_counter()
        stability = None
        if config.stability_runs and shards.is_main:
            stability = component_stability(result, config.threshold, config.resolved_threshold,
                                            config.stability_runs, config.seed, progress, stop).to_dict()
            seconds["stability"], clock = time.perf_counter() - clock, time.perf_counter()

        progress(Progress("thresholding", 0, 1, "", "Thresholding"))
        masks = threshold(result.maps, config.threshold, config.resolved_threshold)
        meta = _meta(lm, config, acts, result, pairs, stability, shards.world)
        template = Template.from_masks(masks, acts.layers, acts.width, meta)
        # for mean ablation and the magnitude control: every process's pooled moments
        template.stats = ChannelStats.from_moments(acts.layers, acts.mean, acts.std, result.n_tokens)
        seconds["threshold"] = time.perf_counter() - clock
        seconds.update(_add_cards(lm, template, config, (result, acts, sequences, pairs), progress, stop,
                                  (shards, order, store)))
    stop.check()  # a stop during the last phase still leaves nothing behind
    path = template.save(output) if output is not None and shards.is_main else None
    progress(Progress("done", 1, 1, "", "Done"))
    return BuildResult(template=template, seconds=seconds, n_tokens=result.n_tokens, path=path,
                       parts=result.info.get("seconds", {}), fit=fit, maps=result.maps)


def _read_prompts(lm, config: BuildConfig, shards: Shards, progress: ProgressFn, pairs: Optional[Sequence[Pair]]):
    """(pairs, their token ids, each process's share of them)."""
    progress(Progress("loading", 0, 1, "", "Reading prompts"))
    if pairs is None:
        pairs = sample_pairs(config.sources, config.samples_per_dataset, config.seed)
    sequences = encode_pairs(lm.tokenizer, pairs, config.max_tokens, config.prompt_format)
    n_tokens = sum(len(s) for s in sequences)
    if config.k >= n_tokens:  # say so before the capture, not after it
        raise FnwebError(
            f"k = {config.k} components need more data: only {n_tokens} tokens were captured. "
            "Use more samples or longer prompts, or a smaller k."
        )
    plan = shards.plan([len(s) for s in sequences])
    if shards.distributed:  # each process's share, in the log: the build is sharded, not repeated
        shares = ", ".join(f"process {r} {sum(len(sequences[i]) for i in part):,} tokens"
                           for r, part in enumerate(plan))
        progress(Progress("sharding", 1, 1, "", f"{shards.world} processes share {len(sequences)} prompts: {shares}"))
    return pairs, sequences, plan


def estimate_build(lm: LoadedModel, config: BuildConfig, tokens: Optional[int] = None, total: Optional[int] = None,
                   processes: int = 1, local: int = 1):
    """The build's memory (``fnweb.fit``) for the largest process's ``tokens`` of ``total``.

    Without counts: the most ``config`` can give (every sample ``max_tokens`` long), before any prompt is read.
    """
    layout = layout_of(lm.model)
    layers = len(config.layers) if config.layers is not None else layout.n_layers
    channels, dtype = layers * layout.width(config.site), STORAGE_DTYPES[config.activation_dtype]
    total = total or len(config.sources) * config.samples_per_dataset * config.max_tokens
    return build_estimate(weights_bytes(lm.model), input_device(lm.model).type == "cpu", tokens or total, total,
                          channels, torch.empty((), dtype=dtype).element_size(), config.k, processes, local,
                          config.memmap_folder is not None, config.site)


def _prepare_rows(lm, config: BuildConfig, shards: Shards, own, plan, sequences, held: ExitStack, progress):
    """Check that the build fits, then make this process's row store (every process agrees, or all stop)."""
    largest = max(sum(len(sequences[i]) for i in part) for part in plan)
    estimate = estimate_build(lm, config, largest, sum(len(s) for s in sequences), shards.world,
                              _local_processes(shards))
    progress(Progress("loading", 1, 1, "", estimate.line()))
    failure = None
    try:
        estimate.check()
        with said_out_of_memory(estimate):  # rows in memory are allocated here, all at once
            store = held.enter_context(row_store(sum(len(s) for s in own), estimate.channels,
                                                 STORAGE_DTYPES[config.activation_dtype], config.memmap_folder,
                                                 f"-{shards.rank}"))
    except FnwebError as exc:
        failure = exc
    shards.agree(failure)
    held.enter_context(said_out_of_memory(estimate))  # and any allocation from the capture to the cards
    return store, estimate.line()


def _local_processes(shards: Shards) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", shards.world))


def _pca_device(lm: LoadedModel):
    device = input_device(lm.model)
    return device if device.type == "cuda" else None  # PCA passes on the GPU too


def _gathered_order(lengths: list[int], plan: list[list[int]]) -> np.ndarray:
    """For each row gathered in rank order, its row in a one-process build (``capture``'s length order)."""
    starts = row_starts(lengths)
    rows = []
    for indices in plan:
        local = row_starts([lengths[i] for i in indices])
        for j in sorted(range(len(indices)), key=lambda j: local[j]):
            rows.append(np.arange(starts[indices[j]], starts[indices[j]] + lengths[indices[j]]))
    return np.concatenate(rows)


def _meta(lm, config: BuildConfig, acts, result, pairs, stability, processes: int) -> TemplateMeta:
    layout = layout_of(lm.model)
    info = {key: value for key, value in result.info.items() if key != "seconds"}
    return TemplateMeta(
        model_id=lm.model_id, model_revision=lm.request.revision, architecture=layout.model_type,
        site=config.site, n_layers=layout.n_layers, width=acts.width, k=config.k,
        threshold=config.threshold, threshold_value=config.resolved_threshold,
        datasets=_dataset_records(config.sources, pairs), samples_per_dataset=config.samples_per_dataset,
        max_tokens=config.max_tokens, n_tokens=result.n_tokens, seed=config.seed, standardise=config.standardise,
        fnweb_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ica={"converged": result.converged, "explained_variance": result.explained_variance.round(4).tolist(),
             **info, **({"stability": stability} if stability else {})},
        processes=processes,
    )


def _add_cards(lm, template: Template, config: BuildConfig, made, progress: ProgressFn, stop: StopFlag,
               sharded=None) -> dict:
    """Give the template its component cards (``fnweb.cards``) from what the build ``made``; {"cards": seconds}.

    ``sharded`` (shards, row order, row store): each process reads its rows' signals; the main one makes the cards.
    """
    if not config.card_contexts:
        return {}
    clock = time.perf_counter()
    progress(Progress("thresholding", 0, 1, "", "Making the component cards"))
    result, acts, sequences, pairs = made
    shards, order, store = sharded or (Shards(), None, None)
    signals = build_signals(acts.matrix, template, result.maps, acts.mean, acts.std, config.standardise,
                            store.release if store is not None else None, stop)
    signals = shards.gather_rows(torch.from_numpy(signals))
    if not shards.is_main:
        return {"cards": time.perf_counter() - clock}
    signals = signals.numpy()
    if order is not None:
        ordered = np.empty_like(signals)
        ordered[order] = signals
        signals = ordered
    template.cards = cards_from_build(lm, template, result, acts, sequences, pairs, [s.label() for s in config.sources],
                                      config.card_contexts, config.card_negative, config.standardise, stop,
                                      signals).to_dict()
    return {"cards": time.perf_counter() - clock}


def _dataset_records(sources: Sequence[PromptSource], pairs) -> list[dict]:
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.source] = counts.get(pair.source, 0) + 1
    return [
        {"name": s.name, "config": s.config, "split": s.split, "samples": counts.get(s.label(), 0)}
        for s in sources
    ]


def default_output_path(base: str | Path, model_id: str, sources: Sequence[PromptSource]) -> Path:
    """The original's layout: ``{base}/{model base name}/{datasets joined by '__'}/global_templates.json``."""
    model_name = Path(model_id.replace("embedded:", "")).name
    def short(name: str) -> str:
        name = name.replace("builtin:", "builtin-")
        return Path(name).stem if Path(name).suffix.lower() in LOCAL_SUFFIXES else name.replace("/", "_")

    datasets = "__".join(short(s.name) for s in sources)
    return Path(base) / model_name / datasets / "global_templates.json"
