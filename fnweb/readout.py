"""Reading a component's signal from its own neurons: fitted at a build, estimated on demand, applied to any text.

A template keeps only each component's binary mask, not its ICA map, so a signal for
new tokens is read from the raw activations of the mask's channels: ``signal = a @
weights + offset``. At a build, the weights are the component's map on those channels
divided by each channel's standard deviation (the capture's own statistics), scaled
and offset by a least-squares fit to the ICA source, whose correlation with the
source is kept as ``fidelity`` (the unfitted guesses, ``read_signals``, take one pass
over the rows; each process of a sharded build makes it over its own). On demand (a
template without stored cards), there is no map: the weights are the leading principal direction of the mask's
standardised channels over a prompt set, standardised by that set's own per-channel
mean and standard deviation, and the signal is scaled to mean 0, standard deviation
1 over that set. Both are signed so the signal's heavier tail is positive.

Weights are stored as 8-bit integers with one step per component (they are read,
never trained). ``capture_columns`` runs the model over token-id sequences and keeps
only the asked channels, in sequence order. It knows nothing about cards or tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .capture import capture, row_starts
from .errors import FnwebError
from .progress import StopFlag
from .templates import Template

_LEVELS = 127  # int8 quantisation of the weights
_ROWS = 16_384  # activation rows converted to float32 at a time
_CHUNK_BYTES = 256 * 2**20  # captured activations held at once when capturing for a readout


@dataclass
class Readout:
    """signal = activations of the mask's channels (in the template's order) @ weights + offset."""

    weights: np.ndarray  # (channels,) float32
    offset: float
    fidelity: Optional[float] = None  # correlation with the ICA source at the build (None: estimated on demand)

    def apply(self, columns: np.ndarray) -> np.ndarray:
        if columns.shape[1] != self.weights.shape[0]:
            raise FnwebError(f"This readout reads {self.weights.shape[0]} channels, not {columns.shape[1]}: "
                             "it belongs to another template.")
        return columns @ self.weights + self.offset

    def to_dict(self) -> dict:
        step = float(np.abs(self.weights).max()) / _LEVELS or 1.0
        return {"q": np.round(self.weights / step).astype(int).tolist(), "step": float(f"{step:.6g}"),
                "offset": round(float(self.offset), 5),
                "fidelity": None if self.fidelity is None else round(float(self.fidelity), 4)}

    @classmethod
    def from_dict(cls, data: dict) -> "Readout":
        weights = np.asarray(data["q"], dtype=np.float32) * np.float32(data["step"])
        return cls(weights, float(data["offset"]), data.get("fidelity"))


def mask_channels(template: Template, component: int) -> dict[int, np.ndarray]:
    """The component's channels per layer, in the template's order (layers ascending, channels ascending)."""
    return {layer: np.asarray(ch, dtype=np.int64) for layer, ch in sorted(template.components[component].items())}


def flat_columns(template: Template, channels: dict[int, np.ndarray]) -> np.ndarray:
    """Column indices of ``channels`` in a capture of all the template's layers (layer-major blocks)."""
    block = {layer: i for i, layer in enumerate(template.layers)}
    parts = [block[layer] * template.width + ch for layer, ch in channels.items()]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _columns(matrix: torch.Tensor, flat: np.ndarray, rows: slice) -> np.ndarray:
    return matrix[rows].index_select(1, torch.as_tensor(flat, dtype=torch.long)).float().numpy()


def map_reads(flats: list[np.ndarray], maps: np.ndarray, mean: np.ndarray, std: np.ndarray) -> list[tuple]:
    """Per component (map column): (its weights on the raw activations of its ``flat`` columns, their offset)."""
    reads = []
    for c, flat in enumerate(flats):
        read = np.where(std[flat] > 1e-8, maps[flat, c] / np.maximum(std[flat], 1e-8), 0.0).astype(np.float32)
        reads.append((read, float(mean[flat] @ read)))
    return reads


