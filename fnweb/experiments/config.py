"""What an experiment measures and on which prompts: ``ExperimentConfig``, checked before any work.

Plain data (recorded in the result's settings). It knows nothing about models or prompts' contents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..checks import check_seed
from ..controls import CONTROLS, DEFAULT_CONTROL, DEFAULT_MASSIVE, MASSIVE, check_choice
from ..errors import FnwebError
from ..interventions import DEFAULT_INTERVENTION, INTERVENTIONS, check_alpha
from ..masks import DEFAULT_PRESERVE_SCOPE, check_preserve_scope
from ..prompts import PromptSource
from ..significance import LEVEL
from ..tasks import get_task

SCORES = ("response", "all")
MIN_PROMPTS = 4  # below this a mean over prompts is one text's quirks
DEFAULT_DRAWS = 20  # random controls per condition: the smallest permutation p is 1 / 21
MAX_DRAWS = 200  # each draw is one more forward row per condition and prompt; 199 let the strongest of 10 pass Holm
DOSE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # the dose-response's factors: removal to amplification
MAX_DOSES = 16  # factors of one dose-response (each is 1 + draws x controls rows per prompt)
DOSE_DRAWS = 5  # random twins per factor and control: a band, not a test
MAX_ITEMS = 1_000_000  # prompts per set and task items: far more than a run can score
MAX_BATCH_TOKENS = 2**24  # rows x tokens per pass: 16 M tokens is beyond any accelerator's memory


@dataclass
class ExperimentConfig:
    """What to measure and on which prompts (recorded in the result's settings)."""

    sources: list[PromptSource] = field(default_factory=list)  # held-out prompt sets
    samples_per_dataset: int = 20  # held-out prompts per set (0: all that are left)
    draws: int = DEFAULT_DRAWS  # seeded random controls per condition (the permutation test's null)
    seed: int = 0  # held-out sampling and random draws
    max_tokens: int = 128  # per prompt + response
    score: str = "response"  # response: score the response's tokens | all: every next token
    components: Optional[list[int]] = None  # None: every component of the template
    exclude_template_prompts: bool = True  # leave out held-out prompts the template was built from
    curve: bool = True  # measure the preservation curve
    task: Optional[str] = None  # a labelled task of fnweb.tasks.TASKS for accuracy (sentiment, mcq, arithmetic)
    task_items: int = 0  # items of it (0: all)
    task_source: Optional[str] = None  # another labelled set for the task (None: the task's own)
    level: float = LEVEL  # family-wise error rate for the Holm-corrected permutation tests
    prompt_format: str = "auto"  # auto | chat | alpaca | chatml | basic
    batch_tokens: int = 4096  # rows x length per forward pass (lower it to save memory)
    # What each row does, and against which random twins (fnweb.interventions, fnweb.controls):
    intervention: str = DEFAULT_INTERVENTION  # on the network's channels: lesion, mean or scale
    alpha: Optional[float] = None  # the factor of an intervention that takes one (scale)
    control: str = DEFAULT_CONTROL  # how the random twins are drawn: layer | magnitude
    massive: str = DEFAULT_MASSIVE  # massive-activation channels: keep | undrawn (never drawn) | spared (left alone)
    also_control: Optional[str] = None  # another control: every row again, against twins drawn by it (a variant row)
    outlier_rows: bool = True  # a variant row without its massive channels, per component holding one (statistics)
    dose_component: Optional[int] = None  # a component scaled by each of dose_alphas against its random twins
    dose_alphas: tuple[float, ...] = DOSE_ALPHAS
    dose_controls: tuple[str, ...] = tuple(CONTROLS)  # the dose's twins (those needing statistics only with them)
    dose_draws: int = DOSE_DRAWS
    preserve_scope: str = DEFAULT_PRESERVE_SCOPE  # fnweb.masks.PRESERVE_SCOPES: the preservation curve's layers

    def validate(self) -> None:
        if not self.sources:
            raise FnwebError("No held-out prompt set chosen: pick a built-in set, a file or a Hub dataset.")
        if not 1 <= self.draws <= MAX_DRAWS:
            raise FnwebError(f"Random draws must lie between 1 and {MAX_DRAWS} (got {self.draws}): each draw is one "
                             "more forward pass per condition and prompt, so more would take too long. Lower the "
                             "draws, or test fewer components (Holm needs fewer draws for fewer tests).")
        if not 0 <= self.samples_per_dataset <= MAX_ITEMS:
            raise FnwebError(f"Prompts per set must lie between 0 (all) and {MAX_ITEMS} "
                             f"(got {self.samples_per_dataset}).")
        check_seed(self.seed)
        check_preserve_scope(self.preserve_scope)
        if not 2 <= self.max_tokens <= 8192:
            raise FnwebError(f"Max tokens per prompt must lie between 2 and 8192 (got {self.max_tokens}).")
        if self.score not in SCORES:
            raise FnwebError(f"Unknown scoring '{self.score}'; choose response or all.")
        if not 1 <= self.batch_tokens <= MAX_BATCH_TOKENS:
            raise FnwebError(f"Batch tokens must lie between 1 and {MAX_BATCH_TOKENS} (got {self.batch_tokens}).")
        if self.task is not None:
            get_task(self.task)  # an unknown task fails here, with the list of tasks
        if not 0 <= self.task_items <= MAX_ITEMS:
            raise FnwebError(f"Task items must lie between 0 (all) and {MAX_ITEMS} (got {self.task_items}).")
        if self.components is not None and not self.components:
            raise FnwebError("No components chosen: name at least one, or leave the choice out for all.")
        if not 0.0 < self.level < 1.0:
            raise FnwebError(f"The significance level must lie between 0 and 1 (got {self.level}).")
        self._check_evidence()

    def _check_evidence(self) -> None:
        """The intervention, the controls and the dose-response: names from their tables, factors in range."""
        check_choice(self.intervention, INTERVENTIONS, "intervention")
        if not INTERVENTIONS[self.intervention].acts_on_network:
            acting = [name for name, i in INTERVENTIONS.items() if i.acts_on_network]
            raise FnwebError(f"Each row changes its component's own channels: choose {' or '.join(acting)} (the "
                             f"preservation curve is where '{self.intervention}' is measured).")
        if INTERVENTIONS[self.intervention].takes_alpha or self.alpha is not None:
            self.alpha = check_alpha(self.alpha)
        for control in (self.control, self.also_control, *self.dose_controls):
            if control is not None:
                check_choice(control, CONTROLS, "control")
        check_choice(self.massive, MASSIVE, "massive-channel policy")
        if self.dose_component is None:
            return
        if int(self.dose_component) != self.dose_component or self.dose_component < 0:
            raise FnwebError(f"The dose-response component must be a component id (got {self.dose_component}).")
        if not 2 <= len(self.dose_alphas) <= MAX_DOSES or len(set(self.dose_alphas)) != len(self.dose_alphas):
            raise FnwebError(f"A dose-response needs 2 to {MAX_DOSES} different factors α (got "
                             f"{list(self.dose_alphas)}).")
        self.dose_alphas = tuple(sorted(check_alpha(a) for a in self.dose_alphas))
        if not self.dose_controls:
            raise FnwebError(f"A dose-response needs at least one control to compare with: {' or '.join(CONTROLS)}.")
        if not 1 <= self.dose_draws <= MAX_DRAWS:
            raise FnwebError(f"Dose-response draws must lie between 1 and {MAX_DRAWS} (got {self.dose_draws}).")
