"""Does a component's effect survive rebuilding the template with another seed? Template seeds, matched and tested.

``seeds_stream`` rebuilds a template ``seeds`` times from its own metadata (its
datasets, sample count, k, site, threshold), with the build seed varied: the template's
seed, then the next ones (``fnweb.build.build_template``; the seed picks both the
prompts sampled and the ICA's start). Components are matched across seeds by the
correlation of their **maps** (the decomposition's channel weights, before
thresholding), one to one (Hungarian assignment on |correlation|, as the stability
check does): maps are what ICA finds, and a correlation does not swing with the
threshold the way the IoU of two sparse masks does. Maps are not stored in template
files, so the template's own seed is rebuilt too; when the rebuild's masks equal the
file's, the file's template (with its cards) is the one measured.

Then each seed's template runs the same experiment (``fnweb.experiments``) on the same
held-out prompts, disjoint from every seed's template prompts: the first seed the full
experiment (curve and task as configured), the others the lesions and their tests
only. Each seed's draws come from its own stream, so the seeds' p-values are
independent and Fisher's method combines them per matched component; Holm corrects the
combined p-values across components. After each measured prompt it yields a
``SeedsResult`` snapshot; a stop request yields the last one, marked partial.

For a screen-then-confirm design the first seed can be left unmeasured (it is built and
matched against, but its components were chosen on its own data) and other held-out
prompts left out (``exclude``: the screen's), so the confirmation shares no data with the
selection.

It knows nothing about the UI or files (see ``seed_results``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

import numpy as np

from .build import BuildConfig, build_template
from .errors import FnwebError, Stopped
from .experiments import ExperimentConfig, experiment_stream, template_prompts
from .experiments.assemble import IN_PROGRESS, STOPPED
from .models import LoadedModel
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .prompts import PromptSource
from .seed_results import SeedEffect, SeedsResult, combine
from .stability import match_maps
from .templates import Template

DEFAULT_SEEDS = 3
MAX_SEEDS = 10  # each seed is a build and an experiment


def check_seeds(seeds: int) -> None:
    if not 1 <= seeds <= MAX_SEEDS:
        raise FnwebError(f"Template seeds must lie between 1 and {MAX_SEEDS} (got {seeds}): each seed builds the "
                         "template again and runs the experiment on it.")


def seed_build_config(template: Template, seed: int) -> BuildConfig:
    """The build that made ``template``, with another seed (no stability re-runs, no cards: only its masks)."""
    meta = template.meta
    if meta is None or not meta.datasets or meta.samples_per_dataset < 1 or meta.max_tokens < 2:
        raise FnwebError("This template records no build settings (datasets, samples, max tokens), so it cannot be "
                         "rebuilt with other seeds. Build it with fnweb (buildtemplates or the Templates tab), or "
                         "run with one template seed.")
    sources = [PromptSource(d["name"], d.get("config"), d.get("split") or "train") for d in meta.datasets]
    every_layer = len(template.layers) == meta.n_layers
    return BuildConfig(sources=sources, samples_per_dataset=meta.samples_per_dataset, max_tokens=meta.max_tokens,
                       k=meta.k, site=meta.site, threshold=meta.threshold, threshold_value=meta.threshold_value,
                       seed=seed, standardise=meta.standardise, layers=None if every_layer else template.layers,
                       stability_runs=0, card_contexts=0)


def _same_masks(a: Template, b: Template) -> bool:
    return a.layers == b.layers and a.components == b.components


def build_seeds(lm: LoadedModel, template: Template, seeds: int, progress: ProgressFn, stop: StopFlag,
                warnings: list[str], maps: Optional[np.ndarray] = None) -> Iterator[tuple[int, Template, np.ndarray]]:
    """Each seed's (seed, template, maps), the template's own seed first (not rebuilt when its ``maps`` are given)."""
    base = int(template.meta.seed if template.meta else 0)
    for i, seed in enumerate(range(base, base + seeds)):
        if i == 0 and maps is not None:
            yield seed, template, maps
            continue
        built = build_template(lm, seed_build_config(template, seed), progress=_labelled(progress, i, seeds),
                               stop=stop)
        made = built.template
        made.name = f"{template.name or 'template'} (seed {seed})"
        if i == 0 and _same_masks(made, template):
            made = template  # the file's own template: the same masks, with its cards and name
        elif i == 0:
            warnings.append(f"Rebuilding the template with its own seed ({seed}) gave other masks than the file's "
                            "(another fnweb version or model revision?); every seed is measured as rebuilt.")
        yield seed, made, built.maps


def _labelled(progress: ProgressFn, index: int, seeds: int) -> ProgressFn:
    def relay(event: Progress) -> None:
        event.message = f"Template seed {index + 1} of {seeds}: {event.message or event.phase}"
        progress(event)
    return relay


@dataclass
class _Seeds:
    """What a template-seeds run has built and measured so far."""

    config: ExperimentConfig
    built: list = field(default_factory=list)  # (seed, template, maps), the file's own seed first
    matches: list = field(default_factory=list)  # per seed: (matched component per first-seed component, correlations)
    done: list = field(default_factory=list)  # per measured seed: its latest ExperimentResult
    warnings: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def seeds_stream(lm: LoadedModel, template: Template, config: ExperimentConfig, seeds: int = DEFAULT_SEEDS,
                 progress: ProgressFn = no_progress, stop: Optional[StopFlag] = None,
                 maps: Optional[np.ndarray] = None, exclude: Optional[set[str]] = None,
                 measure_first: bool = True) -> Iterator[SeedsResult]:
    """Build, match and measure ``seeds`` template seeds; yield a snapshot after each measured unit, then the result.

    ``maps``: the template's own maps when the caller has just built it (``BuildResult.maps``), so its seed is
    not built again. ``exclude``: more prompts to keep out of the held-out set (as ``_key`` writes them);
    ``measure_first`` False: the first seed only anchors the matching (a confirmation of components it selected).
    """
    stop, state = stop or StopFlag(), _Seeds(config)
    check_seeds(seeds)
    config.validate()
    seed_build_config(template, 0)  # no build settings: fail before any work
    try:
        for item in build_seeds(lm, template, seeds, progress, stop, state.warnings, maps):
            state.built.append(item)
        state.matches = [_match(state.built[0][2], maps) for _, _, maps in state.built]
        exclude = set(exclude or ()).union(*(template_prompts(t)[0] or set() for _, t, _ in state.built))
        for i, (_, made, _) in enumerate(state.built):
            state.done.append(None)
            if i == 0 and not measure_first:
                continue
            seed_config = config if i == 0 else replace(  # the lesions only, of this seed's matches
                config, curve=False, task=None, dose_component=None,
                components=[state.matches[i][0][c] for c in config.components] if config.components else None)
            relay = _labelled(progress, i, len(state.built))  # the status line says which seed it measures
            for result in experiment_stream(lm, made, seed_config, relay, stop, exclude=exclude):
                state.done[-1] = result
                if result.partial and result.partial_note.startswith(STOPPED):
                    raise Stopped()
                yield _snapshot(state)
    except Stopped:
        yield _snapshot(state, stopped=True)
        return
    progress(Progress("done", 1, 1, "", "Done"))
    yield _snapshot(state, finished=True)


def run_seeds(lm, template, config, seeds: int = DEFAULT_SEEDS, progress: ProgressFn = no_progress,
              stop=None, maps: Optional[np.ndarray] = None, exclude: Optional[set[str]] = None,
              measure_first: bool = True) -> SeedsResult:
    """The final result of ``seeds_stream`` (partial if stopped)."""
    last = None
    for state in seeds_stream(lm, template, config, seeds, progress, stop, maps, exclude, measure_first):
        last = state
    return last


def _match(reference: np.ndarray, maps: np.ndarray) -> tuple[list[int], list[float]]:
    """The component of ``maps`` matched to each reference component, and the two maps' signed correlation."""
    correlation, signs, order = match_maps(reference, maps)
    return [int(c) for c in order], [round(float(r * s), 4) for r, s in zip(correlation, signs)]


def _snapshot(state: _Seeds, finished: bool = False, stopped: bool = False) -> SeedsResult:
    """The seeds result of what has been built and measured so far."""
    measured = [(index, item, result) for index, (item, result) in enumerate(zip(state.built, state.done))
                if result is not None]
    effects = []
    for index, (seed, _, _), result in measured:
        order, correlation = state.matches[index]
        rows = {r.component: r for r in result.rows}
        effects += [SeedEffect(reference=reference, seed=seed, component=component, correlation=r,
                               row=rows.get(str(component)))
                    for reference, (component, r) in enumerate(zip(order, correlation))
                    if not state.config.components or reference in state.config.components]  # those tested
    note = ""
    if not finished:
        note = (f"{STOPPED if stopped else IN_PROGRESS}: {len(state.built)} of the seeds built, "
                f"{len(measured)} measured (the last may be partial).")
    return SeedsResult(
        seeds=[seed for seed, _, _ in state.built], effects=effects, matched=combine(effects, state.config.level),
        experiments=[result for _, _, result in measured], level=state.config.level, partial=not finished,
        partial_note=note, warnings=list(state.warnings), seconds=round(time.monotonic() - state.started, 2),
    )
