"""The original package's method, re-implemented from its description, as the benchmark's baseline.

As described in ../shared/reference/original-system.md (``compute_global_networks``):
a float32 activation matrix X, every column z-scored into a second copy, PCA to
min(1000, ...) components (sklearn), FastICA to k components on the PCA scores
(``random_state=0, max_iter=200, tol=1e-3``, default unit-variance whitening), channel
maps ``A = pca.components_.T @ ica.mixing_``, and a percentile threshold of ``|A|``.
Capture runs at batch size 1 with a hook per layer, one float32 row per token.

Only the benchmark uses this module; fnweb never does.
"""

from __future__ import annotations

import numpy as np
import torch


def reference_decompose(x: np.ndarray, k: int = 10, seed: int = 0) -> np.ndarray:
    """Channel maps (channels, k) by the original's method; ``x`` is float32 (tokens, channels)."""
    from sklearn.decomposition import PCA, FastICA

    z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)  # the z-scored second copy
    n_pca = min(1000, z.shape[0] - 1, z.shape[1])
    pca = PCA(n_components=n_pca, random_state=seed)
    scores = pca.fit_transform(z)  # a third copy, (tokens, 1000)
    ica = FastICA(n_components=k, random_state=seed, max_iter=200, tol=1e-3)
    ica.fit(scores)
    return (pca.components_.T @ ica.mixing_).astype(np.float32)


def reference_masks(maps: np.ndarray, percentile: float = 98.0) -> np.ndarray:
    magnitude = np.abs(maps)
    return magnitude >= np.percentile(magnitude, percentile, axis=0, keepdims=True)


def reference_capture(model, sequences, layout, site: str) -> np.ndarray:
    """Batch-size-1 capture into float32 rows, as the original did."""
    rows: list[np.ndarray] = []
    current: dict[int, torch.Tensor] = {}
    handles = []
    for layer in range(layout.n_layers):
        module = layout.module(model, layer, site)
        if site == "neurons":
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, layer=layer: current.__setitem__(layer, args[0][0].float().cpu())))
        else:
            handles.append(module.register_forward_hook(
                lambda _m, _a, out, layer=layer: current.__setitem__(layer, out[0].float().cpu())))
    try:
        with torch.no_grad():
            for sequence in sequences:
                model(input_ids=torch.tensor([sequence], device=model.device))  # the whole model, LM head included
                rows.append(torch.cat([current[layer] for layer in range(layout.n_layers)], dim=1).numpy())
    finally:
        for handle in handles:
            handle.remove()
    return np.concatenate(rows, axis=0)
