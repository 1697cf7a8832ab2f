"""Learning and forgetting: what a fine-tune gained on its task, and what it changed elsewhere.

- **Learning**: the task loss (mean cross-entropy per labelled token) on the
  validation split, with the run's mask applied, before and after training.
- **Forgetting**: on general held-out prompts (the built-in sets the run did not
  train on, with their reference responses), the mean next-token KL divergence
  KL(base || model) over the response tokens, where *base* is the unchanged model
  (adapter off, no mask), and the perplexity of the responses.

The model is a PEFT model: its base is the same object with the adapter disabled,
so no second copy is held. It knows nothing about how the model was trained.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from ..ids import BUILTIN_PREFIX, builtin_name
from ..masks import apply_masks
from ..metrics import TOKEN_METRICS, next_token_stats
from ..progress import StopFlag
from ..prompts import PromptSource, builtin_sets, sample_pairs
from .config import TrainConfig
from .data import IGNORE, Example, collate, encode_examples, eval_batches
from .network import MaskPlan

GENERAL_MAX_TOKENS = 256  # held-out prompts are cut here: forgetting needs breadth, not length


@dataclass
class Figures:
    """Learning and forgetting figures at one moment (before or after training)."""

    task_loss: Optional[float]  # mean CE per response token on the validation split (masked model)
    task_tokens: int
    general_kl: Optional[float]  # mean KL(base || model) on general held-out responses
    general_ce: Optional[float]
    general_top1: Optional[float]  # share of positions where model and base agree on the top token
    general_tokens: int
    base_ce: Optional[float]  # the unchanged model's CE on the same tokens

    @property
    def general_ppl(self) -> Optional[float]:
        return None if self.general_ce is None else math.exp(self.general_ce)

    @property
    def base_ppl(self) -> Optional[float]:
        return None if self.base_ce is None else math.exp(self.base_ce)

    def to_dict(self) -> dict:
        return {**asdict(self), "general_ppl": self.general_ppl, "base_ppl": self.base_ppl}


def general_set_names(config: TrainConfig) -> list[str]:
    """Built-in sets for the forgetting test: those named, or every one the run does not train on."""
    if config.general_sets is not None:
        return [builtin_name(s) for s in config.general_sets]
    return [s for s in builtin_sets() if BUILTIN_PREFIX + s != config.dataset.strip()]


def general_examples(tokenizer, config: TrainConfig) -> tuple[list[Example], list[str]]:
    """Held-out prompt/response examples from the general sets (seeded sample)."""
    names = general_set_names(config)
    if not names or config.general_per_set == 0:
        return [], []
    pairs = sample_pairs([PromptSource(BUILTIN_PREFIX + n) for n in names], config.general_per_set, config.seed + 1)
    pairs = [p for p in pairs if p.response]
    examples, _ = encode_examples(tokenizer, pairs, min(config.max_seq_len, GENERAL_MAX_TOKENS), "response",
                                  config.prompt_format)
    return examples, names


def _labelled(batch: dict, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) at the labelled next-token positions: (n, vocab), (n,)."""
    labels = batch["labels"][:, 1:].to(logits.device)
    keep = labels != IGNORE
    return logits[:, :-1][keep].float(), labels[keep]


def _forward(model, batch: dict, device) -> torch.Tensor:
    return model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits


def _device(model) -> torch.device:
    return next(p for p in model.parameters()).device


@torch.no_grad()
def task_loss(model, examples: Sequence[Example], plan: MaskPlan, batch_size: int, pad_id: int,
              stop: Optional[StopFlag] = None) -> tuple[Optional[float], int]:
    """(mean CE per labelled token, tokens) with the plan's mask applied; (None, 0) without examples."""
    if not examples:
        return None, 0
    was_training, device = model.training, _device(model)
    model.eval()
    total, count = 0.0, 0
    try:
        with apply_masks(model, plan.hooks, plan.site):
            for chunk in eval_batches(examples, batch_size):
                if stop is not None:
                    stop.check()
                batch = collate(chunk, pad_id)
                logits, targets = _labelled(batch, _forward(model, batch, device))
                total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
                count += int(targets.numel())
    finally:
        model.train(was_training)
    return total / max(count, 1), count


