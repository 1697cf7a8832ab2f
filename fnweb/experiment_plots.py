"""Plotly figures of an experiment result: lesion bars, the preservation curve and the dose-response.

- ``lesion_figure``: per component (and the union), one metric of a lesion (the change
  in cross-entropy by default; any of ``LESION_METRICS`` the result measured, e.g. task
  accuracy with chance drawn as a line) beside random neurons drawn by the result's
  control, named in the legend (mean over draws, error bars one standard deviation),
  with the ratio over each pair for an effect size; the network's error bars are its
  95 % bootstrap interval over prompts, and a star marks the components that survive
  the Holm-corrected permutation test.
- ``preservation_figure``: one metric (cross-entropy by default; any of
  ``CURVE_METRICS`` measured) against the share of neurons kept, for the top-m
  components and for random keeps of the same sizes, with the unchanged model as a
  dashed line where the metric has a baseline level.
- ``dose_figure``: the dose-response (when the experiment measured one): the change in
  cross-entropy (or KL) with one component multiplied by each α, beside its random twins
  of each control (mean over draws, error bars one standard deviation). Variant rows
  (without massive channels, another control) are bars of the lesion figure, named so.

Axis titles, number formats and which metrics there are come from ``fnweb.metrics``.

A partial result says so in the title. This module knows nothing about the web app
or models; it reads only an ``ExperimentResult``.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from .controls import CONTROLS, DEFAULT_CONTROL
from .errors import FnwebError
from .evidence_results import DOSE_METRICS
from .experiment_results import CURVE_METRICS, LESION_METRICS, ExperimentResult, survives, units_of
from .experiment_tables import measured
from .io import write_atomic
from .metrics import METRICS

NETWORK, RANDOM, BASE = "#d62728", "#7f7f7f", "#1f77b4"
_FONT = dict(family="Inter, system-ui, sans-serif", size=13)


def _check(metric: str, rows, keys) -> None:
    choices = measured(rows, keys) if rows else list(keys)  # nothing measured yet: an empty figure of any
    if metric not in choices:
        raise FnwebError(f"Unknown metric '{metric}'; choose one of: {', '.join(choices)}.")


def _layout(fig: go.Figure, title: str, result: ExperimentResult, x_title: str, y_title: str) -> go.Figure:
    suffix = " (partial)" if result.partial else ""
    fig.update_layout(
        title=dict(text=title + suffix, x=0.01, xanchor="left", font=dict(size=16)),
        font=_FONT, height=440, margin=dict(l=70, r=20, t=60, b=60), template="plotly_white",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        xaxis_title=x_title, yaxis_title=y_title,
    )
    return fig


def _pct(share: float) -> str:
    return f"{100 * share:.1f} %" if share >= 0.001 else f"{100 * share:.2f} %"


def _network_errors(rows, metric: str) -> dict:
    """Asymmetric error bars of the network's values: their 95 % bootstrap intervals, where the rows have them."""
    stats = [r.tests.get(metric) for r in rows]
    if not any(s is not None and s.low is not None for s in stats):
        return dict(visible=False)
    value = [r.network.get(metric) for r in rows]
    return dict(type="data", visible=True, symmetric=False, color="#7a1315",
                array=[None if s is None or s.high is None or v is None else s.high - v for s, v in zip(stats, value)],
                arrayminus=[None if s is None or s.low is None or v is None else v - s.low
                            for s, v in zip(stats, value)])


def _control_title(result: ExperimentResult) -> str:
    """How the main rows' random twins were drawn, in words (``fnweb.controls``)."""
    control = result.rows[0].control if result.rows else result.settings.get("control", DEFAULT_CONTROL)
    return CONTROLS[control].title if control in CONTROLS else str(control)


def _marks(result: ExperimentResult, metric: str) -> list[str]:
    """Each bar's label: the ratio to random, and a star where the component survives Holm's correction."""
    marks = []
    for row in result.lesion_rows:
        times = row.ratio.get(metric)
        text = "" if times is None else f"{times:.1f}x"
        marks.append((text + " ★").strip() if row in result.rows and survives(row, result.level) else text)
    return marks


def lesion_figure(result: ExperimentResult, metric: str = "dce") -> go.Figure:
    """Bars: each component lesioned against its random control (error bars: interval over prompts; spread over draws).

    A star marks the components whose Holm-corrected permutation test survives; for
    accuracy, a dotted line marks chance.
    """
    rows = result.lesion_rows
    _check(metric, rows, LESION_METRICS)
    labels = [f"{'all' if r.component == 'union' else 'c' + r.component}<br>{r.variant + '<br>' if r.variant else ''}"
              f"{_pct(r.share)}" for r in rows]
    draws = result.settings.get("draws", "")
    fig = go.Figure([
        go.Bar(name=f"network lesioned (★ survives Holm at {result.level:g})", x=labels,
               y=[r.network.get(metric) for r in rows], marker_color=NETWORK, error_y=_network_errors(rows, metric),
               text=_marks(result, metric), textposition="outside",
               hovertemplate="%{x}: %{y:.4f}<extra>network lesioned</extra>"),
        go.Bar(name=f"random {units_of(result)}, {_control_title(result)} ({draws} draws)", x=labels,
               y=[r.random[metric].mean for r in rows], marker_color=RANDOM,
               error_y=dict(type="data", array=[r.random[metric].sd for r in rows], visible=True),
               hovertemplate="%{x}: %{y:.4f}<extra>random control</extra>"),
    ])
    fig.update_layout(barmode="group")
    chance = (result.task or {}).get("chance") if metric == "acc" else None
    if rows and chance is not None:
        fig.add_hline(y=chance, line=dict(color=BASE, dash="dot"), annotation_text=f"chance ({chance:.2f})",
                      annotation_position="bottom right")
    return _layout(fig, "Lesion effect per component against random controls", result,
                   f"component (share of {units_of(result)})", METRICS[metric].axis_title())


