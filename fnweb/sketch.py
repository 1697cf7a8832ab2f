"""The top principal directions of standardised activations: a randomized SVD read in row
blocks, in one process or several.

``Z = (X - mean) * scale`` is never materialised. Each pass reads this process's rows X
(float16, in memory or a mapped file, ``fnweb.rowstore``) a row block at a time,
standardises the block in float32 a few rows at a time (so the float32 copy stays in
the cache) and multiplies. The power iterations are subspace iterations on Z^T Z: one
pass computes Z^T (Z P) block by block, the (channels x w) results are summed over
processes, and P <- orth(that). They multiply in bfloat16 where the device does so
faster (a GPU, a CPU with AVX-512 BF16 or AMX: probed once), with float32 sums:
rounding there only tilts the next iterate, and the next iteration corrects it. The
last pass is float32 throughout: Y = Z P on each process's rows, the (w x w) Gram Y^T Y
summed, and its eigenvectors rotate P and Y into the principal directions and scores
(Rayleigh-Ritz). ``power_iters`` + 2 passes in all, each reading X once.

Only (channels x w) and (w x w) matrices cross between processes (``fnweb.shards``);
the (tokens x w) scores stay with their rows until ``fnweb.decompose`` gathers them.
``PartTimes`` keeps where the seconds went. It knows nothing about models, ICA or templates.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .progress import StopFlag
from .shards import Shards

_BLOCK_BYTES = 128 * 2**20  # bfloat16 bytes of the power iterations' row blocks, over all workers
_CACHE_ROWS_BYTES = 6 * 2**20  # float32 bytes standardised at a time on a CPU (stays in the L2/L3 cache)
_WORKERS = 8  # at most this many row workers per process


class PartTimes:
    """Seconds per part of the decomposition (synchronised on CUDA, so the parts are exact there too).

    Parts timed inside the row workers count each worker's seconds divided by their number.
    """

    def __init__(self, device: torch.device):
        self.seconds: dict[str, float] = defaultdict(float)
        self.cuda = device.type == "cuda"

    def since(self, name: str, start: float, into: Optional[dict] = None) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        (self.seconds if into is None else into)[name] += now - start
        return now

    def merge(self, workers: list[dict]) -> None:
        for name in set().union(*workers):
            self.seconds[name] += sum(part.get(name, 0.0) for part in workers) / len(workers)

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 4) for name, value in self.seconds.items()}


_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86 instructions that multiply bfloat16 natively


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    """This CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    return frozenset(word for line in text.splitlines() if line.startswith(("flags", "Features"))
                     for word in line.split(":", 1)[1].split())


def power_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the device multiplies it natively, else float32.

    Decided by what the hardware is, never by a timing: a choice made by the clock could
    change with the machine's load, and with it the template's masks (a rerun must give
    the same template).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_flags() & _BF16_FLAGS:
        return torch.bfloat16
    return torch.float32


