"""A recurrence result for people and files: its CSV, its JSON files, the heatmap, and a sentence that reads it.

``fnweb.recurrence`` measures, per held-out sample, which template components its own
networks match (IoU above a bar), and gathers them into a template component x prompt
set table (``RecurrenceResult.cells``). Here that table becomes a CSV (one line per set
and component: samples, share recurring, mean best IoU, and the same for the random
twins), a JSON file (every field, with the per-sample matches), a plotly heatmap of the
shares, and a reading: which components recur above their random twins, and which recur
in (nearly) every sample, a pattern that in a chat model usually means the shared
prompt tokens (the chat template's system prompt) or a massive-activation channel rather
than the sample's own content. It knows nothing about models or how matches were found.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import plotly.graph_objects as go

from .io import write_atomic

CSV_COLUMNS = ["set", "component", "samples", "share", "mean_iou", "random_share", "random_mean_iou"]
EVERYWHERE = 0.9  # recurring in at least this share of every set's samples: shared by all texts, not content
ABOVE = 0.2  # a component recurs "above its twins" when its share beats theirs by this much in some set


def recurrence_csv(result) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for cell in result.cells:
        writer.writerow({"set": cell.source, "component": cell.component, "samples": cell.samples,
                         "share": cell.share, "mean_iou": cell.mean_iou,
                         "random_share": "" if cell.random_share is None else cell.random_share,
                         "random_mean_iou": "" if cell.random_mean_iou is None else cell.random_mean_iou})
    return out.getvalue()


def save_recurrence(result, folder: str | Path, stem: str = "recurrence") -> dict[str, Path]:
    """``{stem}.json`` (every field) and ``{stem}.csv`` (the table), written atomically."""
    folder = Path(folder)
    text = json.dumps(asdict(result), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    return {"recurrence": write_atomic(folder / f"{stem}.json", text),
            "recurrence_csv": write_atomic(folder / f"{stem}.csv", recurrence_csv(result))}


def recurrence_figure(result) -> go.Figure:
    """Heatmap: prompt sets x template components, the share of samples in which each recurs."""
    table = result.share_table()
    z = [[table[s].get(c) for c in result.components] for s in result.sets]
    twins = {(cell.source, cell.component): cell.random_share for cell in result.cells}
    text = [[f"{table[s][c]:.0%}<br>(random {twins[(s, c)]:.0%})" if c in table[s] and twins.get((s, c)) is not None
             else (f"{table[s][c]:.0%}" if c in table[s] else "") for c in result.components] for s in result.sets]
    fig = go.Figure(go.Heatmap(z=z, x=[f"c{c}" for c in result.components], y=result.sets, text=text,
                               texttemplate="%{text}", zmin=0, zmax=1, colorscale="Blues",
                               colorbar=dict(title="share of samples")))
    partial = " (partial)" if result.partial else ""
    fig.update_layout(title=f"Recurrence per sample: IoU > {result.iou_threshold:g} with per-sample ICA (k = "
                            f"{result.k}){partial}", xaxis_title="template component", yaxis_title="prompt set",
                      template="plotly_white")
    return fig


def recurrence_reading(result) -> str:
    """Which components recur above their random twins, and which recur in nearly every sample of every set."""
    if not result.cells:
        return "No sample was decomposed yet."
    by_component: dict[int, list] = {}
    for cell in result.cells:
        by_component.setdefault(cell.component, []).append(cell)
    samples = sum(c.samples for c in result.cells if c.component == result.components[0])
    everywhere = [c for c, cells in by_component.items() if all(x.share >= EVERYWHERE for x in cells)]
    above = [c for c, cells in by_component.items() if c not in everywhere and any(
        x.share - (x.random_share or 0.0) >= ABOVE for x in cells)]
    text = (f"Per-sample ICA (k = {result.k}) on {samples} samples of {len(result.sets)} prompt set"
            f"{'s' if len(result.sets) != 1 else ''}: a template component recurs in a sample when one of the "
            f"sample's networks overlaps it with IoU > {result.iou_threshold:g}.")
    if everywhere:
        text += (f" Recurring in {EVERYWHERE:.0%} or more of the samples of every set: component"
                 f"{'s' if len(everywhere) > 1 else ''} {', '.join(map(str, everywhere))}; what every text shares "
                 "(the chat template's tokens, a massive-activation channel) more than what it says.")
    if above:
        text += (f" Recurring above their random twins in some set: component{'s' if len(above) > 1 else ''} "
                 f"{', '.join(map(str, above))}.")
    else:
        text += " No other component recurs clearly above its random twins."
    return text + (f" PARTIAL RESULT: {result.partial_note}" if result.partial else "")
