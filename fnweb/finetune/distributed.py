"""One training process, or several under ``accelerate launch``: the few calls that differ.

With one process everything is plain PyTorch. When the launcher started several
(``WORLD_SIZE`` > 1), an ``accelerate.Accelerator`` (NCCL between GPUs, gloo between
CPU processes) wraps the model for data-parallel training, averages gradients, and
shares the numbers every process must agree on (the loss, a stop request). Only the
main process writes files or evaluates.

It knows nothing about models, data or masks.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterable

import torch


class Distributed:
    """The calls of the training loop that depend on how many processes run."""

    def __init__(self) -> None:
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            # Without a GPU, accelerate joins the launch's processes (over gloo) only when told it runs on the
            # CPU; else each process would train alone, as if it were the only one.
            self.accelerator = Accelerator(cpu=not torch.cuda.is_available())

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, fallback: str) -> str:
        """This process's device (each process of a launch has its own)."""
        return str(self.accelerator.device) if self.accelerator else fallback

    def prepare(self, model, optimizer):
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def no_sync(self, model):
        """Skip the gradient all-reduce on micro-batches before the last of a step."""
        return self.accelerator.no_sync(model) if self.accelerator else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip(self, parameters: Iterable[torch.nn.Parameter], max_norm: float) -> None:
        if max_norm <= 0:
            return
        if self.accelerator is None:
            torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
        else:
            self.accelerator.clip_grad_norm_(list(parameters), max_norm)

    def total(self, value: float) -> float:
        """Sum of ``value`` over processes."""
        if self.accelerator is None:
            return value
        tensor = torch.tensor([float(value)], device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="sum").item())

    def any(self, flag: bool) -> bool:
        """True on every process when any process says so (a stop request, a bad loss)."""
        return self.total(1.0 if flag else 0.0) > 0

    def unwrap(self, model):
        return self.accelerator.unwrap_model(model) if self.accelerator else model

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
