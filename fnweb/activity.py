"""Where a component is active: its strongest tokens, with their contexts, and the prompt sets that drive it.

Input is a *signal*: one value per captured token and component (the ICA sources of a
build, or a readout of fresh activations), with the row where each sequence's tokens
start. ``orient`` signs each component so that its heavier tail is positive (ICA's sign
is arbitrary; a component's strong events are what a reader wants to see).
``top_contexts`` walks the tokens from the strongest down and keeps a window of token
ids around each (12 before, 4 after by default) with the signal at every token of the
window, skipping windows already kept (the same system prompt in every sample would
otherwise fill the list) and taking at most two per prompt. ``set_means`` is the mean
signal over the tokens of each prompt set.

It knows nothing about models, tokenizers or how the signal was obtained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

WINDOW = (12, 4)  # tokens kept before and after the strongest one
PER_PROMPT = 2  # contexts one prompt may contribute to one component
_MAX_SCANNED = 200_000  # tokens looked at per component before giving up on finding more distinct windows


@dataclass
class Context:
    """One strong token of a component, in its window."""

    prompt: int  # index of the sequence (prompt) it came from
    position: int  # the token's position in that sequence
    value: float  # the component's signal at the token
    ids: list[int] = field(default_factory=list)  # the window's token ids
    values: list[float] = field(default_factory=list)  # the signal at each token of the window
    at: int = 0  # where the token sits in the window
    pieces: list[str] = field(default_factory=list)  # the window's text per token (filled by who has the tokenizer)


def orient(signal: np.ndarray) -> np.ndarray:
    """Per column of a (tokens, k) signal, +1 or -1 so that its heavier tail (positive skew) is positive."""
    centred = signal - signal.mean(0)
    return np.where((centred**3).mean(0) < 0, -1.0, 1.0)


def token_origins(starts: Sequence[int], lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """For every signal row: (the sequence it belongs to, its position there)."""
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    total = int((starts + lengths).max()) if len(starts) else 0
    sequence = np.full(total, -1, dtype=np.int64)
    position = np.zeros(total, dtype=np.int64)
    for index, (start, length) in enumerate(zip(starts, lengths)):
        sequence[start : start + length] = index
        position[start : start + length] = np.arange(length)
    return sequence, position


def top_contexts(column: np.ndarray, sequences: Sequence[Sequence[int]], starts: Sequence[int], n: int,
                 negative: bool = False, window: tuple[int, int] = WINDOW,
                 origins: tuple[np.ndarray, np.ndarray] | None = None) -> list[Context]:
    """The ``n`` strongest tokens of one component's signal (the most negative with ``negative``).

    ``column`` has one value per row; ``starts[i]`` is the row of sequence i's first token.
    """
    if n <= 0 or column.size == 0:
        return []
    sequence_of, position_of = origins or token_origins(starts, [len(s) for s in sequences])
    order = np.argsort(column if negative else -column, kind="stable")[:_MAX_SCANNED]
    before, after = window
    kept: list[Context] = []
    seen: set[tuple[int, ...]] = set()
    per_prompt: dict[int, int] = {}
    for row in order:
        index, position = int(sequence_of[row]), int(position_of[row])
        if index < 0 or per_prompt.get(index, 0) >= PER_PROMPT:
            continue
        lo, hi = max(0, position - before), min(len(sequences[index]), position + after + 1)
        ids = [int(t) for t in sequences[index][lo:hi]]
        key = tuple(ids[: position - lo + 1])  # the same token after the same tokens is the same context
        if key in seen:
            continue
        seen.add(key)
        per_prompt[index] = per_prompt.get(index, 0) + 1
        start = int(starts[index])
        values = column[start + lo : start + hi]
        kept.append(Context(prompt=index, position=position, value=round(float(column[row]), 3), ids=ids,
                            values=[round(float(v), 2) for v in values], at=position - lo))
        if len(kept) == n:
            break
    return kept


def set_means(signal: np.ndarray, starts: Sequence[int], lengths: Sequence[int], set_of: Sequence[int],
              n_sets: int) -> np.ndarray:
    """(k, n_sets): the mean signal over the tokens of each prompt set (sequence i belongs to ``set_of[i]``)."""
    sums = np.zeros((n_sets, signal.shape[1]))
    counts = np.zeros(n_sets)
    for start, length, which in zip(starts, lengths, set_of):
        sums[which] += signal[start : start + length].sum(0)
        counts[which] += length
    return (sums / np.maximum(counts, 1)[:, None]).T
