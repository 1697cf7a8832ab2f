"""Numbers that compare an intervened model with the unchanged one, token by token.

Given the baseline's and an intervened model's logits over the same token sequence,
``next_token_stats`` gives the mean next-token KL divergence KL(baseline || intervened),
the cross-entropy of the target tokens under the intervened model, and the top-1
agreement with the baseline. All in float32, over the positions a mask selects.

It knows nothing about masks or generation.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F


def next_token_stats(
    base_logits: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
) -> dict:
    """Mean KL, cross-entropy and top-1 agreement over valid positions.

    base_logits, logits: (..., vocab) predicting ``targets`` (...). ``valid`` (...) bool.
    """
    base_logp = F.log_softmax(base_logits.float(), dim=-1)
    logp = F.log_softmax(logits.float(), dim=-1)
    kl = (base_logp.exp() * (base_logp - logp)).sum(-1)  # (...)
    ce = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    top1 = (logp.argmax(-1) == base_logp.argmax(-1)).float()
    if valid is None:
        valid = torch.ones_like(ce, dtype=torch.bool)
    n = valid.sum().clamp(min=1)
    return {
        "kl": float((kl * valid).sum() / n),
        "ce": float((ce * valid).sum() / n),
        "top1": float((top1 * valid).sum() / n),
        "tokens": int(valid.sum()),
    }


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0
