"""Component stability: planted sources come back on every resample, noise components do not."""

import numpy as np
import pytest
from tiny import planted

from fnweb.decompose import decompose, fit_ica, orient_maps
from fnweb.errors import Stopped
from fnweb.progress import StopFlag
from fnweb.stability import _resampled_pca, component_stability


@pytest.fixture(scope="module")
def overcomplete():
    """Four planted sources decomposed into eight components: four real, four fitted to noise."""
    matrix, truth = planted(tokens=3000, channels=400, k=4, seed=0)
    return decompose(matrix, k=8, seed=0, standardise=False), truth


def test_planted_components_are_stable_and_noise_components_are_not(overcomplete):
    result, truth = overcomplete
    stability = component_stability(result, runs=5, seed=0)
    real = np.abs(np.corrcoef(result.maps.T, truth.T)[:8, 8:]).max(1) > 0.95  # which found a planted source
    assert real.sum() == 4
    correlation, iou = np.array(stability.correlation), np.array(stability.mask_iou)
    assert (correlation[real] > 0.95).all() and (iou[real] > 0.9).all()
    assert (correlation[~real] < 0.7).all() and (iou[~real] < 0.3).all()
    assert stability.to_dict()["runs"] == 5


def test_the_same_seed_gives_the_same_figures(overcomplete):
    result, _ = overcomplete
    assert component_stability(result, runs=3, seed=1) == component_stability(result, runs=3, seed=1)


def test_stop_is_honoured(overcomplete):
    stop = StopFlag()
    stop.set()
    with pytest.raises(Stopped):
        component_stability(overcomplete[0], runs=3, stop=stop)


def test_ica_on_exactly_uncorrelated_scores_keeps_every_component(overcomplete):
    # A resample's PCA scores have an exactly diagonal covariance. sklearn's whitening
    # flips eigenvectors by np.sign of their first entry, which is 0 for a unit vector,
    # and so wiped all but one: every component came out the same. fit_ica rotates first.
    result, truth = overcomplete
    matrix, _ = planted(tokens=3000, channels=400, k=4, seed=0)
    four = decompose(matrix, k=4, seed=0, standardise=False)
    scores, basis = _resampled_pca(four.sketch_scores, four.sketch_basis, 4, np.random.default_rng([0, 3]))
    maps = orient_maps(basis @ fit_ica(scores, 4, seed=4).mixing)
    assert np.linalg.matrix_rank(maps, tol=1e-3 * np.abs(maps).max()) == 4
    assert len(set(np.abs(np.corrcoef(maps.T, truth.T)[:4, 4:]).argmax(0))) >= 3  # distinct sources, not one
