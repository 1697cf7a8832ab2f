"""How reproducible each ICA component is: PCA and ICA re-run on resampled tokens (ICASSO-style).

ICA finds a rotation within the top principal directions; a resample of the tokens can
tilt those directions and land the rotation in another optimum, or split and merge weak
sources. ``component_stability`` re-runs both steps ``runs`` times, each on a bootstrap
resample of the tokens and from its own random start: the PCA within the randomized
SVD's sketch (the top k + oversample directions it already found, so no pass over the
activations is needed), then FastICA. Each re-run's maps are matched one to one with
the template's (Hungarian assignment on |correlation|). Per component it reports:

- ``correlation``: the mean matched |correlation| over re-runs (1: found every time);
- ``mask_iou``: the mean IoU of the masks of the matched maps, thresholded by the
  template's rule from ``fnweb.thresholds`` (how much of the binary network itself
  comes back).

It does not re-capture: it measures stability over these activations' tokens, not over
other prompts; and directions outside the sketch cannot enter. It knows nothing about
models or templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from threadpoolctl import threadpool_limits

from .decompose import Decomposition, fit_ica, orient_maps
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .thresholds import DEFAULT_RULE, resolved_value, threshold_rule

DEFAULT_RUNS = 5
STABLE = 0.9  # matched |correlation| from which a component counts as stable


@dataclass
class Stability:
    correlation: list[float]  # per component (in the decomposition's order)
    mask_iou: list[float]
    runs: int

    def to_dict(self) -> dict:
        return {"runs": self.runs, "correlation": [round(c, 4) for c in self.correlation],
                "mask_iou": [round(c, 4) for c in self.mask_iou]}


def component_stability(
    result: Decomposition,
    threshold_kind: str = DEFAULT_RULE,
    threshold_value: Optional[float] = None,
    runs: int = DEFAULT_RUNS,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    stop: Optional[StopFlag] = None,
) -> Stability:
    """Re-run the ICA of ``result`` on ``runs`` bootstrap resamples; match, and average per component."""
    if result.sketch_scores is None or result.sketch_basis is None:
        raise ValueError("This decomposition kept no sketch to re-run on.")
    stop = stop or StopFlag()
    rule = threshold_rule(threshold_kind)
    value = rule.check(resolved_value(threshold_kind, threshold_value))
    reference = result.maps
    k = reference.shape[1]
    reference_masks = rule.apply(reference, value)
    correlation, iou = np.zeros((runs, k)), np.zeros((runs, k))
    report = Progress("stability", 0, runs, "re-runs", "Checking stability (ICA re-runs)")
    for run in range(runs):
        stop.check()
        progress(report)
        rng = np.random.default_rng([seed, run])
        scores, basis = _resampled_pca(result.sketch_scores, result.sketch_basis, k, rng)
        ica = fit_ica(scores, k, seed=seed + 1 + run, **result.ica_settings)
        maps = orient_maps(basis @ ica.mixing)
        matched, signs, order = match_maps(reference, maps)
        correlation[run] = matched
        masks = rule.apply(maps[:, order] * signs, value)
        iou[run] = _iou(reference_masks, masks)
        report.done = run + 1
    progress(report)
    return Stability(correlation.mean(0).tolist(), iou.mean(0).tolist(), runs)


def _resampled_pca(sketch_scores: np.ndarray, sketch_basis: np.ndarray, k: int, rng):
    """Top-k PCA of a bootstrap resample of the tokens, within the sketch: (scores, directions)."""
    rows = rng.integers(0, sketch_scores.shape[0], sketch_scores.shape[0])
    sample = sketch_scores[rows].astype(np.float64)
    sample -= sample.mean(0)
    with threadpool_limits(1):  # a (tokens, w) SVD is too thin to share; threads that wait cost more on a busy machine
        _, _, vt = np.linalg.svd(sample, full_matrices=False)
    within = vt[:k].T  # (w, k): the resample's top directions, in sketch coordinates
    return sample @ within, sketch_basis @ within


def match_maps(reference: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each reference map: the |correlation| of its match in ``maps``, the match's sign, its column."""
    from scipy.optimize import linear_sum_assignment

    k = reference.shape[1]
    corr = np.corrcoef(reference.T, maps.T)[:k, k:]
    rows, cols = linear_sum_assignment(-np.abs(corr))
    order = cols[np.argsort(rows)]
    chosen = corr[np.arange(k), order]
    return np.abs(chosen), np.where(chosen < 0, -1.0, 1.0), order


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    union = (a | b).sum(0)
    return np.where(union > 0, (a & b).sum(0) / np.maximum(union, 1), 1.0)
