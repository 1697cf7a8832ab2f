"""ICA of captured activations: standardise, low-rank PCA, FastICA, one channel map per component.

The original method z-scored a float32 copy of the whole ``(tokens, channels)`` matrix,
ran a 1000-component PCA and then FastICA to k components. Only the top k principal
directions reach the ICA, so this module computes just those, with a randomized SVD
(Halko et al.) that reads the compact float16 matrix in float32 column chunks and
standardises on the fly: no full float32 copy is ever made, and the cost grows
linearly in tokens and channels. FastICA then runs on the small ``(tokens, k)`` score
matrix, and the channel maps are ``V_k @ mixing`` exactly as the original's
``pca.components_.T @ ica.mixing_``.

Each map is oriented so that its heavier tail is positive (ICA's sign is arbitrary);
``fnweb.thresholds`` turns maps into binary masks (``threshold`` is re-exported here).

It knows nothing about models or templates.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .errors import FnwebError
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .thresholds import threshold  # noqa: F401  (re-exported: the rules live in fnweb.thresholds)

_CHUNK_BYTES = 64 * 2**20  # float32 bytes per column chunk


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


class _Standardised:
    """The standardised view ``Z = (X - mean) * scale`` of a compact matrix, never materialised.

    Products with Z fold the centring and scaling into the small factor:
    ``Z M = X (scale * M) - 1 (mean . scale * M)``, so each pass over X only converts a
    column chunk to float32 and multiplies.
    """

    def __init__(self, matrix: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, stop: StopFlag,
                 device: torch.device = torch.device("cpu")):
        self.x, self.stop, self.device = matrix, stop, device
        self.mean, self.scale = mean.float().to(device), scale.float().to(device)
        self.step = max(1, _CHUNK_BYTES // (4 * max(matrix.shape[0], 1)))
        # One float32 chunk, reused by every pass: a fresh one each time costs page faults.
        self.scratch = torch.empty(matrix.shape[0], min(self.step, matrix.shape[1]), dtype=torch.float32,
                                   device=device)

    @classmethod
    def of(cls, matrix: torch.Tensor, standardise: bool, stop: StopFlag,
           mean: Optional[torch.Tensor] = None, std: Optional[torch.Tensor] = None,
           device: torch.device = torch.device("cpu")) -> "_Standardised":
        """Use given column statistics (from the capture) or compute them in one pass."""
        matrix = _onto(matrix, device)
        if mean is None or (standardise and std is None):
            mean, std = column_moments(matrix, stop)
        scale = torch.where(std > 1e-8, 1.0 / std, torch.zeros_like(std)) if standardise else torch.ones_like(mean)
        return cls(matrix, mean, scale, stop, device)

    def chunks(self):
        for start in range(0, self.x.shape[1], self.step):
            self.stop.check()
            yield slice(start, min(start + self.step, self.x.shape[1]))

    def block(self, cols: slice) -> torch.Tensor:
        """Raw columns ``cols`` of X in float32 (a view of the scratch chunk)."""
        out = self.scratch[:, : cols.stop - cols.start]
        out.copy_(self.x[:, cols])  # converts, and crosses to the device when X stayed on the CPU
        return out

    def times(self, right: torch.Tensor) -> torch.Tensor:
        """Z @ right, right: (channels, l) -> (tokens, l)."""
        scaled = right * self.scale[:, None]
        out = torch.zeros(self.x.shape[0], right.shape[1], device=self.device)
        for cols in self.chunks():
            out += self.block(cols) @ scaled[cols]
        return out - self.mean @ scaled

    def transposed_times(self, left: torch.Tensor) -> torch.Tensor:
        """Z.T @ left, left: (tokens, l) -> (channels, l)."""
        totals = left.sum(0)
        out = torch.empty(self.x.shape[1], left.shape[1], device=self.device)
        for cols in self.chunks():
            raw = self.block(cols).T @ left
            out[cols] = (raw - torch.outer(self.mean[cols], totals)) * self.scale[cols, None]
        return out

    def gram_times(self, left: torch.Tensor) -> torch.Tensor:
        """Z @ Z.T @ left in one pass over X, left: (tokens, l) -> (tokens, l)."""
        totals = left.sum(0)
        out = torch.zeros_like(left)
        correction = torch.zeros(left.shape[1], device=self.device)
        for cols in self.chunks():
            block = self.block(cols)  # (tokens, chunk)
            inner = (block.T @ left - torch.outer(self.mean[cols], totals)) * self.scale[cols, None] ** 2
            out += block @ inner
            correction += self.mean[cols] @ inner
        return out - correction


def _onto(matrix: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The matrix on ``device`` when it fits in half the free memory there; else left where it is.

    Left on the CPU, each pass streams it to the device one float32 chunk at a time.
    """
    if device.type != "cuda" or matrix.device == device:
        return matrix
    free, _total = torch.cuda.mem_get_info(device)
    if matrix.numel() * matrix.element_size() > free // 2:
        return matrix
    return matrix.to(device)


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


