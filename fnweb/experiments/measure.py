"""How an experiment measures: every condition of a phase as one row of a batch over one unit, and the tallies.

Each forward pass runs the unit's tokens once per row, each row under its own mask
(one ``(rows, 1, width)`` mask per layer), with the unchanged model as row 0; only the
scored positions reach the LM head. Per condition and unit the tally keeps every
per-token metric of ``fnweb.metrics`` summed over the scored tokens, and the tokens;
``token_means`` and ``accuracy`` read them back. It knows nothing about results or files.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..masks import MaskSpec, apply_masks
from ..metrics import TOKEN_METRICS, next_token_stats
from ..progress import Progress, ProgressFn, StopFlag
from .plan import Phase, Run

TOKENS = len(TOKEN_METRICS)  # the tally's last column: scored tokens; before it, one sum per per-token metric
CE = TOKEN_METRICS.index("ce")


def measure_unit(run: Run, phase: Phase, index: int, report: Progress, progress: ProgressFn, stop: StopFlag):
    """Every row of the phase over one unit: per spec, each per-token metric's sum and the tokens."""
    unit = run.units[index]
    ids = torch.tensor(unit.ids, dtype=torch.long, device=run.lm.device).unsqueeze(0)  # (1, T)
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
            table = run.tally.setdefault(spec, np.zeros((len(run.units), TOKENS + 1)))
            table[index] = [stats[key] * stats["tokens"] for key in TOKEN_METRICS] + [stats["tokens"]]
        report.done += 1
        progress(report)


def token_means(run: Run, spec: Optional[MaskSpec], n_units: int) -> tuple[dict[str, float], int]:
    """Token-weighted mean of each per-token metric over the first ``n_units`` held-out texts, and their tokens."""
    sums = run.tally[spec][: min(n_units, run.n_text)].sum(0)
    tokens = max(sums[TOKENS], 1.0)
    return {key: float(sums[i] / tokens) for i, key in enumerate(TOKEN_METRICS)}, int(sums[TOKENS])


def accuracy(run: Run, spec: Optional[MaskSpec], n_units: int) -> Optional[float]:
    """Share of fully measured multiple-choice items whose right answer has the highest log-likelihood."""
    if not run.answers or n_units <= run.n_text:
        return None
    logp: dict[int, list[float]] = {}
    for index in range(run.n_text, min(n_units, len(run.units))):  # choices of an item are consecutive
        logp.setdefault(run.units[index].item, []).append(-run.tally[spec][index, CE])
    complete = [item for item, scores in logp.items() if len(scores) == run.n_choices[item]]
    if not complete:
        return None
    return float(np.mean([int(np.argmax(logp[item])) == run.answers[item] for item in complete]))