class BaseLogits:
    """The unchanged model's logits at the labelled positions of each general batch, kept between
    measurements (the base never changes), up to a memory limit; beyond it they are recomputed."""

    def __init__(self, limit_bytes: int = 1 << 30):
        self.kept: dict[int, torch.Tensor] = {}
        self.limit, self.used = limit_bytes, 0

    def get(self, index: int, compute) -> torch.Tensor:
        if index in self.kept:
            return self.kept[index]
        logits = compute()
        size = logits.numel() * logits.element_size()
        if self.used + size <= self.limit:
            self.kept[index], self.used = logits, self.used + size
        return logits


@torch.no_grad()
def general_stats(model, examples: Sequence[Example], plan: MaskPlan, batch_size: int, pad_id: int,
                  stop: Optional[StopFlag] = None, base: Optional[BaseLogits] = None,
                  same_as_base: bool = False) -> dict:
    """Every per-token metric of the model against the base (KL, CE, top-1 agreement) and the base's CE,
    averaged over the tokens of general responses.

    ``same_as_base``: the model is known to equal the base (untrained adapter, no mask): one pass.
    """
    if not examples:
        return {}
    was_training, device = model.training, _device(model)
    model.eval()
    base = base or BaseLogits(limit_bytes=0)
    sums = {**{key: 0.0 for key in TOKEN_METRICS}, "base_ce": 0.0}
    tokens = 0
    disable = getattr(model, "disable_adapter", None)

    def base_pass(batch):
        with disable() if callable(disable) else nullcontext():  # the unchanged model: no adapter, no mask
            return _labelled(batch, _forward(model, batch, device))[0]

    try:
        for index, chunk in enumerate(eval_batches(examples, batch_size)):
            if stop is not None:
                stop.check()
            batch = collate(chunk, pad_id)
            base_logits = base.get(index, lambda: base_pass(batch))
            targets = batch["labels"][:, 1:][batch["labels"][:, 1:] != IGNORE].to(base_logits.device)
            if same_as_base:
                logits = base_logits
            else:
                with apply_masks(model, plan.hooks, plan.site):
                    logits, _ = _labelled(batch, _forward(model, batch, device))
            stats = next_token_stats(base_logits, logits, targets)
            base_ce = float(torch.nn.functional.cross_entropy(base_logits, targets, reduction="sum"))
            n = stats["tokens"]
            for key in TOKEN_METRICS:
                sums[key] += stats[key] * n
            sums["base_ce"] += base_ce
            tokens += n
    finally:
        model.train(was_training)
    return {key: value / max(tokens, 1) for key, value in sums.items()} | {"tokens": tokens}


def measure(model, task_examples: Sequence[Example], general: Sequence[Example], plan: MaskPlan,
            config: TrainConfig, pad_id: int, stop: Optional[StopFlag] = None, base: Optional[BaseLogits] = None,
            untrained: bool = False) -> Figures:
    """Learning and forgetting figures of the model as it stands (``untrained``: its adapter is still zero)."""
    loss, task_tokens = task_loss(model, task_examples, plan, config.eval_batch_size, pad_id, stop)
    stats = general_stats(model, general, plan, config.eval_batch_size, pad_id, stop, base,
                          same_as_base=untrained and not plan.hooks)
    return Figures(
        task_loss=loss, task_tokens=task_tokens, general_kl=stats.get("kl"), general_ce=stats.get("ce"),
        general_top1=stats.get("top1"), general_tokens=stats.get("tokens", 0), base_ce=stats.get("base_ce"),
    )


def compare_figures(before: Figures, after: Figures) -> dict:
    """The summary's learning and forgetting block."""
    change = None
    if before.task_loss is not None and after.task_loss is not None:
        change = after.task_loss - before.task_loss
    return {
        "learning": {"task_loss_before": before.task_loss, "task_loss_after": after.task_loss,
                     "task_loss_change": change, "task_tokens": after.task_tokens},
        "forgetting": {"kl_before": before.general_kl, "kl_after": after.general_kl,
                       "ppl_base": after.base_ppl, "ppl_before": before.general_ppl, "ppl_after": after.general_ppl,
                       "top1_after": after.general_top1, "general_tokens": after.general_tokens},
    }
