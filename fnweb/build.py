"""Build a template: sample prompts, capture activations, decompose, threshold.

``build_template`` is the one pipeline the CLI, the app and the tests call. It
reports phases through ``progress`` and stops (raising ``Stopped``, returning
nothing) when ``stop`` is set; nothing is written unless ``output`` is given, and then
only once the template is complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import __version__
from .archs import DEFAULT_SITE, check_site, layout_of
from .capture import capture
from .channel_stats import ChannelStats
from .checks import check_seed
from .decompose import decompose
from .errors import FnwebError
from .explain import DEFAULT_TOP, cards_from_build
from .models import LoadedModel
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .prompts import LOCAL_SUFFIXES, Pair, PromptSource, encode_pairs, sample_pairs
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
    maps: Optional[np.ndarray] = None  # the decomposition's oriented maps (channels, k), before thresholding


def build_template(
    lm: LoadedModel,
    config: BuildConfig,
    output: Optional[str | Path] = None,
    progress: ProgressFn = no_progress,
    stop: Optional[StopFlag] = None,
    pairs: Optional[Sequence[Pair]] = None,
) -> BuildResult:
    """Run the whole pipeline; save to ``output`` (a .json path) when given.

    ``pairs``: the prompts ``sample_pairs`` gives for the config, when the caller read them
    already (before loading the model, so that an unreadable dataset fails first).
    """
    stop = stop or StopFlag()
    config.validate()  # bad values fail before any work
    layout = layout_of(lm.model)
    seconds, clock = {}, time.perf_counter()
    pairs, sequences = _prompts(lm, config, pairs, progress)
    seconds["prompts"], clock = time.perf_counter() - clock, time.perf_counter()
    stop.check()

    acts = capture(
        lm.model, sequences, site=config.site, layers=config.layers, batch_size=config.batch_size,
        pad_id=lm.tokenizer.pad_token_id or 0, storage=config.activation_dtype, progress=progress, stop=stop,
    )
    seconds["capture"], clock = time.perf_counter() - clock, time.perf_counter()

    result = decompose(acts.matrix, k=config.k, seed=config.seed, standardise=config.standardise,
                       progress=progress, stop=stop, mean=acts.mean, std=acts.std,
                       device=lm.device if lm.device.type == "cuda" else None)  # PCA passes on the GPU too
    seconds["decompose"], clock = time.perf_counter() - clock, time.perf_counter()
    stability = None
    if config.stability_runs:
        stability = component_stability(result, config.threshold, config.resolved_threshold, config.stability_runs,
                                        config.seed, progress, stop).to_dict()
        seconds["stability"], clock = time.perf_counter() - clock, time.perf_counter()

    progress(Progress("thresholding", 0, 1, "", "Thresholding"))
    masks = threshold(result.maps, config.threshold, config.resolved_threshold)
    meta = _meta(lm, config, layout, acts, pairs, result, stability)
    template = Template.from_masks(masks, acts.layers, acts.width, meta)
    template.stats = ChannelStats.from_moments(acts.layers, acts.mean, acts.std, acts.n_tokens)  # for mean ablation
    seconds["threshold"] = time.perf_counter() - clock
    seconds.update(_add_cards(lm, template, config, (result, acts, sequences, pairs), progress, stop))
    stop.check()  # a stop during the last phase still leaves nothing behind
    path = template.save(output) if output is not None else None
    progress(Progress("done", 1, 1, "", "Done"))
    return BuildResult(template=template, seconds=seconds, n_tokens=acts.n_tokens, path=path, maps=result.maps)


def _prompts(lm: LoadedModel, config: BuildConfig, pairs: Optional[Sequence[Pair]],
             progress: ProgressFn) -> tuple[Sequence[Pair], list]:
    """The prompts (read now unless given) and their token sequences; too few tokens for k is said here,
    before the capture, not after it."""
    progress(Progress("loading", 0, 1, "", "Reading prompts"))
    if pairs is None:
        pairs = sample_pairs(config.sources, config.samples_per_dataset, config.seed)
    sequences = encode_pairs(lm.tokenizer, pairs, config.max_tokens, config.prompt_format)
    n_tokens = sum(len(s) for s in sequences)
    if config.k >= n_tokens:
        raise FnwebError(
            f"k = {config.k} components need more data: only {n_tokens} tokens were captured. "
            "Use more samples or longer prompts, or a smaller k."
        )
    return pairs, sequences


def _meta(lm: LoadedModel, config: BuildConfig, layout, acts, pairs, result, stability) -> TemplateMeta:
    """What the template records about how it was made (model, site, data, ICA and its stability)."""
    return TemplateMeta(
        model_id=lm.model_id, model_revision=lm.request.revision, architecture=layout.model_type,
        site=config.site, n_layers=layout.n_layers, width=acts.width, k=config.k,
        threshold=config.threshold, threshold_value=config.resolved_threshold,
        datasets=_dataset_records(config.sources, pairs), samples_per_dataset=config.samples_per_dataset,
        max_tokens=config.max_tokens, n_tokens=acts.n_tokens, seed=config.seed, standardise=config.standardise,
        fnweb_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ica={"converged": result.converged, "explained_variance": result.explained_variance.round(4).tolist(),
             **result.info, **({"stability": stability} if stability else {})},
    )


def _add_cards(lm, template: Template, config: BuildConfig, made, progress: ProgressFn, stop: StopFlag) -> dict:
    """Give the template its component cards (``fnweb.cards``) from what the build ``made``; {"cards": seconds}."""
    if not config.card_contexts:
        return {}
    clock = time.perf_counter()
    progress(Progress("thresholding", 0, 1, "", "Making the component cards"))
    result, acts, sequences, pairs = made
    template.cards = cards_from_build(lm, template, result, acts, sequences, pairs, [s.label() for s in config.sources],
                                      config.card_contexts, config.card_negative, config.standardise, stop).to_dict()
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
