"""ICA of captured activations: standardise, low-rank PCA, FastICA, one channel map per component.

The original method z-scored a float32 copy of the whole ``(tokens, channels)`` matrix,
ran a 1000-component PCA and then FastICA to k components. Only the top k principal
directions reach the ICA, so this module computes just those, with a randomized SVD
(Halko et al.; ``fnweb.sketch``) that reads the compact float16 matrix in row blocks and
standardises on the fly: no full float32 copy is ever made, and the cost grows
linearly in tokens and channels. FastICA then runs on the small ``(tokens, k)`` score
matrix, and the channel maps are ``V_k @ mixing`` exactly as the original's
``pca.components_.T @ ica.mixing_``. Over several processes (``fnweb.shards``) the passes
run where the rows are and FastICA on the main process, on the gathered scores.
``info["seconds"]`` says where the time went (reading and standardising, the power
iterations, the final pass, exchanges between processes, FastICA, the sources).

Each map is oriented so that its heavier tail is positive (ICA's sign is arbitrary);
``fnweb.thresholds`` turns maps into binary masks (``threshold`` is re-exported here).

It knows nothing about models or templates.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .errors import FnwebError
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .shards import Shards
from .sketch import PartTimes, Sketch, StandardisedRows, onto, top_components
from .thresholds import threshold  # noqa: F401  (re-exported: the rules live in fnweb.thresholds)

_CHUNK_BYTES = 64 * 2**20  # float32 bytes per column chunk (column_moments)


@dataclass
class Decomposition:
    """Result of ``decompose``: the channel maps and what produced them."""

    maps: np.ndarray  # (channels, k) float32: component c's weight on each channel
    explained_variance: np.ndarray  # (k,) variance of the standardised data along each component
    n_tokens: int
    converged: bool
    info: dict = field(default_factory=dict)
    # The randomized SVD's sketch, for re-running PCA and ICA on resampled tokens
    # (``fnweb.stability``): scores (tokens, w) and directions (channels, w), w = k + oversample.
    sketch_scores: Optional[np.ndarray] = field(default=None, repr=False)
    sketch_basis: Optional[np.ndarray] = field(default=None, repr=False)
    ica_settings: dict = field(default_factory=dict)
    # Each token's source value per component (tokens, k), unit variance, signed and ordered as ``maps``:
    # Z ~ sources @ maps.T. What the component cards rank tokens by (``fnweb.activity``).
    sources: Optional[np.ndarray] = field(default=None, repr=False)


def column_moments(matrix: torch.Tensor, stop: Optional[StopFlag] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and standard deviation in float32, read in chunks, on the matrix's device."""
    stop = stop or StopFlag()
    mean = torch.empty(matrix.shape[1], device=matrix.device)
    std = torch.empty(matrix.shape[1], device=matrix.device)
    step = max(1, _CHUNK_BYTES // (4 * max(matrix.shape[0], 1)))
    for start in range(0, matrix.shape[1], step):
        stop.check()
        block = matrix[:, start : start + step].to(torch.float32)
        mean[start : start + step] = block.mean(0)
        std[start : start + step] = block.std(0, unbiased=False)
    return mean, std


def orientation(maps: np.ndarray) -> np.ndarray:
    """Per column, the sign (+1 or -1) that makes its heavier tail (positive skew) point up."""
    centred = maps - maps.mean(0)
    skew = (centred**3).mean(0)
    return np.where(skew < 0, -1.0, 1.0)


def orient_maps(maps: np.ndarray) -> np.ndarray:
    """Flip each map so that its heavier tail (positive skew) points up."""
    return maps * orientation(maps)


def decompose(
    matrix: torch.Tensor,
    k: int = 10,
    seed: int = 0,
    standardise: bool = True,
    oversample: int = 30,
    power_iters: int = 3,
    max_iter: int = 400,
    tol: float = 1e-4,
    progress: ProgressFn = no_progress,
    stop: Optional[StopFlag] = None,
    mean: Optional[torch.Tensor] = None,
    std: Optional[torch.Tensor] = None,
    device: Optional[torch.device | str] = None,
    shards: Optional[Shards] = None,
    row_order: Optional[np.ndarray] = None,
    release: Optional[Callable[[int, int], None]] = None,
) -> Decomposition:
    """ICA with ``k`` components of a ``(tokens, channels)`` activation matrix.

    ``mean`` and ``std`` are per-channel statistics if the caller has them (the capture
    computes them in float32 as it goes; over every process's rows when sharded);
    otherwise one extra pass computes them. ``device`` runs the PCA passes there (a CUDA
    device, say); FastICA on the small score matrix always runs on the CPU. With
    ``shards``, ``matrix`` is this process's rows: the passes run where the rows are, the
    scores are gathered (and put in ``row_order``: gathered row i goes to row_order[i])
    and FastICA runs on the main process; every process gets the maps, only the main
    one the sketch and the sources. ``release(start, stop)``: rows read for now.
    """
    stop, shards = stop or StopFlag(), shards or Shards()
    tokens, channels = sum(shards.counts(matrix.shape[0])), matrix.shape[1]
    _check_size(k, tokens, channels)
    report = Progress("decomposing", 0, power_iters + 3, "passes", "Decomposing (PCA)")
    progress(report)
    device = torch.device(device or "cpu")
    times = PartTimes(device)
    z = _standardised(matrix, standardise, stop, mean, std, device, shards, release, times)
    sketch = top_components(z, shards, k, oversample, power_iters, seed, tokens)
    clock = time.perf_counter()
    gathered = shards.gather_rows(sketch.scores)
    times.since("exchange", clock)
    report.done, report.message = report.total - 1, "Decomposing (ICA)"
    progress(report)
    fit = _fit_on_main(gathered, sketch, k, seed, max_iter, tol, row_order, times) if shards.is_main else None
    maps = shards.broadcast(torch.from_numpy(fit["maps"]) if fit else torch.empty(channels, k)).numpy()
    report.done = report.total
    progress(report)
    fit = fit or {"variance": np.zeros(k, np.float32), "converged": True, "iterations": 0, "scores": None,
                  "sources": None}
    return Decomposition(
        maps=maps, explained_variance=fit["variance"], n_tokens=tokens, converged=fit["converged"],
        info={"ica_iterations": fit["iterations"], "top_singular_values": sketch.singular[:k].round(4).tolist(),
              "seconds": times.rounded()},
        sketch_scores=fit["scores"], sketch_basis=sketch.basis if shards.is_main else None,
        ica_settings={"max_iter": max_iter, "tol": tol}, sources=fit["sources"],
    )


def _check_size(k: int, tokens: int, channels: int) -> None:
    if k < 1:
        raise FnwebError(f"k must be at least 1 (got {k}).")
    if k > min(tokens, channels) - 1:
        raise FnwebError(
            f"k = {k} components need more data: only {tokens} tokens were captured "
            f"({channels} channels). Use more samples or longer prompts, or a smaller k."
        )


def _standardised(matrix, standardise: bool, stop: StopFlag, mean, std, device: torch.device, shards: Shards,
                  release, times: PartTimes) -> StandardisedRows:
    """Z over this process's rows, with the given column statistics or ones computed (and pooled) now."""
    matrix = onto(matrix, device)
    if mean is None or (standardise and std is None):
        mean, std = shards.pooled(matrix.shape[0], *column_moments(matrix, stop))
    scale = torch.where(std > 1e-8, 1.0 / std, torch.zeros_like(std)) if standardise else torch.ones_like(mean)
    return StandardisedRows(matrix, mean, scale, stop, device, release, times)


def _fit_on_main(gathered: torch.Tensor, sketch: Sketch, k: int, seed: int, max_iter: int, tol: float,
                 row_order: Optional[np.ndarray], times: PartTimes) -> dict:
    """FastICA of the top-k scores (in ``row_order``), the maps, their signs and order, and the sources."""
    clock = time.perf_counter()
    sketch_scores = gathered.numpy()
    if row_order is not None:
        ordered = np.empty_like(sketch_scores)
        ordered[row_order] = sketch_scores
        sketch_scores = ordered
    scores, basis = sketch_scores[:, :k], sketch.basis[:, :k]
    ica = fit_ica(scores, k, seed, max_iter, tol)
    clock = times.since("ica", clock)
    maps = basis @ ica.mixing  # (channels, k)
    signs = orientation(maps)
    maps = maps * signs
    with threadpool_limits(1):  # scores ~ sources @ mixing.T: a (tokens, k) solve, cheap next to the passes
        sources = np.linalg.solve(ica.mixing, (scores - scores.mean(0)).T).T * signs
    variance = (maps**2).sum(0)  # sources have unit variance: this is each one's share of Z's variance
    order = np.argsort(-variance, kind="stable")  # strongest component first, deterministically
    times.since("sources", clock)
    return {"maps": maps[:, order].astype(np.float32), "variance": variance[order].astype(np.float32),
            "converged": ica.converged, "iterations": ica.iterations, "scores": sketch_scores,
            "sources": sources[:, order].astype(np.float32)}


@dataclass
class IcaFit:
    mixing: np.ndarray  # (k, k): scores ~ sources @ mixing.T
    converged: bool
    iterations: int


def fit_ica(scores: np.ndarray, k: int, seed: int, max_iter: int = 400, tol: float = 1e-4) -> IcaFit:
    """FastICA (logcosh, unit-variance whitening) of a (tokens, k) score matrix, in float64."""
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    # sklearn's whitening flips each eigenvector by the sign of its first entry, and
    # np.sign(0) = 0 wipes a vector out. PCA scores are uncorrelated, so their covariance
    # is diagonal and its eigenvectors unit vectors: all but one were wiped, and every
    # component collapsed onto one (seen on SmolLM2's MLP outputs, and on resampled
    # scores). A fixed random rotation makes the covariance dense; it is undone below.
    rotation = np.linalg.qr(np.random.default_rng(seed).standard_normal((k, k)))[0]
    ica = FastICA(n_components=k, whiten="unit-variance", whiten_solver="eigh",
                  random_state=seed, max_iter=max_iter, tol=tol)
    # One BLAS thread: its (k, tokens) products are too small to share, and on a busy machine
    # threads waiting for each other made FastICA 40x slower (1.7 s instead of 0.04 s).
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):
        warnings.simplefilter("always", ConvergenceWarning)
        ica.fit(scores.astype(np.float64) @ rotation)  # float64: eigh whitening in float32 loses weak sources
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    # scores @ R = S M'^T, so scores = S (R M')^T
    return IcaFit(rotation @ ica.mixing_, converged, int(ica.n_iter_))