def top_components(z: _Standardised, k: int, oversample: int, power_iters: int, seed: int):
    """Randomized SVD: (scores U S (tokens, w), V (channels, w), singular values (w,)), w = k + oversample.

    The first k columns are the top k principal components; the rest span the sketch's
    remaining directions (what ``fnweb.stability`` resamples within).
    """
    tokens, channels = z.x.shape
    width = min(k + oversample, tokens, channels)
    generator = torch.Generator().manual_seed(seed)
    omega = torch.randn(channels, width, generator=generator).to(z.device)  # drawn on the CPU: same on every device
    basis, _ = torch.linalg.qr(z.times(omega))
    for _ in range(power_iters):  # sharpen the spectrum: Q <- orth(Z Z^T Q)
        basis, _ = torch.linalg.qr(z.gram_times(basis))
    small = z.transposed_times(basis).T  # (width, channels) = Q^T Z
    u_small, singular, vt = torch.linalg.svd(small, full_matrices=False)
    u = basis @ u_small
    return (u * singular).cpu().numpy(), vt.T.contiguous().cpu().numpy(), singular.cpu().numpy()


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
) -> Decomposition:
    """ICA with ``k`` components of a ``(tokens, channels)`` activation matrix.

    ``mean`` and ``std`` are per-channel statistics if the caller has them (the capture
    computes them in float32 as it goes); otherwise one extra pass computes them.
    ``device`` runs the PCA passes there (a CUDA device, say); FastICA on the small
    score matrix always runs on the CPU.
    """
    stop = stop or StopFlag()
    tokens, channels = matrix.shape
    if k < 1:
        raise FnwebError(f"k must be at least 1 (got {k}).")
    if k > min(tokens, channels) - 1:
        raise FnwebError(
            f"k = {k} components need more data: only {tokens} tokens were captured "
            f"({channels} channels). Use more samples or longer prompts, or a smaller k."
        )
    report = Progress("decomposing", 0, power_iters + 3, "passes", "Decomposing (PCA)")
    progress(report)
    z = _Standardised.of(matrix, standardise, stop, mean, std, torch.device(device or "cpu"))
    sketch_scores, sketch_basis, singular = top_components(z, k, oversample, power_iters, seed)
    scores, basis = sketch_scores[:, :k], sketch_basis[:, :k]
    report.done = report.total - 1
    report.message = "Decomposing (ICA)"
    progress(report)
    ica = fit_ica(scores, k, seed, max_iter, tol)
    maps = basis @ ica.mixing  # (channels, k)
    signs = orientation(maps)
    maps = maps * signs
    # scores ~ sources @ mixing.T: a (tokens, k) solve, cheap next to the PCA passes
    sources = np.linalg.solve(ica.mixing, (scores - scores.mean(0)).T).T * signs
    variance = (maps**2).sum(0)  # sources have unit variance: this is each one's share of Z's variance
    order = np.argsort(-variance, kind="stable")  # strongest component first, deterministically
    report.done = report.total
    progress(report)
    return Decomposition(
        maps=maps[:, order].astype(np.float32),
        explained_variance=variance[order].astype(np.float32),
        n_tokens=tokens,
        converged=ica.converged,
        info={"ica_iterations": ica.iterations, "top_singular_values": singular[:k].round(4).tolist()},
        sketch_scores=sketch_scores,
        sketch_basis=sketch_basis,
        ica_settings={"max_iter": max_iter, "tol": tol},
        sources=sources[:, order].astype(np.float32),
    )


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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        ica.fit(scores.astype(np.float64) @ rotation)  # float64: eigh whitening in float32 loses weak sources
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    # scores @ R = S M'^T, so scores = S (R M')^T
    return IcaFit(rotation @ ica.mixing_, converged, int(ica.n_iter_))