def preservation_figure(result: ExperimentResult, metric: str = "ce") -> go.Figure:
    """Lines: keeping the top-m components against keeping random neurons of the same sizes."""
    points = result.curve
    _check(metric, points, CURVE_METRICS)
    x = [100 * p.share_kept for p in points]
    hover = [f"top {p.m}: components {', '.join(map(str, p.ids))}" for p in points]
    fig = go.Figure([
        go.Scatter(name="top-m networks kept", x=x, y=[p.network.get(metric) for p in points],
                   mode="lines+markers+text", text=[str(p.m) for p in points], textposition="top center",
                   marker=dict(color=NETWORK, size=8), line=dict(color=NETWORK), hovertext=hover,
                   hovertemplate="%{hovertext}<br>%{x:.2f} % kept: %{y:.4f}<extra></extra>"),
        go.Scatter(name=f"random {units_of(result)} kept, same sizes", x=x,
                   y=[p.random[metric].mean for p in points],
                   error_y=dict(type="data", visible=True, array=[p.random[metric].sd for p in points]),
                   mode="lines+markers", marker=dict(color=RANDOM, size=7), line=dict(color=RANDOM, dash="dot"),
                   hovertemplate="%{x:.2f} % kept: %{y:.4f}<extra>random</extra>"),
    ])
    level = result.baseline(metric)
    if points and level is not None:
        fig.add_hline(y=level, line=dict(color=BASE, dash="dash"),
                      annotation_text="unchanged model", annotation_position="bottom right")
    return _layout(fig, "Preservation curve: keep the top-m networks, zero the rest", result,
                   f"{units_of(result)} kept (% of all)", METRICS[metric].axis_title())


def dose_figure(result: ExperimentResult, metric: str = "dce") -> go.Figure:
    """Lines: the dose component multiplied by each α, against its random twins of each control (spread over draws)."""
    dose = result.dose
    if metric not in DOSE_METRICS:
        raise FnwebError(f"Unknown metric '{metric}' for a dose-response; choose one of: {', '.join(DOSE_METRICS)}.")
    points = dose.points if dose else []
    x = [p.alpha for p in points]
    traces = [go.Scatter(name=f"component {dose.component if dose else ''} × α", x=x,
                         y=[p.network.get(metric) for p in points], mode="lines+markers",
                         marker=dict(color=NETWORK, size=8), line=dict(color=NETWORK),
                         hovertemplate="α %{x:g}: %{y:.4f}<extra>network</extra>")]
    for control, dash in zip(dose.controls if dose else [], ("dot", "dash", "dashdot")):
        traces.append(go.Scatter(
            name=f"random twins × α, {CONTROLS[control].title} ({dose.draws} draws)", x=x,
            y=[p.random[control][metric].mean for p in points], mode="lines+markers",
            error_y=dict(type="data", visible=True, array=[p.random[control][metric].sd for p in points]),
            marker=dict(color=RANDOM, size=7), line=dict(color=RANDOM, dash=dash),
            hovertemplate=f"α %{{x:g}}: %{{y:.4f}}<extra>{control}</extra>"))
    fig = go.Figure(traces)
    level = result.baseline(metric)
    if points and level is not None and metric != "ce":
        fig.add_hline(y=level, line=dict(color=BASE, dash="dash"), annotation_text="unchanged model",
                      annotation_position="bottom right")
    if points:
        fig.add_vline(x=1.0, line=dict(color="#cbd5e1", dash="dot"), annotation_text="α = 1: unchanged")
    share = f" ({_pct(dose.share)} of {units_of(result)})" if dose else ""
    return _layout(fig, f"Dose-response: component {dose.component if dose else ''}{share} scaled by α", result,
                   "α (0: removed, 1: unchanged, above 1: amplified)", METRICS[metric].axis_title())


def write_html(fig: go.Figure, folder: str | Path, name: str, stem: str = "") -> dict[str, Path]:
    """One figure as HTML beside the shared plotly.min.js (works offline), written atomically."""
    from plotly.offline import get_plotlyjs

    folder = Path(folder)
    script = folder / "plotly.min.js"
    paths = {"plotly.js": script if script.exists() else write_atomic(script, get_plotlyjs())}
    html = fig.to_html(include_plotlyjs="directory", full_html=True)
    paths[name] = write_atomic(folder / f"{stem + '_' if stem else ''}{name}.html", html)
    return paths


def write_figures(result: ExperimentResult, folder: str | Path, stem: str = "experiment") -> dict[str, Path]:
    """Every figure the result has, as HTML beside one shared plotly.min.js (works offline), written atomically."""
    figures = [("lesion", lesion_figure(result)), ("preservation", preservation_figure(result))]
    if result.baseline_acc is not None:
        figures.append(("accuracy", lesion_figure(result, "acc")))
    if result.dose is not None:
        figures.append(("dose", dose_figure(result)))
    paths = {}
    for name, fig in figures:
        paths.update(write_html(fig, folder, name, stem))
    return paths
