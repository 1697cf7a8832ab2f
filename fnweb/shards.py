"""The processes that share one build: which prompts each holds, and the few calls that cross between them.

Under a launcher (``accelerate launch --multi_gpu --num_processes N``, or ``torchrun``,
which accelerate runs underneath: ``WORLD_SIZE`` > 1) each process joins the
``torch.distributed`` process group the launcher set up: NCCL between GPUs, each process
on its own (``LOCAL_RANK``); gloo between CPU processes (no GPU, or
``ACCELERATE_USE_CPU``). Every process reads the same prompts; ``plan`` deals them out, longest
first, one to each process in turn, so that each holds about the same number of tokens.
The build's steps that need every token meet in a few calls:

- ``total``: a sum over processes (column statistics, the power iterations'
  (channels x w) products, (w x w) Gram matrices);
- ``gather_rows``: every process's rows, in rank order, on the main process (the
  (tokens x w) sketch scores and the cards' per-token signals, once each);
- ``broadcast``: the main process's tensor on every process (the directions every
  process projects on, the component maps);
- ``agree``: an error one process met, raised on all of them, so that they stop together.

The activations themselves never cross. One process alone: every call returns its
input. Only the main process writes files. It knows nothing about models, ICA or templates.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from .errors import FnwebError

CPU = torch.device("cpu")  # the default device: one shared instance, not a call in each signature
_MESSAGE_BYTES = 1024  # an error message crosses as this many UTF-8 bytes


def launched_processes() -> int:
    """How many processes the launcher started (1 without one)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


_MPI_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_HOW = ("launch CPU processes with `CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes N -m "
        "{module} ...` or `torchrun --nproc_per_node N -m {module} ...`.")


def check_launch(module: str = "fnweb.cli.buildtemplates") -> None:
    """Refuse a launch that asked for several processes but gave this one no process group.

    ``accelerate launch --cpu --num_processes N`` without MPI runs the script once, as one
    process: the work would quietly not be shared. Under mpirun, each process would do
    all of it (fnweb's builds and fine-tuning runs join the group the launcher's
    ``WORLD_SIZE`` names). Both say so instead, with the commands that work for ``module``.
    """
    if launched_processes() > 1:
        return
    how = _HOW.format(module=module)
    mpi = max(int(os.environ.get(name, "1") or 1) for name in _MPI_SIZES)
    if mpi > 1:
        raise FnwebError(f"mpirun started {mpi} processes, but fnweb joins a torch.distributed process "
                         f"group (WORLD_SIZE), which mpirun does not set: {how}")
    asked = _cpu_launch_processes()
    if asked > 1:
        raise FnwebError(f"accelerate launch --cpu started one process, not the {asked} asked for (without MPI it runs "
                         f"the script once): {how}")


def _cpu_launch_processes() -> int:
    """--num_processes of the ``accelerate launch --cpu`` that started this process (1 when it was not one)."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes"):
        return 1
    try:  # the launcher is the parent (Linux: its command line; elsewhere this check is skipped)
        words = open(f"/proc/{os.getppid()}/cmdline", "rb").read().decode(errors="replace").split("\0")
    except OSError:
        return 1
    if not any("accelerate" in word for word in words):
        return 1
    for index, word in enumerate(words):
        flag, _, value = word.partition("=")
        if flag.replace("-", "_") == "__num_processes":
            value = value or (words[index + 1] if index + 1 < len(words) else "")
            return int(value) if value.isdigit() else 1
    return 1


class Shards:
    """This process's place among the processes of a build, and the calls between them."""

    def __init__(self, world: int = 1, rank: int = 0, device: torch.device = CPU,
                 own_device: Optional[torch.device] = None):
        self.world, self.rank, self.device = world, rank, device  # device: where collectives' tensors go
        self.own_device = own_device  # the device the launcher gave this process (None: not launched)

    @classmethod
    def from_environment(cls) -> "Shards":
        """One process, or this process's place in a launch (joining its process group)."""
        if launched_processes() == 1:
            return cls()
        import torch.distributed as dist

        cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
        device = torch.device("cpu") if cpu else torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("gloo" if cpu else "nccl")  # env://: the launcher's address, rank and size
        # NCCL moves only GPU tensors; gloo moves CPU ones.
        return cls(dist.get_world_size(), dist.get_rank(), device, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    # ---- sharing out ----

    def plan(self, lengths: Sequence[int]) -> list[list[int]]:
        """Each process's sequence indices: longest first, dealt in turn (each list ascending)."""
        if len(lengths) < self.world:
            raise FnwebError(
                f"{self.world} processes need at least one prompt each, but there are only {len(lengths)} prompts: "
                f"use at most {len(lengths)} processes, or more samples per dataset.")
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        return [sorted(order[rank :: self.world]) for rank in range(self.world)]

    # ---- collectives ----

    def _dist(self):
        import torch.distributed as dist

        return dist

    def total(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over processes (same shape, dtype and device)."""
        if not self.distributed:
            return tensor
        moved = tensor.to(self.device).contiguous()
        self._dist().all_reduce(moved)
        return moved.to(tensor.device)

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """The main process's ``tensor`` (every process passes one of the same shape and dtype)."""
        if not self.distributed:
            return tensor
        moved = tensor.to(self.device).contiguous()
        self._dist().broadcast(moved, src=0)
        return moved.to(tensor.device)

    def gather_rows(self, rows: torch.Tensor) -> Optional[torch.Tensor]:
        """Every process's ``rows`` (n_p, ...) stacked in rank order on the main process; None elsewhere."""
        if not self.distributed:
            return rows
        counts = self.counts(rows.shape[0])
        longest = max(counts)
        padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=self.device)
        padded[: rows.shape[0]] = rows.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self._dist().all_gather(parts, padded)  # gloo and NCCL both have it; rows are small (tokens x w)
        if not self.is_main:
            return None
        return torch.cat([part[:n] for part, n in zip(parts, counts)]).to(rows.device)

    def counts(self, count: int) -> list[int]:
        """Every process's ``count``, in rank order."""
        if not self.distributed:
            return [count]
        slots = torch.zeros(self.world, dtype=torch.float64)
        slots[self.rank] = count
        return [int(x) for x in self.total(slots).tolist()]

    def pooled(self, count: int, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column mean and standard deviation over every process's rows, from each one's own (float64 sums)."""
        if not self.distributed:
            return mean, std
        total = float(sum(self.counts(count)))
        own = mean.double()
        pooled_mean = self.total(own * count) / total
        variance = self.total(count * (std.double() ** 2 + (own - pooled_mean) ** 2)) / total
        return pooled_mean.float(), variance.sqrt().float()

    def agree(self, error: Optional[BaseException]) -> None:
        """Raise on every process the first error any process met (None: carry on)."""
        if not self.distributed:
            if error is not None:
                raise error
            return
        failed = self.counts(0 if error is None else 1)
        if not any(failed):
            return
        source = failed.index(1)
        text = torch.zeros(_MESSAGE_BYTES, dtype=torch.uint8)
        if self.rank == source:
            message = str(error).encode("utf-8")[:_MESSAGE_BYTES]
            text[: len(message)] = torch.tensor(list(message), dtype=torch.uint8)
        moved = text.to(self.device)
        self._dist().broadcast(moved, src=source)
        message = bytes(moved.cpu().tolist()).rstrip(b"\0").decode("utf-8", errors="replace")
        if self.rank == source:
            raise error  # as it was (a bug keeps its traceback)
        raise FnwebError(f"Process {source} of {self.world}: {message}")

    def barrier(self) -> None:
        if self.distributed:
            self._dist().barrier()

