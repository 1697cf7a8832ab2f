"""Plotly figures of a template: where its components live, how much they cover, how they overlap.

- ``membership_heatmap``: layers x neurons, neurons grouped into at most ``max_bins``
  bins per layer so that the figure stays light for wide models (a 14k-neuron layer
  is still 256 cells); a tall template or one of many components gets fewer bins, so
  that the cells drawn (``MAX_CELLS``) and counted (``MAX_COUNTED``) stay bounded
  whatever a template claims. One component shows how many of each bin's neurons belong to
  it; all components colour each cell by the component with most neurons there, and
  the hover lists every component present.
- ``coverage_bars``: per layer, the share of its neurons in each component (stacked)
  and in their union (a line: components overlap, so the stack can exceed it).
- ``overlap_matrix``: the Jaccard index of every pair of components over all their
  (layer, neuron) units.

Figures keep Plotly's mode bar, whose camera button saves a PNG. This module knows
nothing about the web app or models; it reads only the template.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from .errors import FnwebError
from .templates import Template

MAX_BINS = 256
MAX_CELLS = 2**16  # cells in a heatmap (256 bins x 256 layers): the figure stays a few MB
MAX_COUNTED = 2**22  # component x layer x bin counts (16 MB of int32)
HOVER_TOP = 5  # components named in a cell's hover; the rest are counted
# Distinct, saturated categorical colours (D3's ten, then Dark24's strongest): every one stands out on white, on a
# projector too; past 24 components they repeat (the hover still names the component).
PALETTE = list(qualitative.D3) + [c for c in qualitative.Dark24 if c not in qualitative.D3][:14]
# One component: a cell with any member neuron starts at this share of the component's colour (mixed with white),
# so that a bin with a single member is still plainly coloured; a full bin is the colour itself.
SINGLE_FLOOR = 0.35
_FONT = dict(family="Inter, system-ui, sans-serif", size=13)


def colour(component: int) -> str:
    return PALETTE[component % len(PALETTE)]


def _tint(hex_colour: str, share: float) -> str:
    """``hex_colour`` mixed with white: ``share`` of the colour (1: the colour itself)."""
    rgb = [int(hex_colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)]
    return "#" + "".join(f"{round(255 - share * (255 - v)):02x}" for v in rgb)


def _bins(width: int, max_bins: int) -> tuple[int, int]:
    """(neurons per bin, number of bins) for a layer of ``width`` neurons."""
    size = max(1, math.ceil(width / max(1, max_bins)))
    return size, math.ceil(width / size)


def membership_counts(template: Template, components: Sequence[int], max_bins: int = MAX_BINS) -> np.ndarray:
    """Member neurons per (component, layer, bin): shape (len(components), len(layers), bins)."""
    size, n_bins = _bins(template.width, max_bins)
    row = {layer: i for i, layer in enumerate(template.layers)}
    counts = np.zeros((len(components), len(template.layers), n_bins), dtype=np.int32)
    for c_index, c in enumerate(components):
        for layer, channels in template.components[c].items():
            if channels:
                np.add.at(counts[c_index, row[layer]], np.asarray(channels) // size, 1)
    return counts


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=16)),
        font=_FONT, height=height, margin=dict(l=60, r=20, t=50, b=50),
        plot_bgcolor="white", paper_bgcolor="white",
    )
    return fig


def _bin_edges(template: Template, max_bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    size, n_bins = _bins(template.width, max_bins)
    starts = np.arange(n_bins) * size
    ends = np.minimum(starts + size, template.width) - 1
    return starts, ends, size


def membership_heatmap(template: Template, component: Optional[int] = None, max_bins: int = MAX_BINS) -> go.Figure:
    """Layer x neuron-bin heatmap of one component (``component``) or of all (None)."""
    if not template.components:
        raise FnwebError("This template has no components to draw.")
    ids = template.component_ids if component is None else template.check_components([component])
    max_bins = max(1, min(max_bins, MAX_CELLS // max(1, len(template.layers)),
                          MAX_COUNTED // max(1, len(template.layers) * len(ids))))
    counts = membership_counts(template, ids, max_bins)  # (C, L, B)
    starts, ends, size = _bin_edges(template, max_bins)
    centres = (starts + ends) / 2.0
    layers = template.layers
    ranges = np.array([[f"{s}" if s == e else f"{s}-{e}" for s, e in zip(starts, ends)]] * len(layers))
    per_bin = f"bins of {size} neurons" if size > 1 else "one neuron per cell"
    if component is not None:
        z = counts[0].astype(float)
        z[z == 0] = np.nan  # empty bins stay white
        fig = go.Figure(go.Heatmap(
            z=z, x=centres, y=layers, zmin=0, zmax=max(1, int(counts.max())),  # the fullest bin is the full colour
            colorscale=[[0, _tint(colour(component), SINGLE_FLOOR)], [1, colour(component)]],
            customdata=ranges,
            hovertemplate=(f"layer %{{y}}<br>neurons %{{customdata}}<br>%{{z:.0f}} in component {component}"
                           "<extra></extra>"),
            colorbar=dict(title=dict(text="neurons", side="right"), thickness=12),
        ))
        title = f"Component {component}: {int(counts.sum()):,} neurons ({per_bin})"
    else:
        present = counts > 0
        dominant = np.where(present.any(0), counts.argmax(0), -1)  # (L, B): component index with most members
        z = np.where(dominant >= 0, dominant, np.nan).astype(float)
        hover = _all_components_hover(counts, ids, present)
        n = len(ids)
        scale = []  # a stepped scale: one flat colour band per component index
        for i, c in enumerate(ids):
            lo, hi = i / n, (i + 1) / n
            scale += [[lo, colour(c)], [hi, colour(c)]]
        fig = go.Figure(go.Heatmap(
            z=z, x=centres, y=layers, zmin=-0.5, zmax=n - 0.5, colorscale=scale,
            customdata=np.dstack([ranges, hover]),
            hovertemplate="layer %{y}<br>neurons %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
            colorbar=dict(title=dict(text="component", side="right"), thickness=12,
                          tickvals=list(range(n)) if n <= 24 else None,
                          ticktext=[str(c) for c in ids] if n <= 24 else None),
        ))
        title = f"All {n} components: colour = component with most neurons in the cell ({per_bin})"
    fig.update_xaxes(title="neuron", range=[-0.5, template.width - 0.5], showgrid=False, zeroline=False)
    fig.update_yaxes(title="layer", showgrid=False, zeroline=False, autorange=True)
    return _layout(fig, title, height=max(360, min(720, 40 + 16 * len(layers))))


def _all_components_hover(counts: np.ndarray, ids: Sequence[int], present: np.ndarray) -> np.ndarray:
    """Per cell: 'component 3: 2, component 7: 1' (largest first, at most HOVER_TOP, then how many more)."""
    _, n_layers, n_bins = counts.shape
    text = np.full((n_layers, n_bins), "no component", dtype=object)
    rows, cols = np.nonzero(present.any(0))
    cells = np.ascontiguousarray(counts[:, rows, cols].T)  # (cells with a member, C)
    order = np.argsort(-cells, axis=1, kind="stable")[:, :HOVER_TOP]
    members = (cells > 0).sum(1)
    for j, (layer, b) in enumerate(zip(rows, cols)):
        shown = [f"component {ids[i]}: {cells[j, i]}" for i in order[j] if cells[j, i] > 0]
        more = members[j] - len(shown)
        text[layer, b] = "<br>".join(shown + ([f"and {more} more"] if more > 0 else []))
    return text


def coverage_bars(template: Template, components: Optional[Sequence[int]] = None) -> go.Figure:
    """Per layer: share of its neurons in each component (stacked bars) and in their union (line)."""
    ids = template.component_ids if components is None else template.check_components(components)
    layers = template.layers
    fig = go.Figure()
    for c in ids:
        share = [100.0 * len(template.components[c].get(layer, [])) / template.width for layer in layers]
        fig.add_bar(x=layers, y=share, name=f"component {c}", marker_color=colour(c),
                    hovertemplate=f"component {c}<br>layer %{{x}}: %{{y:.2f}} % of neurons<extra></extra>")
    union = template.neurons(ids) if ids else {}
    fig.add_scatter(
        x=layers, y=[100.0 * len(union.get(layer, [])) / template.width for layer in layers],
        name="union", mode="lines+markers", line=dict(color="#111827", width=2),
        hovertemplate="union<br>layer %{x}: %{y:.2f} % of neurons<extra></extra>",
    )
    fig.update_layout(barmode="stack", legend=dict(orientation="v", x=1.01, y=1))
    step = 1 if len(layers) <= 16 else 2 if len(layers) <= 40 else 5
    fig.update_xaxes(title="layer", dtick=step, range=[min(layers, default=0) - 0.6, max(layers, default=0) + 0.6])
    fig.update_yaxes(title="% of the layer's neurons", gridcolor="#eef0f4")
    return _layout(fig, "Coverage per layer", height=380)


def jaccard(template: Template, components: Optional[Sequence[int]] = None) -> np.ndarray:
    """Jaccard index of every pair of components over their (layer, neuron) units."""
    ids = template.component_ids if components is None else template.check_components(components)
    sets = [
        np.concatenate([np.asarray(ch, dtype=np.int64) + layer * template.width
                        for layer, ch in template.components[c].items()] or [np.empty(0, np.int64)])
        for c in ids
    ]
    out = np.eye(len(ids))
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            inter = len(np.intersect1d(sets[i], sets[j], assume_unique=True))
            union = len(sets[i]) + len(sets[j]) - inter
            out[i, j] = out[j, i] = inter / union if union else 0.0
    return out


def overlap_matrix(template: Template, components: Optional[Sequence[int]] = None) -> go.Figure:
    """Heatmap of the components' pairwise Jaccard overlap (values written in when few).

    The diagonal (always 1) is left blank so that the colours spread over the pairs.
    """
    ids = template.component_ids if components is None else template.check_components(components)
    matrix = jaccard(template, ids)
    np.fill_diagonal(matrix, np.nan)
    labels = [str(c) for c in ids]
    show_text = len(ids) <= 16
    top = float(np.nanmax(matrix)) if len(ids) > 1 else 0.0
    fig = go.Figure(go.Heatmap(
        z=matrix, x=labels, y=labels, zmin=0, zmax=max(0.05, top), colorscale="Blues",
        text=np.where(np.isnan(matrix), "", np.char.mod("%.2f", np.nan_to_num(matrix))) if show_text else None,
        texttemplate="%{text}" if show_text else None,
        hovertemplate="components %{y} and %{x}<br>Jaccard %{z:.3f}<extra></extra>",
        colorbar=dict(title=dict(text="Jaccard", side="right"), thickness=12),
    ))
    fig.update_xaxes(title="component", type="category")
    fig.update_yaxes(title="component", type="category", autorange="reversed", scaleanchor="x")
    return _layout(fig, "Overlap between components (Jaccard)", height=420)
