"""Capture MLP activations of real (non-padding) tokens, batched, into one compact matrix.

``capture`` runs the model body (never the LM head) over token-id sequences sorted by
length, with hooks at one site per layer, and writes each real token's activations
into a preallocated ``(tokens, layers * width)`` matrix in float16 (or bfloat16): in
memory, or a ``fnweb.rowstore`` store (a mapped file) when given. How rows reach the
host matrix is ``fnweb.staging`` (straight from the hooks on a CPU; through a device
buffer and one overlapped copy per batch on CUDA). Each column's mean and standard
deviation come from the unrounded values on the way (on the rows' device, with no
sync), so the decomposition can standardise without another pass over the matrix. A
model split over devices works: each hook reads its layer's device.

It knows nothing about datasets or ICA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .archs import DEFAULT_SITE, Layout, hook_site, layout_of, unwrap
from .errors import FnwebError
from .progress import Progress, ProgressFn, StopFlag, no_progress
from .rowstore import RowStore
from .staging import DirectRows, StagedRows, rows_for

CPU = torch.device("cpu")  # the default device: one shared instance, not a call in each signature
STORAGE_DTYPES = {"auto": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_FLOAT16_MAX = 65504.0


@dataclass
class Activations:
    """Captured activations: row = token, columns = layer-major blocks of ``width`` channels."""

    matrix: torch.Tensor  # (tokens, len(layers) * width), on the CPU
    layers: list[int]
    width: int
    site: str
    mean: Optional[torch.Tensor] = None  # (channels,) float32, from the unrounded activations
    std: Optional[torch.Tensor] = None  # (channels,) float32

    @property
    def n_tokens(self) -> int:
        return self.matrix.shape[0]

    def layer_block(self, index: int) -> torch.Tensor:
        """Columns of the ``index``-th captured layer, (tokens, width)."""
        return self.matrix[:, index * self.width : (index + 1) * self.width]


class _Moments:
    """Per-column mean and variance, merged batch by batch (Chan et al.) in float64.

    Each batch arrives as sums of ``x - shift`` and of its squares, with ``shift`` the
    running mean so far (the first row, for the first batch): shifted sums keep float32
    accurate when a channel's mean dwarfs its spread, and cost a tenth of ``var_mean``'s
    column reduction on CPUs, which dominated the capture's overhead.
    """

    def __init__(self, channels: int, device: torch.device = CPU):
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(channels, dtype=torch.float64, device=device)

    def shift(self) -> Optional[torch.Tensor]:
        """The float32 shift for the next batch's sums; None before the first batch."""
        return self.mean.float() if self.count else None

    def add(self, n: int, shift: torch.Tensor, sums: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
        """Merge a batch of ``n`` rows given its shifted sums; return a bound of its |values| (a 0-d tensor)."""
        shift, sums, squares = shift.double(), sums.double(), squares.double()
        offset = sums / n
        batch_mean = shift + offset
        batch_var = (squares / n - offset**2).clamp_(min=0.0)
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * (n / total)
        self.m2 += batch_var * n + delta**2 * (self.count * n / total)
        self.count = total
        # |x| <= sqrt(sum of x^2) = sqrt(n * (var + mean^2)) for every entry of a column
        return (n * (batch_var + batch_mean**2)).max().sqrt()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        variance = self.m2 / max(self.count, 1)
        return self.mean.float().cpu(), variance.sqrt().float().cpu()


class _LastLayerDone(Exception):
    """Raised by the last hook to skip the rest of the forward pass."""


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def row_starts(lengths: Sequence[int]) -> list[int]:
    """The matrix row of each sequence's first token: ``capture`` stores sequences in its batch order."""
    starts, row = [0] * len(lengths), 0
    for index in (i for batch in _batches(lengths, 1) for i in batch):  # batches are slices of one order
        starts[index], row = row, row + lengths[index]
    return starts


def _pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = _pad_cpu(sequences, pad_id)
    return _to(ids, device), _to(mask, device)


def _pad_cpu(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def _to(tensor: torch.Tensor, device) -> torch.Tensor:
    """To ``device``; to CUDA from pinned memory, without waiting for the work queued there."""
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def input_device(model: torch.nn.Module) -> torch.device:
    """Where the model reads its input ids: its embedding's device (its execution device when offloaded)."""
    embedding = unwrap(model).get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)  # accelerate's big-model dispatch
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return embedding.weight.device


class _Positions:
    """The batch's real-token positions, moved once to each device a layer runs on."""

    def __init__(self, mask: torch.Tensor):
        self.cpu = mask.reshape(-1).nonzero().squeeze(1)
        self.moved: dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device) -> torch.Tensor:
        if device.type == "cpu":
            return self.cpu
        if device not in self.moved:
            self.moved[device] = _to(self.cpu, device)
        return self.moved[device]


def _finish_batch(state: dict, sink, moments: _Moments) -> None:
    """Merge the batch's per-layer sums; clamp overflowed float16 values (rare; the staged rows clamp themselves)."""
    at = moments.mean.device
    shift = torch.cat([shift.to(at) for shift, _, _ in state["stats"]])
    sums = torch.cat([sums.to(at) for _, sums, _ in state["stats"]])
    squares = torch.cat([squares.to(at) for _, _, squares in state["stats"]])
    rows = state["rows"]
    bound = moments.add(rows.shape[0], shift, sums, squares)
    if not sink.staged and rows.dtype == torch.float16 and float(bound) > _FLOAT16_MAX:
        rows.nan_to_num_(posinf=_FLOAT16_MAX, neginf=-_FLOAT16_MAX)  # keep huge ("massive") activations finite


