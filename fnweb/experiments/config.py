"""What an experiment measures and on which prompts: ``ExperimentConfig``, checked before any work.

Plain data (recorded in the result's settings). It knows nothing about models or prompts' contents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..checks import check_seed
from ..errors import FnwebError
from ..masks import DEFAULT_PRESERVE_SCOPE, check_preserve_scope
from ..prompts import PromptSource

SCORES = ("response", "all")
MIN_PROMPTS = 4  # below this a mean over prompts is one text's quirks
MAX_DRAWS = 50
MAX_ITEMS = 1_000_000  # prompts per set and multiple-choice items: far more than a run can score
MAX_BATCH_TOKENS = 2**24  # rows x tokens per pass: 16 M tokens is beyond any accelerator's memory


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
    preserve_scope: str = DEFAULT_PRESERVE_SCOPE  # fnweb.masks.PRESERVE_SCOPES: the preservation curve's layers

    def validate(self) -> None:
        if not self.sources:
            raise FnwebError("No held-out prompt set chosen: pick a built-in set, a file or a Hub dataset.")
        if not 1 <= self.draws <= MAX_DRAWS:
            raise FnwebError(f"Random draws must lie between 1 and {MAX_DRAWS} (got {self.draws}).")
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
        if not 0 <= self.mcq_items <= MAX_ITEMS:
            raise FnwebError(f"Multiple-choice items must lie between 0 (all) and {MAX_ITEMS} (got {self.mcq_items}).")
        if self.components is not None and not self.components:
            raise FnwebError("No components chosen: name at least one, or leave the choice out for all.")
