"""Does a network matter? Lesion and preserve experiments against matched random controls.

For a model, a template and a held-out prompt set (disjoint from the prompts the
template was built from: those are recomputed from its metadata and left out, or
counted in a warning), ``experiment_stream`` measures teacher-forced on each prompt +
response (through the chat template):

1. **lesion** phase: each component lesioned, then all of them together (the union),
   each beside ``draws`` seeded random controls of the same per-layer sizes: the
   change in cross-entropy and the mean next-token KL from the unchanged model.
   Each lesion gets its tests: a permutation p-value (its rank among the draws),
   Holm-adjusted across components, and bootstrap intervals over prompts.
2. **preserve** phase (the preservation curve): components ordered by their lesion
   effect on one half of the held-out texts; the top m kept (m = 1..k, every other
   neuron of the masked layers zeroed) and scored on the other half, beside random
   keeps of the same per-layer sizes.

Optionally a labelled task of ``fnweb.tasks`` (sentiment, mcq, arithmetic) gives
accuracy by answer log-likelihood under the same interventions.

Every condition of a phase is one row of a batch over the same prompt (one
``(rows, 1, width)`` mask per layer), the unchanged model is row 0, and only the
scored positions reach the LM head. After each unit the engine yields an
``ExperimentResult`` snapshot (marked partial until the end), so a page can draw the
charts as they fill; a stop request ends the run with the last snapshot, marked
partial. This package knows nothing about the UI or files (see experiment_results).

Here is the public entry point (``experiment_stream``, ``run_experiment``, and the
names below). The work is split by step: ``config`` (what to measure), ``heldout``
(which prompts), ``plan`` (which conditions, in which passes), ``measure`` (the passes
and their tallies) and ``assemble`` (tallies into an ``ExperimentResult``).
"""

from __future__ import annotations

from typing import Iterator, Optional

from ..errors import Stopped
from ..experiment_results import CurvePoint, ExperimentResult, LesionRow
from ..models import LoadedModel
from ..progress import Progress, ProgressFn, StopFlag, no_progress
from ..templates import Template
from .assemble import IN_PROGRESS, STOPPED, assemble, order
from .config import DEFAULT_DRAWS, MAX_DRAWS, MIN_PROMPTS, SCORES, ExperimentConfig
from .heldout import Unit, check_readable, heldout_pairs, split_units, template_prompts
from .measure import measure_unit
from .plan import LESION, PRESERVE, Phase, Run, controllable, draw_seed, prepare, with_controls

__all__ = ["ExperimentConfig", "ExperimentResult", "LesionRow", "CurvePoint", "experiment_stream", "check_readable",
           "run_experiment", "template_prompts", "heldout_pairs", "with_controls", "draw_seed", "split_units", "Unit",
           "IN_PROGRESS", "STOPPED", "SCORES", "MIN_PROMPTS", "MAX_DRAWS", "DEFAULT_DRAWS"]


def _phases(run: Run) -> Iterator[Phase]:
    """The lesion phase, then (once the lesions are known) the preserve phase."""
    yield run.phase(LESION, "Lesions and random controls", run.lesion_specs())
    if run.config.curve:
        run.order = order(run)
        run.curve_len = next((m - 1 for m in range(1, len(run.order) + 1)
                              if controllable(run.template, run.order[:m], run.config.seed)), len(run.order))
        yield run.phase(PRESERVE, "Preservation curve", run.preserve_specs())


def _passes(run: Run) -> tuple[int, int]:
    """Forward passes of the lesion phase and of the curve (an estimate before the curve's length is known)."""
    lesion = len(run.phase_units(LESION)) * run.chunks_for(len(dict.fromkeys(run.lesion_specs())))
    n_curve = len(run.ids) * (run.config.draws + 1) if run.config.curve else 0
    return lesion, len(run.phase_units(PRESERVE)) * run.chunks_for(n_curve) if n_curve else 0


def experiment_stream(
    lm: LoadedModel,
    template: Template,
    config: ExperimentConfig,
    progress: ProgressFn = no_progress,
    stop: Optional[StopFlag] = None,
    exclude: Optional[set[str]] = None,
) -> Iterator[ExperimentResult]:
    """Yield a result snapshot after each unit (partial), then the final result.

    ``exclude``: more prompts (whitespace-normalised) to keep out of the held-out set
    besides the template's own, e.g. those of the same template built with other seeds.
    Bad input raises ``FnwebError`` before any measuring. A stop request ends the run:
    the last snapshot is yielded with ``partial`` set and a note of what it covers.
    """
    stop = stop or StopFlag()
    run = prepare(lm, template, config, progress, exclude)
    lesion_passes, curve_passes = _passes(run)
    report = Progress("measuring", 0, lesion_passes + curve_passes, "passes", "Lesions and random controls")
    try:
        for phase in _phases(run):
            later = curve_passes if phase.name == LESION else 0
            report.total = report.done + len(phase.units) * len(phase.chunks) + later
            for done, index in enumerate(phase.units, start=1):
                report.message = f"{phase.label}: unit {done} of {len(phase.units)}"
                measure_unit(run, phase, index, report, progress, stop)
                run.done[phase.name] = done
                yield assemble(run, finished=False)
    except Stopped:
        yield assemble(run, finished=False, stopped=True)
        return
    progress(Progress("done", 1, 1, "", "Done"))
    yield assemble(run, finished=True)


def run_experiment(lm, template, config, progress: ProgressFn = no_progress, stop=None,
                   exclude: Optional[set[str]] = None) -> ExperimentResult:
    """The final result of ``experiment_stream`` (partial if stopped)."""
    last = None
    for state in experiment_stream(lm, template, config, progress, stop, exclude):
        last = state
    return last
