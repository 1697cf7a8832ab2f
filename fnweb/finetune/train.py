"""The training loop: masked LoRA steps with progress from step 1, eval losses, stop and failure.

Each optimizer step runs its micro-batches inside ``apply_masks`` (the hooks sit on
the PEFT-wrapped modules, so the LoRA path is masked too) and emits a ``step`` event:
step, loss, learning rate, tokens/s, time left. An ``eval`` event with the validation
loss follows at intervals. A stop request is honoured after the step in progress
(the caller saves the adapter); a NaN or infinite loss and running out of memory end
the run with a ``FnwebError`` saying what to change.

It knows nothing about run folders, templates or where the data came from.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import FnwebError
from ..masks import apply_masks
from ..progress import StopFlag
from .config import TrainConfig
from .data import IGNORE, Example, TrainData, collate, micro_batches, steps_per_epoch
from .distributed import Distributed
from .forgetting import task_loss
from .lora import trainable_parameters
from .network import MaskPlan

Emit = Callable[[dict], None]
LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]  # summed CE over the batch's labelled tokens


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled positions of a batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    return F.cross_entropy(logits[:, :-1][keep].float(), labels[keep], reduction="sum")


@dataclass
class LoopResult:
    steps: int  # optimizer steps done
    total_steps: int
    stopped: bool
    seconds: float
    tokens: int  # tokens seen (all processes)
    last_loss: Optional[float]
    last_eval_loss: Optional[float] = None

    @property
    def seconds_per_step(self) -> Optional[float]:
        return self.seconds / self.steps if self.steps else None


def total_steps(config: TrainConfig, n_train: int, world: int = 1) -> int:
    if config.max_steps > 0:
        return config.max_steps
    return max(1, math.ceil(config.num_epochs * steps_per_epoch(n_train, config.batch_size, config.grad_accum, world)))


def eval_every(config: TrainConfig, total: int) -> int:
    """Steps between eval losses: the config's, or about five per run (0: never)."""
    if config.eval_interval is not None:
        return config.eval_interval
    return max(1, total // 5)


def out_of_memory(config: TrainConfig, step: int) -> FnwebError:
    return FnwebError(
        f"Out of memory at step {step} (batch size {config.batch_size}, max sequence length {config.max_seq_len}, "
        f"LoRA r {config.lora_r}). Lower the batch size (raise gradient accumulation to keep the effective batch), "
        "lower the max sequence length, turn on gradient checkpointing, or load the model in 4-bit."
    )


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class _Clock:
    """Elapsed time, tokens/s and time left of the loop."""

    def __init__(self, total: int):
        self.total, self.start, self.tokens = total, time.monotonic(), 0

    def tick(self, step: int, tokens: int) -> dict:
        self.tokens += tokens
        elapsed = time.monotonic() - self.start
        return {"elapsed": round(elapsed, 3), "tokens_per_s": round(self.tokens / max(elapsed, 1e-9), 1),
                "seconds_left": round(elapsed / step * (self.total - step), 1)}


def _step(model, inner, batches: list[dict], plan: MaskPlan, loss_fn: LossFn, dist: Distributed, device) -> float:
    """Forward and backward of one optimizer step's micro-batches (mask active); the step's mean loss."""
    n_labels = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    step_loss = 0.0
    with apply_masks(inner, plan.hooks, plan.site):
        for index, batch in enumerate(batches):
            batch = {k: v.to(device) for k, v in batch.items()}
            sync = nullcontext() if index == len(batches) - 1 else dist.no_sync(model)
            with sync:
                loss = loss_fn(model, batch) / max(n_labels, 1)
                dist.backward(loss)
            step_loss += float(loss.detach())
    return step_loss


def _optimizer_step(micro_steps: Callable[[], float], optimizer, params, config: TrainConfig, dist: Distributed,
                    step: int) -> float:
    """Run the step's micro-batches, clip and step; the step's loss, or an error saying what to change."""
    try:
        loss = dist.total(micro_steps()) / dist.world
        if not math.isfinite(loss):
            raise FnwebError(
                f"The loss became {loss} at step {step}: training stopped and no adapter was saved. "
                f"Lower the learning rate (now {config.learning_rate:g}) or use float32 (torch dtype)."
            )
        dist.clip(params, config.max_grad_norm)
        optimizer.step()
    except FnwebError:
        raise
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_oom(exc):
            raise
        optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise out_of_memory(config, step) from exc
    return loss


def train_loop(
    model: torch.nn.Module,
    data: TrainData,
    val: list[Example],
    config: TrainConfig,
    plan: MaskPlan,
    pad_id: int,
    emit: Emit,
    stop: StopFlag,
    loss_fn: LossFn = causal_lm_loss,
    dist: Optional[Distributed] = None,
) -> LoopResult:
    """Train the PEFT model in place; return what happened."""
    from transformers import get_scheduler

    dist = dist or Distributed()
    total = total_steps(config, len(data.train), dist.world)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_schedule, optimizer, num_warmup_steps=round(config.warmup_ratio * total),
                              num_training_steps=total)
    model, optimizer = dist.prepare(model, optimizer)
    inner = dist.unwrap(model)  # hooks and evaluation use the model itself, not its DDP wrapper
    device = next(p for p in inner.parameters()).device
    stream = micro_batches(data.train, config.batch_size, config.seed, dist.rank, dist.world)
    interval, clock = eval_every(config, total), _Clock(total)
    result = LoopResult(0, total, False, 0.0, 0, None)
    model.train()
    for step in range(1, total + 1):
        batches = [collate(next(stream), pad_id) for _ in range(config.grad_accum)]
        lr = scheduler.get_last_lr()[0]
        loss = _optimizer_step(lambda batches=batches: _step(model, inner, batches, plan, loss_fn, dist, device),
                               optimizer, params, config, dist, step)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = int(dist.total(sum(int(b["attention_mask"].sum()) for b in batches)))
        result.steps, result.last_loss = step, loss
        emit({"event": "step", "step": step, "total": total, "loss": loss, "lr": lr,
              "epoch": round(step / steps_per_epoch(len(data.train), config.batch_size, config.grad_accum,
                                                    dist.world), 3), **clock.tick(step, tokens)})
        if val and interval and (step % interval == 0 or step == total):
            result.last_eval_loss = _eval(inner, val, config, plan, pad_id, dist)
            if dist.is_main:
                emit({"event": "eval", "step": step, "total": total, "eval_loss": result.last_eval_loss})
        if step < total and dist.any(stop.is_set):
            result.stopped = True
            break
    result.seconds, result.tokens = time.monotonic() - clock.start, clock.tokens
    return result


def _eval(inner, val, config: TrainConfig, plan: MaskPlan, pad_id: int, dist: Distributed) -> Optional[float]:
    """Validation loss on the main process (the others wait)."""
    loss = None
    if dist.is_main:
        loss, _ = task_loss(inner, val, plan, config.eval_batch_size, pad_id)
    dist.barrier()
    return loss
