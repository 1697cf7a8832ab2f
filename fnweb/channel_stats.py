"""Per-channel capture statistics a template keeps: mean and spread, each channel's scale, and its massive channels.

A build's capture computes every channel's mean and standard deviation over the
template's tokens (``fnweb.capture``); ``ChannelStats`` keeps them per captured layer, as
``(layers, width)`` float32 arrays, for what needs them later: a **mean ablation** puts
the means in place of the channels it removes, and a **magnitude-matched control**
draws channels of the same scale. A channel's **scale** is its root mean square,
``sqrt(mean^2 + std^2)``: the size of what zeroing it removes. A **massive-activation
channel** is one whose scale is over ``MASSIVE_RATIO`` times its layer's median (in
SmolLM2-135M, channel 507 of the MLP output at layers 2, 11 and 28, 100-500x): a few
such channels can dominate a lesion's effect, or a random control's.

In a template file the statistics are the ``channel_stats`` key of the ``fnweb`` block
(``to_dict``/``from_dict``): each array little-endian float16 in base64 (float32 when a
value is beyond float16's range), with its dtype and shape, and the massive channels as
``[layer, channel]`` pairs, so a reader without numpy sees them. A model of more than
``MAX_STATS_CHANNELS`` channels keeps none (its file would pass the template size
bound). Older templates have no block: whatever needs the statistics says a rebuild
adds them. It knows nothing about masks, models or files.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .errors import FnwebError

STATS_KEY = "channel_stats"  # the key in a template's fnweb block
VERSION = 1
ARRAYS = ("mean", "std")  # what is kept per channel
DTYPES = {"float16": "<f2", "float32": "<f4"}  # stored dtype -> numpy (little-endian)
MASSIVE_RATIO = 100.0  # a channel's scale over this many times its layer's median: massive
MAX_STATS_CHANNELS = 2**22  # 4.2 M channels: two float16 arrays in base64 are ~22 MB, under the file bound
REBUILD = "Rebuild the template with this fnweb (Templates tab or fnbuildtemplates) to add them."


@dataclass(eq=False)
class ChannelStats:
    """Per captured layer and channel: mean and standard deviation over the template's tokens."""

    layers: list[int]  # the captured layers, sorted: row i of each array is layers[i]
    mean: np.ndarray  # (layers, width) float32
    std: np.ndarray  # (layers, width) float32
    tokens: int = 0  # tokens they were measured on
    massive: list[tuple[int, int]] = field(default_factory=list)  # (layer, channel): scale over MASSIVE_RATIO x median
    massive_ratio: float = MASSIVE_RATIO

    @classmethod
    def from_moments(cls, layers: Sequence[int], mean, std, tokens: int) -> Optional["ChannelStats"]:
        """From a capture's flat (layers * width) moments; None when too large to keep (or not finite)."""
        layers = [int(x) for x in layers]
        mean = np.asarray(mean, dtype=np.float32).reshape(len(layers), -1)
        std = np.asarray(std, dtype=np.float32).reshape(mean.shape)
        if mean.size > MAX_STATS_CHANNELS or not (np.isfinite(mean).all() and np.isfinite(std).all()):
            return None  # too large to keep, or a capture that overflowed float32
        stored = DTYPES[_dtype_for((mean, std))]  # rounded as the file keeps them: a reloaded template is the same
        stats = cls(layers, mean.astype(stored).astype(np.float32), std.astype(stored).astype(np.float32), int(tokens))
        stats.massive = stats.find_massive(MASSIVE_RATIO)
        return stats

    def __eq__(self, other) -> bool:
        return isinstance(other, ChannelStats) and (self.layers, self.tokens, self.massive, self.massive_ratio) == (
            other.layers, other.tokens, other.massive, other.massive_ratio) and all(
            np.array_equal(getattr(self, name), getattr(other, name)) for name in ARRAYS)

    @property
    def width(self) -> int:
        return int(self.mean.shape[1])

    def row(self, layer: int) -> int:
        """The arrays' row of a captured layer."""
        try:
            return self.layers.index(int(layer))
        except ValueError:
            raise FnwebError(f"Layer {layer} was not captured: the template's statistics cover layers "
                             f"{self.layers[0]}..{self.layers[-1]}.") from None

    def scale(self) -> np.ndarray:
        """(layers, width): each channel's root mean square, the size of what zeroing it removes."""
        return np.sqrt(self.mean.astype(np.float64) ** 2 + self.std.astype(np.float64) ** 2)

    def ratio(self) -> np.ndarray:
        """(layers, width): each channel's scale over its layer's median scale."""
        scale = self.scale()
        return scale / np.maximum(np.median(scale, axis=1, keepdims=True), 1e-12)

    def find_massive(self, ratio: float = MASSIVE_RATIO) -> list[tuple[int, int]]:
        """(layer, channel) of every channel whose scale is over ``ratio`` times its layer's median."""
        rows, channels = np.nonzero(self.ratio() > ratio)
        return [(self.layers[r], int(c)) for r, c in zip(rows, channels)]

    def massive_by_layer(self) -> dict[int, np.ndarray]:
        """The massive channels per layer (sorted arrays; only layers that have some)."""
        by_layer: dict[int, list[int]] = {}
        for layer, channel in self.massive:
            by_layer.setdefault(layer, []).append(channel)
        return {layer: np.array(sorted(ch), dtype=np.int64) for layer, ch in sorted(by_layer.items())}

    def massive_in(self, per_layer: dict[int, Sequence[int]]) -> list[tuple[int, int]]:
        """The massive channels among ``per_layer`` (layer -> channel indices)."""
        return [(layer, ch) for layer, ch in self.massive if ch in set(per_layer.get(layer, ()))]

    def describe(self, channels: Sequence[tuple[int, int]]) -> str:
        """'layer 11 #507 (489x)' for each channel, joined."""
        ratio = self.ratio()
        return ", ".join(f"layer {layer} #{ch} ({ratio[self.row(layer), ch]:.0f}x)" for layer, ch in channels)

    # ---- files ----

    def to_dict(self) -> dict:
        arrays = {name: getattr(self, name) for name in ARRAYS}
        dtype = _dtype_for(arrays.values())
        return {"version": VERSION, "dtype": dtype, "shape": list(self.mean.shape), "layers": list(self.layers),
                "tokens": self.tokens, "massive_ratio": self.massive_ratio,
                "massive": [[layer, ch] for layer, ch in self.massive],
                **{name: base64.b64encode(a.astype(DTYPES[dtype]).tobytes()).decode("ascii")
                   for name, a in arrays.items()}}

    @classmethod
    def from_dict(cls, data, layers: Sequence[int], width: int) -> "ChannelStats":
        """The statistics of a template with these captured layers and width; a clear error when they do not fit."""
        def bad(why: str) -> FnwebError:
            return FnwebError(f"The template's capture statistics are malformed ({why}). {REBUILD}")

        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise bad(f"version {data.get('version') if isinstance(data, dict) else '?'}; expected {VERSION}")
        shape = (len(layers), int(width))
        if list(data.get("shape", [])) != list(shape) or [int(x) for x in data.get("layers", [])] != list(layers):
            raise bad(f"shape {data.get('shape')} over layers {data.get('layers')}; the template has {list(shape)}")
        if data.get("dtype") not in DTYPES:
            raise bad(f"dtype {data.get('dtype')!r}; expected one of {', '.join(DTYPES)}")
        arrays = {name: _decode(data.get(name), DTYPES[data["dtype"]], shape, name, bad) for name in ARRAYS}
        try:
            massive = [(int(layer), int(ch)) for layer, ch in data.get("massive", [])]
            ratio = float(data.get("massive_ratio", MASSIVE_RATIO))
        except (TypeError, ValueError) as exc:
            raise bad(f"massive channels: {exc}") from exc
        if any(layer not in layers or not 0 <= ch < width for layer, ch in massive):
            raise bad("a massive channel outside the captured layers or the width")
        return cls(list(layers), arrays["mean"], arrays["std"], int(data.get("tokens", 0)), massive, ratio)