def capture(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    site: str = DEFAULT_SITE,
    layers: Optional[Sequence[int]] = None,
    batch_size: int = 8,
    pad_id: int = 0,
    storage: str = "auto",
    progress: ProgressFn = no_progress,
    stop: Optional[StopFlag] = None,
    store: Optional[RowStore] = None,
    staged: Optional[bool] = None,
) -> Activations:
    """Activations at ``site`` for every real token of ``sequences`` (token-id lists).

    ``store``: where the rows go (``fnweb.rowstore``; default: a new matrix in memory).
    ``staged``: rows cross from the device through a staging buffer (default: on CUDA).
    """
    stop = stop or StopFlag()
    layout, layers, width = _checked(model, sequences, site, layers, storage)
    total, channels = sum(len(s) for s in sequences), len(layers) * width
    buffer = store.matrix if store is not None else torch.empty((total, channels), dtype=STORAGE_DTYPES[storage])
    if tuple(buffer.shape) != (total, channels) or buffer.dtype != STORAGE_DTYPES[storage]:
        raise ValueError(f"The row store holds {tuple(buffer.shape)} {buffer.dtype}, not ({total}, {channels}).")
    device = input_device(model)
    release = store.release if store is not None else (lambda start, stop: None)
    longest = max(len(s) for s in sequences) * batch_size
    sink = (StagedRows(buffer, len(layers), width, device, min(longest, total), release)
            if rows_for(device, staged) else DirectRows(buffer, len(layers), width, release))
    moments = _Moments(channels, sink.device)
    state: dict = {"stats": [None] * len(layers)}
    handles = [_hook(model, layout, layer, col, width, site, state, layer == layers[-1])
               for col, layer in enumerate(layers)]
    body = unwrap(model).base_model  # the decoder without its LM head
    report = Progress("capturing", 0, total, "tokens", "Capturing activations")
    progress(report)
    try:
        with torch.inference_mode():
            for batch in _batches([len(s) for s in sequences], batch_size):
                stop.check()
                _run_batch(body, [list(sequences[i]) for i in batch], pad_id, device, state, sink, moments,
                           (len(layers), width), int(report.done))
                report.done += state["rows"].shape[0]
                progress(report)
            sink.finish()
    finally:
        for handle in handles:
            handle.remove()
    mean, std = moments.result()
    return Activations(matrix=buffer, layers=layers, width=width, site=site, mean=mean, std=std)


def _checked(model, sequences, site: str, layers, storage: str) -> tuple[Layout, list[int], int]:
    if not sequences or any(len(s) == 0 for s in sequences):
        raise FnwebError("Nothing to capture: every sample needs at least one token.")
    if storage not in STORAGE_DTYPES:
        raise FnwebError(f"Unknown activation dtype '{storage}'; choose auto, float16, bfloat16 or float32.")
    layout = layout_of(model)
    width = layout.width(site)
    layers = sorted(set(range(layout.n_layers) if layers is None else layers))
    if not layers or layers[0] < 0 or layers[-1] >= layout.n_layers:
        raise FnwebError(f"Layers must lie in 0..{layout.n_layers - 1} (got {layers}).")
    return layout, layers, width


def _run_batch(body, batch: list[list[int]], pad_id: int, device, state: dict, sink, moments: _Moments,
               shape: tuple[int, int], done: int) -> None:
    """One forward pass whose hooks write the batch's real-token rows at row ``done`` on."""
    ids, mask = _pad_cpu(batch, pad_id)
    state["positions"] = _Positions(mask)
    state["rows"] = sink.begin(done, int(mask.sum()))  # (tokens, layers, width)
    running = moments.shift()
    state["shifts"] = None if running is None else running.view(*shape)
    try:
        body(input_ids=_to(ids, device), attention_mask=_to(mask, device), use_cache=False)
    except _LastLayerDone:
        pass
    _finish_batch(state, sink, moments)
    sink.end()


def _hook(model, layout: Layout, layer: int, col: int, width: int, site: str, state: dict, last: bool):
    """A hook that stores the real tokens' activations of one layer and their shifted sums."""
    module = layout.module(model, layer, site)

    def keep(values: torch.Tensor) -> None:
        flat = values.reshape(-1, width)  # OPT's is 2-D already
        real = flat.index_select(0, state["positions"].on(flat.device))  # (tokens, width)
        state["rows"][:, col].copy_(real)  # converts to the storage dtype as it copies (across devices too)
        shift = real[0].float().clone() if state["shifts"] is None else state["shifts"][col].to(real.device)
        # In place when the model runs in float32 (real is a fresh copy): no new allocation.
        centred = real.sub_(shift) if real.dtype == torch.float32 else real.float().sub_(shift)
        state["stats"][col] = (shift, centred.sum(0), centred.square_().sum(0))
        if last:
            raise _LastLayerDone()

    return hook_site(module, site, keep)
