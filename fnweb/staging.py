"""Getting a batch's captured rows from the model's device into the host matrix.

``DirectRows`` (a model on the CPU): the hooks write each layer's rows straight into the
host matrix, converting to the storage dtype as they copy; nothing else moves.

``StagedRows`` (a model on CUDA, or any device when asked): the hooks write into a
device buffer (tokens in the batch, layers, width) in the storage dtype. When the batch
ends, one copy takes the whole buffer to pinned host memory on a side stream, without
waiting for it; the batch before it, whose copy has had a whole forward pass to finish,
is then written into the host matrix. Two device buffers and two pinned ones
alternate, so the GPU computes batch i+1 while batch i crosses. One device-to-host
copy per batch replaces one synchronous copy per layer (30 per batch on SmolLM2, which
held capture at 0.35 of a plain forward on an H200). On a CPU device the same steps run
with plain copies and no streams, which is what the tests exercise.

Both call ``release`` on rows once they are in the host matrix (a mapped file's pages
may then go; ``fnweb.rowstore``). It knows nothing about models or hooks.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

_FLOAT16_MAX = 65504.0
Release = Callable[[int, int], None]


def _no_release(start: int, stop: int) -> None:
    pass


class DirectRows:
    """Hooks write into the host matrix itself."""

    staged = False

    def __init__(self, matrix: torch.Tensor, layers: int, width: int, release: Release = _no_release):
        self.by_layer = matrix.view(matrix.shape[0], layers, width)
        self.release = release
        self.device = torch.device("cpu")  # where the batch's rows (and so its statistics) live
        self.span = (0, 0)

    def begin(self, start: int, rows: int) -> torch.Tensor:
        """Where this batch's hooks write: (rows, layers, width)."""
        self.span = (start, start + rows)
        return self.by_layer[start : start + rows]

    def end(self) -> None:
        self.release(*self.span)

    def finish(self) -> None:
        pass


class StagedRows:
    """Hooks write into a device buffer; one copy per batch crosses to the host, overlapped with the next batch."""

    staged = True

    def __init__(self, matrix: torch.Tensor, layers: int, width: int, device: torch.device, max_rows: int,
                 release: Release = _no_release):
        self.by_layer = matrix.view(matrix.shape[0], layers, width)
        self.release = release
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        shape = (max(max_rows, 1), layers, width)
        self.stages = [torch.empty(shape, dtype=matrix.dtype, device=self.device) for _ in range(2)]
        self.hosts = [torch.empty(shape, dtype=matrix.dtype, pin_memory=self.cuda) for _ in range(2)]
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.copied = [None, None]  # per buffer: the event its last device-to-host copy records
        self.pending: list[tuple[int, int, int]] = []  # (buffer, start, rows) copied but not yet in the matrix
        self.turn = 0
        self.span = (0, 0)

    def begin(self, start: int, rows: int) -> torch.Tensor:
        if self.cuda and self.copied[self.turn] is not None:  # the copy out of this buffer must be done first
            torch.cuda.current_stream(self.device).wait_event(self.copied[self.turn])
        self.span = (start, rows)
        return self.stages[self.turn][:rows]

    def end(self) -> None:
        buffer, (start, rows) = self.turn, self.span
        stage, host = self.stages[buffer][:rows], self.hosts[buffer][:rows]
        if stage.dtype == torch.float16:  # huge ("massive") activations stay finite, at no sync
            stage.nan_to_num_(posinf=_FLOAT16_MAX, neginf=-_FLOAT16_MAX)
        self._land_pending()  # the previous batch: its copy ran while this one computed
        if self.cuda:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                host.copy_(stage, non_blocking=True)
                self.copied[buffer] = torch.cuda.Event()
                self.copied[buffer].record(self.stream)
        else:
            host.copy_(stage)
        self.pending.append((buffer, start, rows))
        self.turn = 1 - buffer

    def finish(self) -> None:
        self._land_pending()

    def _land_pending(self) -> None:
        while self.pending:
            buffer, start, rows = self.pending.pop(0)
            if self.cuda:
                self.copied[buffer].synchronize()
            self.by_layer[start : start + rows].copy_(self.hosts[buffer][:rows])
            self.release(start, start + rows)


def rows_for(device: torch.device, staged: Optional[bool]) -> bool:
    """Whether to stage: asked for, or by default on CUDA (elsewhere hooks write to the host directly)."""
    return torch.device(device).type == "cuda" if staged is None else staged