def _dtype_for(arrays) -> str:
    """float16 when every value fits it, else float32."""
    fits = all(np.abs(a).max(initial=0.0) <= np.finfo(np.float16).max for a in arrays)
    return "float16" if fits else "float32"


def _decode(text, dtype: str, shape: tuple[int, int], name: str, bad) -> np.ndarray:
    """One base64 array of ``shape``, as float32; every value finite."""
    if not isinstance(text, str) or len(text) != 4 * -(-shape[0] * shape[1] * np.dtype(dtype).itemsize // 3):
        raise bad(f"'{name}' is not {shape[0]} x {shape[1]} values")
    try:
        array = np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype).astype(np.float32).reshape(shape)
    except (binascii.Error, ValueError) as exc:
        raise bad(f"'{name}': {exc}") from exc
    if not np.isfinite(array).all():
        raise bad(f"'{name}' has values that are not finite")
    return array


def require(stats: Optional[ChannelStats], what: str) -> ChannelStats:
    """The statistics, or an error saying that ``what`` needs them and how to get them."""
    if stats is None:
        raise FnwebError(f"{what} needs the template's capture statistics (per-channel mean and spread), which this "
                         "template does not have: it was made by an older fnweb or the original package (or for a "
                         f"model too large to keep them). {REBUILD}")
    return stats