def read_signals(matrix: torch.Tensor, flats: list[np.ndarray], reads: list[tuple],
                 release=None, stop: Optional[StopFlag] = None) -> np.ndarray:
    """(rows, components): each component's readout guess ``X[:, flat] @ read - offset``, in one pass over the rows."""
    stop = stop or StopFlag()
    out = np.empty((matrix.shape[0], len(flats)), dtype=np.float64)
    step = max(1, min(_ROWS, _CHUNK_BYTES // max(1, 8 * matrix.shape[1])))
    for start in range(0, matrix.shape[0], step):
        stop.check()
        rows = slice(start, min(start + step, matrix.shape[0]))
        for c, (flat, (read, offset)) in enumerate(zip(flats, reads)):
            out[rows, c] = _columns(matrix, flat, rows) @ read - offset
        if release is not None:
            release(rows.start, rows.stop)
    return out


def fit_readout(read: np.ndarray, offset: float, guess: np.ndarray, target: np.ndarray) -> Readout:
    """The readout of ``target`` (one ICA source) from its ``guess`` (``read`` applied, minus ``offset``)."""
    spread = guess.std()
    if spread < 1e-12:
        return Readout(np.zeros_like(read), 0.0, 0.0)
    fidelity = float(np.corrcoef(guess, target)[0, 1])
    slope = float(np.cov(guess, target, bias=True)[0, 1] / spread**2)
    return Readout((read * slope).astype(np.float32), float(target.mean() - slope * (guess.mean() + offset)),
                   round(fidelity, 4))


def estimate_readout(columns: np.ndarray) -> tuple[Readout, np.ndarray]:
    """On demand: (the readout, each channel's movement per unit of signal) from raw (tokens, channels)."""
    mean, std = columns.mean(0), columns.std(0)
    live = std > 1e-8
    z = np.where(live, (columns - mean) / np.where(live, std, 1.0), 0.0)
    direction = _leading_direction(z)
    guess = z @ direction
    centred = guess - guess.mean()
    spread = centred.std() or 1.0
    sign = -1.0 if (centred**3).mean() < 0 else 1.0
    read = np.where(live, sign * direction / np.where(live, std, 1.0), 0.0) / spread
    offset = -float(mean @ read)
    movement = sign * direction * std * spread  # channel change when the signal rises by one
    return Readout(read.astype(np.float32), offset, None), movement.astype(np.float32)


def _leading_direction(z: np.ndarray, iterations: int = 60) -> np.ndarray:
    """The unit direction of largest variance of ``z`` (tokens, channels): exact when small, else power iteration."""
    if z.shape[1] <= 2048:
        return np.linalg.eigh(z.T.astype(np.float64) @ z)[1][:, -1]
    vector = np.random.default_rng(0).standard_normal(z.shape[1])
    for _ in range(iterations):
        vector = z.T @ (z @ vector)
        vector /= np.linalg.norm(vector) or 1.0
    return vector


def capture_columns(lm, sequences: Sequence[Sequence[int]], site: str, layers: Sequence[int], width: int,
                    flat: np.ndarray, batch_size: int = 8, stop: Optional[StopFlag] = None) -> np.ndarray:
    """Activations of ``flat`` columns (of a capture of ``layers``) for every token, in sequence order (float16)."""
    stop = stop or StopFlag()
    lengths = [len(s) for s in sequences]
    out = np.empty((sum(lengths), len(flat)), dtype=np.float16)  # half the memory; read in float32 per component
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    per_token = max(1, len(layers) * width * 2)
    group, budget = [], max(1, _CHUNK_BYTES // per_token)
    for index in range(len(sequences) + 1):
        if index < len(sequences) and (not group or sum(lengths[i] for i in group) + lengths[index] <= budget):
            group.append(index)
            continue
        if group:
            acts = capture(lm.model, [sequences[i] for i in group], site=site, layers=layers, batch_size=batch_size,
                           pad_id=lm.tokenizer.pad_token_id or 0, stop=stop)
            picked = acts.matrix.index_select(1, torch.as_tensor(flat, dtype=torch.long)).numpy()
            for i, start in zip(group, row_starts([lengths[i] for i in group])):
                out[offsets[i] : offsets[i + 1]] = picked[start : start + lengths[i]]
        group = [index] if index < len(sequences) else []
    return out
