"""An experiment's numbers as tables: one column per metric and statistic, for the app and the terminal.

``lesion_table`` and ``curve_table`` give (headers, rows) of strings for every metric
of ``LESION_METRICS`` / ``CURVE_METRICS`` the result measured (accuracy only when a
multiple-choice set was scored): the network's value, the random control's mean ± sd
and, for an effect size, their ratio, each formatted by its ``fnweb.metrics`` record.
A lesion row's tests follow: the 95 % interval of its change in cross-entropy, the
change beyond the random mean with its interval, the permutation p and the Holm-adjusted
p (a star where the component survives). ``table_text`` lays both out in fixed width
for a terminal. It knows nothing about
how the numbers were measured, or about the app.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .experiment_results import CURVE_METRICS, LESION_METRICS, ExperimentResult, row_name, survives
from .metrics import METRICS

MISSING = "—"


def measured(rows: Sequence, keys: Sequence[str]) -> list[str]:
    """The metrics of ``keys`` that some row has a value for."""
    return [key for key in keys if any(row.network.get(key) is not None for row in rows)]


def _metric_headers(keys: Sequence[str], ratios: bool) -> list[str]:
    headers = []
    for key in keys:
        metric = METRICS[key]
        headers += [metric.short, f"random {metric.short} (mean ± sd)"]
        headers += [f"{metric.short} ratio"] if ratios and metric.ratio else []
    return headers


def _metric_cells(row, keys: Sequence[str], ratios: bool) -> list[str]:
    cells = []
    for key in keys:
        metric, control = METRICS[key], row.random.get(key)
        cells.append(metric.format(row.network.get(key)))
        cells.append(MISSING if control is None else metric.format(control.mean, control.sd))
        cells += [_times(row.ratio.get(key))] if ratios and metric.ratio else []
    return cells


def _times(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.1f}x"


def _share(share: float) -> str:
    return f"{100 * share:.2f} %"


def _test_headers(rows: Sequence) -> list[str]:
    if not any(row.tests for row in rows):  # an older result, or nothing measured yet
        return []
    dce, excess, p, holm = (METRICS[key] for key in ("dce", "excess", "p", "p_holm"))
    return [f"{dce.short} 95 % interval", f"{excess.short} [95 %]", p.short, holm.short]


def _test_cells(row, result: ExperimentResult) -> list[str]:
    tests = row.tests
    dce, excess, p, holm = (METRICS[key] for key in ("dce", "excess", "p", "p_holm"))
    beyond = tests.get("excess")
    adjusted = tests.get("p_holm")
    mark = " ★" if row in result.rows and survives(row, result.level) else ""
    return [dce.format_interval(tests.get("dce")),
            MISSING if beyond is None else f"{excess.format(beyond.mean)} {excess.format_interval(beyond)}",
            p.format(tests["p"].mean if "p" in tests else None),
            (MISSING if adjusted is None else holm.format(adjusted.mean)) + mark]


def lesion_table(result: Optional[ExperimentResult]) -> tuple[list[str], list[list]]:
    """Headers and rows (the union last) of the lesions; the tests (★: survives Holm) where measured."""
    rows = result.lesion_rows if result is not None else []
    keys = measured(rows, LESION_METRICS)  # nothing measured yet: no metric columns
    tests = _test_headers(rows)
    headers = ["component", "neurons", "share", *_metric_headers(keys, True), *tests, "stability", "prompts"]
    cells = [[row_name(r), r.neurons, _share(r.share), *_metric_cells(r, keys, True),
              *(_test_cells(r, result) if tests else []),
              MISSING if r.stability is None else f"{r.stability:.2f}", r.prompts] for r in rows]
    return headers, cells


def curve_table(result: Optional[ExperimentResult]) -> tuple[list[str], list[list]]:
    """Headers and rows of the preservation curve."""
    points = result.curve if result is not None else []
    keys = measured(points, CURVE_METRICS)
    headers = ["top m kept", "components", "share kept", *_metric_headers(keys, False), "prompts"]
    cells = [[p.m, " ".join(map(str, p.ids)), _share(p.share_kept), *_metric_cells(p, keys, False), p.prompts]
             for p in points]
    return headers, cells


def _fixed_width(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    return [" ".join(text.rjust(width) for text, width in zip(line, widths)) for line in [headers, *cells]]


def table_text(result: ExperimentResult) -> str:
    """The lesion rows and the curve in fixed width, for a terminal."""
    lines = [f"Baseline cross-entropy {result.baseline_ce:.4f} nats/token on {result.prompts} prompts "
             f"({result.tokens:,} tokens)" + (" [PARTIAL]" if result.partial else ""), ""]
    lines += _fixed_width(*lesion_table(result))
    if result.curve:
        lines += ["", *_fixed_width(*curve_table(result))]
    return "\n".join(lines)
