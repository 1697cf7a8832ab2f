"""One run of everything an experiment can add: the experiment (on one or several template seeds), then recurrence.

``evidence_stream`` runs ``fnweb.experiments.experiment_stream`` (or, with ``seeds`` > 1,
``fnweb.template_seeds.seeds_stream``, whose first seed's experiment is the one shown),
then, when a ``RecurrenceConfig`` is given, ``fnweb.recurrence.recurrence_stream`` on the
same template, and yields an ``Evidence`` snapshot after each step of either: the latest
experiment result, the seeds result and the recurrence result (None until they exist).
A stop request ends the run with the last snapshot, the running part marked partial; a
stop before the recurrence skips it. Bad settings of any part are refused before any work.
It knows nothing about the UI or files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

from .experiment_results import ExperimentResult
from .experiments import ExperimentConfig, experiment_stream
from .models import LoadedModel
from .progress import ProgressFn, StopFlag, no_progress
from .recurrence import RecurrenceConfig, RecurrenceResult, recurrence_stream
from .seed_results import SeedsResult
from .template_seeds import check_seeds, seed_build_config, seeds_stream
from .templates import Template


@dataclass
class Evidence:
    """The latest of each part (None: not started, or not asked for)."""

    experiment: Optional[ExperimentResult] = None
    seeds: Optional[SeedsResult] = None
    recurrence: Optional[RecurrenceResult] = None

    @property
    def partial(self) -> bool:
        return any(part is not None and part.partial for part in (self.experiment, self.seeds, self.recurrence))

    def reading(self) -> str:
        """The experiment's reading, then what holds across seeds, then recurrence."""
        from .recurrence_results import recurrence_reading

        parts = [self.experiment.reading() if self.experiment else ""]
        parts += [self.seeds.reading() if self.seeds else "", recurrence_reading(self.recurrence)
                  if self.recurrence else ""]
        return "\n\n".join(p for p in parts if p)


def check_evidence(template: Template, config: ExperimentConfig, seeds: int,
                   recurrence: Optional[RecurrenceConfig]) -> None:
    """Refuse bad settings of every part before any of them starts."""
    config.validate()
    check_seeds(seeds)
    if seeds > 1:
        seed_build_config(template, 0)  # the template records how to rebuild it
    if recurrence is not None:
        recurrence.validate()


def evidence_stream(lm: LoadedModel, template: Template, config: ExperimentConfig, seeds: int = 1,
                    recurrence: Optional[RecurrenceConfig] = None, progress: ProgressFn = no_progress,
                    stop: Optional[StopFlag] = None) -> Iterator[Evidence]:
    """Yield an ``Evidence`` snapshot after each measured step of the experiment (or seeds), then of recurrence."""
    stop = stop or StopFlag()
    check_evidence(template, config, seeds, recurrence)
    state = Evidence()
    if seeds > 1:
        for state.seeds in seeds_stream(lm, template, config, seeds, progress, stop):
            state.experiment = state.seeds.experiments[0] if state.seeds.experiments else None
            yield state
    else:
        for state.experiment in experiment_stream(lm, template, config, progress, stop):
            yield state
    if recurrence is None or stop.is_set or state.partial:
        return
    for state.recurrence in recurrence_stream(lm, template, recurrence, progress, stop):
        yield state
