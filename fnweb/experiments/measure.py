"""How an experiment measures: every condition of a phase as one row of a batch over one unit, and the tallies.

Each forward pass runs the unit's tokens once per row, each row under its own mask
(one ``(rows, 1, width)`` mask per layer), with the unchanged model as row 0; only the
scored positions reach the LM head. Per condition and held-out text the tally keeps
every per-token metric of ``fnweb.metrics`` summed over the scored tokens, and the
tokens; per condition and task unit, the scores of its candidates (``fnweb.tasks``).
``token_sums``, ``token_means`` and ``task_accuracy`` read them back. It knows nothing
about results or files.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..masks import MaskSpec, apply_masks
from ..metrics import TOKEN_METRICS, next_token_stats
from ..progress import Progress, ProgressFn, StopFlag
from ..tasks import TaskAccuracy, TaskUnit, accuracy, score_unit
from .plan import Phase, Run

TOKENS = len(TOKEN_METRICS)  # the tally's last column: scored tokens; before it, one sum per per-token metric
CE = TOKEN_METRICS.index("ce")


def _tally_text(run: Run, spec: Optional[MaskSpec], index: int, logits: torch.Tensor, base: torch.Tensor) -> None:
    """A held-out text: each per-token metric summed over its scored tokens, and the tokens."""
    unit = run.units[index]
    targets = torch.tensor(unit.ids[unit.first :], device=logits.device)
    stats = next_token_stats(base[:-1], logits[:-1], targets)  # the last position predicts nothing
    table = run.tally.setdefault(spec, np.zeros((len(run.units), TOKENS + 1)))
    table[index] = [stats[key] * stats["tokens"] for key in TOKEN_METRICS] + [stats["tokens"]]


def _tally_task(run: Run, spec: Optional[MaskSpec], index: int, logits: torch.Tensor, _base) -> None:
    """A task unit: the scores of the candidates it covers."""
    run.scores.setdefault(spec, {})[index] = score_unit(logits, run.units[index])


def measure_unit(run: Run, phase: Phase, index: int, report: Progress, progress: ProgressFn, stop: StopFlag):
    """Every row of the phase over one unit (an index into ``run.units``)."""
    unit = run.units[index]
    tally = _tally_task if isinstance(unit, TaskUnit) else _tally_text
    ids = torch.tensor(unit.ids, dtype=torch.long, device=run.lm.device).unsqueeze(0)  # (1, T)
    keep = len(unit.ids) - unit.first + 1  # positions first-1 .. T-1
    base = None
    for chunk, masks in zip(phase.chunks, phase.masks):
        stop.check()
        with torch.inference_mode(), apply_masks(run.lm.model, masks, run.site):
            out = run.lm.model(input_ids=ids.expand(len(chunk), -1), use_cache=False, logits_to_keep=keep)
        if chunk[0] is None:
            base = out.logits[0]
        for spec, logits in zip(chunk, out.logits):
            tally(run, spec, index, logits, base)
        report.done += 1
        progress(report)


def token_sums(run: Run, spec: Optional[MaskSpec], units: Sequence[int]) -> np.ndarray:
    """Per unit of ``units``: each per-token metric's sum over its scored tokens, then the tokens.

    Shape (units, metrics + 1).
    """
    return run.tally[spec][list(units)]


def token_means(run: Run, spec: Optional[MaskSpec], units: Sequence[int]) -> tuple[dict[str, float], int]:
    """Token-weighted mean of each per-token metric over the held-out texts ``units``, and their tokens."""
    sums = token_sums(run, spec, units).sum(0)
    tokens = max(sums[TOKENS], 1.0)
    return {key: float(sums[i] / tokens) for i, key in enumerate(TOKEN_METRICS)}, int(sums[TOKENS])


def task_accuracy(run: Run, spec: Optional[MaskSpec], units: Sequence[int]) -> Optional[TaskAccuracy]:
    """The task's accuracy under a condition over the measured task units (None: no item measured yet)."""
    if run.task is None:
        return None
    measured = run.scores.get(spec, {})
    scores = []
    for index in units:  # in order: a prefix of the items
        if index not in measured:
            break
        scores += measured[index]
    if len(scores) < len(run.task.items[0].candidates):  # not one item complete
        return None
    return accuracy(run.task, scores)