class StandardisedRows:
    """This process's rows as ``Z = (X - mean) * scale``, read in standardised row blocks.

    On a CPU the rows are split among as many Python threads as torch has threads, each
    running torch on one thread over its own rows: a pass needs no barrier between
    threads but its end, so a busy machine that takes a core away delays one worker
    instead of stalling every small parallel step (which made passes 10-60x slower).
    """

    def __init__(self, matrix: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, stop: StopFlag,
                 device: torch.device, release: Optional[Callable[[int, int], None]] = None,
                 times: Optional[PartTimes] = None):
        self.x, self.stop, self.device = matrix, stop, device
        self.scale = scale.float().to(device)
        self.bias = (-mean.float().to(device) * self.scale).contiguous()
        self.release = release or (lambda start, stop: None)
        self.times = times or PartTimes(device)
        channels = max(matrix.shape[1], 1)
        self.workers = 1 if device.type != "cpu" else max(1, min(torch.get_num_threads(), _WORKERS,
                                                                 matrix.shape[0] // 64))
        self.rows = max(1, _BLOCK_BYTES // (2 * channels * self.workers))  # bfloat16 rows of one power block
        self.cached = self.rows if device.type != "cpu" else max(1, _CACHE_ROWS_BYTES // (4 * channels))

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    def _standardise(self, first: int, last: int, out: torch.Tensor) -> None:
        """``out`` (float32, last - first rows) = Z[first:last]."""
        out.copy_(self.x[first:last])  # converts (and crosses to the device when X stayed on the CPU)
        torch.addcmul(self.bias, out, self.scale, out=out)

    def _in_parallel(self, work: Callable[[range, dict], object]) -> list:
        """``work(rows, times)`` over each worker's share of the rows, one torch thread each."""
        bounds = np.linspace(0, self.x.shape[0], self.workers + 1).astype(int)
        parts = [range(bounds[i], bounds[i + 1]) for i in range(self.workers)]
        local = [defaultdict(float) for _ in parts]
        if len(parts) == 1:
            results = [work(parts[0], local[0])]
        else:
            previous = torch.get_num_threads()

            def run(index: int):
                torch.set_num_threads(1)
                return work(parts[index], local[index])

            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(len(parts)) as pool:
                    results = list(pool.map(run, range(len(parts))))
            finally:
                torch.set_num_threads(previous)
        self.times.merge(local)
        return results

    def power(self, directions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Z^T Z P over this process's rows, (channels, w) float32."""
        right = directions.to(self.device, dtype)

        def work(rows: range, times: dict) -> torch.Tensor:
            block = torch.empty(min(self.rows, max(len(rows), 1)), self.channels, dtype=dtype, device=self.device)
            scratch = torch.empty(self.cached, self.channels, device=self.device) if dtype != torch.float32 else None
            out = torch.zeros(self.channels, directions.shape[1], device=self.device)
            for start in range(rows.start, rows.stop, self.rows):
                self.stop.check()
                clock, stop = time.perf_counter(), min(start + self.rows, rows.stop)
                for first in range(start, stop, self.cached):
                    last = min(first + self.cached, stop)
                    target = block[first - start : last - start]
                    self._standardise(first, last, target if scratch is None else scratch[: last - first])
                    if scratch is not None:
                        target.copy_(scratch[: last - first])
                self.release(start, stop)
                clock = self.times.since("read and standardise", clock, times)
                z = block[: stop - start]
                out += (z.T @ (z @ right)).float()
                self.times.since("power iterations", clock, times)
            return out

        return sum(self._in_parallel(work))

    def project(self, directions: torch.Tensor) -> torch.Tensor:
        """Z P over this process's rows in float32, (rows, w): row by row, so a few rows at a time."""
        right = directions.to(self.device, torch.float32)
        out = torch.empty(self.x.shape[0], directions.shape[1], device=self.device)

        def work(rows: range, times: dict) -> None:
            scratch = torch.empty(self.cached, self.channels, device=self.device)
            for first in range(rows.start, rows.stop, self.cached):
                self.stop.check()
                clock, last = time.perf_counter(), min(first + self.cached, rows.stop)
                block = scratch[: last - first]
                self._standardise(first, last, block)
                self.release(first, last)
                clock = self.times.since("read and standardise", clock, times)
                torch.matmul(block, right, out=out[first:last])
                self.times.since("final pass", clock, times)

        self._in_parallel(work)
        return out


@dataclass
class Sketch:
    """The randomized SVD: this process's scores and the directions every process shares."""

    scores: torch.Tensor  # (this process's rows, w) float32 on the CPU: U S
    basis: np.ndarray  # (channels, w) float32, the same on every process: V
    singular: np.ndarray  # (w,)


def top_components(z: StandardisedRows, shards: Shards, k: int, oversample: int, power_iters: int, seed: int,
                   tokens: int) -> Sketch:
    """Top ``k + oversample`` principal directions of Z (``tokens`` rows over all processes), and the scores.

    The first k are the top k principal components; the rest span the sketch's remaining
    directions (what ``fnweb.stability`` resamples within).
    """
    width = min(k + oversample, tokens, z.channels)
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(z.channels, width, generator=generator)  # drawn on the CPU: the same everywhere
    dtype = power_dtype(z.device)
    for _ in range(power_iters + 1):  # sharpen the spectrum: P <- orth(Z^T Z P)
        summed = _exchanged(z, shards.total, z.power(directions, dtype))
        clock = time.perf_counter()
        directions = torch.linalg.qr(summed.double())[0].float()
        z.times.since("power iterations", clock)
        directions = _exchanged(z, shards.broadcast, directions)  # one orthonormal basis, bit for bit, everywhere
    projected = z.project(directions).double()
    clock = time.perf_counter()
    gram = _exchanged(z, shards.total, projected.T @ projected)
    values, vectors = torch.linalg.eigh(gram)
    order = torch.argsort(values, descending=True)
    values, vectors = _exchanged(z, shards.broadcast, values[order]), _exchanged(z, shards.broadcast, vectors[:, order])
    scores = (projected @ vectors).float().cpu()
    basis = (directions.double().to(vectors.device) @ vectors).float().cpu().numpy()
    z.times.since("final pass", clock)
    return Sketch(scores, basis, values.clamp(min=0).sqrt().cpu().numpy())


def _exchanged(z: StandardisedRows, call, tensor: torch.Tensor) -> torch.Tensor:
    clock = time.perf_counter()
    out = call(tensor)
    z.times.since("exchange", clock)
    return out


def onto(matrix: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The matrix on ``device`` when it takes at most half the device's free memory; else left where it is."""
    if device.type != "cuda" or matrix.device == device:
        return matrix
    free, _ = torch.cuda.mem_get_info(device)
    if matrix.numel() * matrix.element_size() > free // 2:
        return matrix
    return matrix.to(device)
