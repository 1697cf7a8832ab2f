"""Training examples: dataset rows -> prompt/response token ids -> padded batches with labels.

Rows come through the engine's reader (``fnweb.prompts``: built-in sets, local files,
Hub datasets) and the model's chat template. Labels are -100 on prompt tokens (unless
the loss is on all tokens) and on padding, and padding is read from the attention
mask, never from the pad id: a tokenizer whose pad token is its EOS still learns to
stop (the original's fault 9). The validation split is a seeded shuffle.

It knows nothing about models, masks or the training loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch

from ..errors import FnwebError
from ..prompts import Pair, PromptSource, encode_prompt_and_response, load_pairs

IGNORE = -100  # label of a position the loss skips


@dataclass(frozen=True)
class Example:
    """One tokenised example; the loss may start at ``loss_from``."""

    input_ids: tuple[int, ...]
    loss_from: int  # index of the first labelled token (0: every token)

    @property
    def n_labels(self) -> int:
        return len(self.input_ids) - self.loss_from


@dataclass
class TrainData:
    """The training and validation examples of a run, with the pairs they came from."""

    train: list[Example]
    val: list[Example]
    train_pairs: list[Pair]
    source_label: str
    dropped: int = 0  # examples left without a labelled token after cutting to max length

    def describe(self) -> str:
        text = f"{len(self.train)} training and {len(self.val)} validation examples from {self.source_label}"
        return text + (f" ({self.dropped} dropped: longer than the max sequence length)" if self.dropped else "")


def encode_example(tokenizer, pair: Pair, max_len: int, loss_on: str, fmt: str = "auto") -> Optional[Example]:
    """Token ids cut to ``max_len``; None when no labelled token is left."""
    prompt_ids, response_ids = encode_prompt_and_response(tokenizer, pair, fmt)
    ids = (list(prompt_ids) + list(response_ids))[:max_len]
    loss_from = 0 if loss_on == "all" else len(prompt_ids)
    if len(ids) - loss_from < 1 or len(ids) < 2:
        return None
    return Example(tuple(ids), loss_from)


def encode_examples(tokenizer, pairs: Sequence[Pair], max_len: int, loss_on: str, fmt: str = "auto"):
    """(examples, number dropped)."""
    examples = [encode_example(tokenizer, p, max_len, loss_on, fmt) for p in pairs]
    kept = [e for e in examples if e is not None]
    return kept, len(examples) - len(kept)


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, validation): a seeded shuffle, at least one example on each side when asked."""
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    if fraction <= 0:
        return shuffled, []
    if len(shuffled) < 2:
        raise FnwebError(
            f"Only {len(shuffled)} usable example: too few for a validation split. Add data or set the split to 0."
        )
    n_val = min(len(shuffled) - 1, max(1, round(len(shuffled) * fraction)))
    return shuffled[n_val:], shuffled[:n_val]


def usable_pairs(pairs: Sequence[Pair], loss_on: str, label: str) -> list[Pair]:
    """Pairs that give something to learn: a response, unless the loss is on every token."""
    if loss_on == "all":
        return list(pairs)
    with_response = [p for p in pairs if p.response]
    if not with_response:
        raise FnwebError(
            f"Dataset {label} has prompts but no responses, so there is nothing to learn with the loss on "
            "responses. Use a dataset with responses (e.g. prompt/response fields) or put the loss on all tokens."
        )
    return with_response


def read_training_pairs(source: PromptSource, loss_on: str) -> list[Pair]:
    """The dataset's usable pairs (read before a model is loaded: a bad file fails at once)."""
    return usable_pairs(load_pairs(source), loss_on, source.label())


def load_training_data(tokenizer, source: PromptSource, max_len: int, validation_split: float, loss_on: str,
                       seed: int, fmt: str = "auto", pairs: Optional[Sequence[Pair]] = None) -> TrainData:
    """Read (unless ``pairs`` were read already), split and tokenise a dataset for training."""
    pairs = read_training_pairs(source, loss_on) if pairs is None else pairs
    train_pairs, val_pairs = split_pairs(pairs, validation_split, seed)
    train, dropped = encode_examples(tokenizer, train_pairs, max_len, loss_on, fmt)
    val, dropped_val = encode_examples(tokenizer, val_pairs, max_len, loss_on, fmt)
    if not train:
        raise FnwebError(
            f"Every training example of {source.label()} is longer than the max sequence length ({max_len}) "
            "before its response starts: raise the max sequence length."
        )
    return TrainData(train, val, train_pairs, source.label(), dropped + dropped_val)


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on padding and unlabelled tokens)."""
    longest = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), longest), dtype=torch.long)
    labelled = torch.zeros((len(examples), longest), dtype=torch.bool)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention[row, :n] = 1
        labelled[row, example.loss_from : n] = True
    # From the attention mask, not the pad id: an EOS equal to the pad token keeps its label.
    labels = torch.where(labelled & attention.bool(), ids, torch.full_like(ids, IGNORE))
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def micro_batches(examples: Sequence[Example], batch_size: int, seed: int, rank: int = 0,
                  world: int = 1) -> Iterator[list[Example]]:
    """Endless micro-batches: a new seeded shuffle each epoch; process ``rank`` of ``world`` takes its share."""
    epoch = 0
    while True:
        order = list(range(len(examples)))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for index, chunk in enumerate(chunks):
            if index % world == rank:
                yield [examples[i] for i in chunk]
        epoch += 1


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int, world: int = 1) -> int:
    """Optimizer steps in one pass over the training examples."""
    micro = -(-n_examples // batch_size)
    return max(1, -(-micro // (grad_accum * world)))


def eval_batches(examples: Sequence[Example], batch_size: int) -> list[list[Example]]:
    """Fixed batches of similar length (little padding) for scoring."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    return [[examples[i] for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]
