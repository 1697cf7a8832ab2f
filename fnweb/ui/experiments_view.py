"""What the Experiments tab shows of a run: status lines, figures, tables and reading, and the files to download.

An experiment run (``fnweb.evidence_run.Evidence``) has up to three parts: the experiment
(``ExperimentResult``: lesion bars, preservation curve, task accuracy, dose-response),
the template seeds (``SeedsResult``) and per-sample recurrence (``RecurrenceResult``).
``result_views`` draws an experiment result (partial or final; also one restored after
a reload), ``evidence_views`` adds the seeds table and the recurrence heatmap and table,
and the combined reading. The optional parts (accuracy, dose-response, seeds,
recurrence) are shown only when the run measured them. ``save_evidence`` writes every
part's JSON and CSV files into one folder for the downloads. The figures and tables
themselves come from the engine (``fnweb.experiment_plots``, ``fnweb.experiment_tables``,
``fnweb.seed_results``, ``fnweb.recurrence_results``); this module only places them.

It knows nothing about how anything was measured, nor about the form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import gradio as gr
import pandas as pd

from ..evidence_run import Evidence
from ..experiment_plots import dose_figure, lesion_figure, preservation_figure
from ..experiment_results import ExperimentResult
from ..experiments import STOPPED
from ..recurrence_results import recurrence_figure, save_recurrence
from ..seed_results import SeedsResult
from . import render

# The parts of the tab only some runs fill (hidden until a run measures them).
OPTIONAL = ("accuracy_plot", "dose_plot", "seeds_table", "recurrence_plot", "recurrence_table")
SEEDS_COLUMNS = {"component": "component", "seed": "seed", "seed_component": "its match", "map_correlation": "r",
                 "dce": "ΔCE", "random_dce_mean": "random ΔCE", "excess": "beyond random", "p": "p",
                 "fisher_p_holm": "Fisher p (Holm)", "survives_across_seeds": "survives"}
RECURRENCE_COLUMNS = {"source": "set", "component": "component", "samples": "samples", "share": "recurs in",
                      "random_share": "random twin recurs in", "mean_iou": "mean best IoU"}


def idle_html() -> str:
    return render.message_html("info", "Pick a template in the bar above and held-out prompts, then press "
                                       "Run experiment.")


def warnings_html(*parts) -> str:
    """Each part's warnings (an experiment, seeds or recurrence result; None: none), once each."""
    seen = dict.fromkeys(w for part in parts if part is not None for w in part.warnings)
    return "".join(render.message_html("info", f"Note: {w}") for w in seen)


def final_html(result: ExperimentResult, seconds: Optional[float] = None) -> str:
    """The status line of a finished (or stopped) experiment (``seconds``: the whole run's, when it did more)."""
    if result.partial:
        head = render.message_html("stopped", f"PARTIAL RESULT: {result.partial_note} "
                                              "The charts, tables and files cover only what was measured.")
    else:
        took = render.seconds(result.seconds if seconds is None else seconds)
        head = render.message_html("ok", f"Done in {took}: {result.prompts} held-out prompts, "
                                         f"{result.settings.get('draws')} random draws per condition.")
    return head + warnings_html(result)


def evidence_final_html(evidence: Evidence) -> str:
    """The status line of a finished run: the experiment's, then what the seeds and recurrence add."""
    parts = (evidence.seeds or evidence.experiment, evidence.recurrence)  # the seeds' time holds each experiment's
    text = final_html(evidence.experiment, sum(part.seconds for part in parts if part is not None))
    if evidence.seeds is not None:
        measured = len(evidence.seeds.experiments)
        text += render.message_html("ok", f"Template seeds measured: {measured} of {len(evidence.seeds.seeds)}.")
    if evidence.recurrence is not None:
        text += render.message_html("ok", f"Recurrence: {len(evidence.recurrence.samples)} samples decomposed.")
    return text + warnings_html(evidence.seeds, evidence.recurrence)


def _shown(value) -> dict:
    """A part's update: its value, shown only when there is one."""
    return gr.update(value=value, visible=value is not None)


def _partial_mark(text: str, result) -> str:
    if result is not None and result.partial and result.partial_note.startswith(STOPPED):
        return "**Partial result (stopped).** " + text
    return text


def result_views(result: ExperimentResult, labels: Optional[dict] = None) -> dict:
    """The reading, the figures and both tables of an experiment result; components named by label."""
    accuracy = lesion_figure(result, "acc") if result.baseline_acc is not None else None
    return {"reading": _partial_mark(result.reading(), result), "lesion": lesion_figure(result),
            "curve": preservation_figure(result), "lesion_table": render.lesion_frame(result, labels),
            "curve_table": render.curve_frame(result), "accuracy_plot": _shown(accuracy),
            "dose_plot": _shown(dose_figure(result) if result.dose is not None else None)}


def evidence_views(evidence: Evidence, labels: Optional[dict] = None) -> dict:
    """Everything a run has measured so far: the experiment's views, the seeds and the recurrence."""
    views = result_views(evidence.experiment, labels) if evidence.experiment is not None else {}
    running = next((p for p in (evidence.recurrence, evidence.seeds, evidence.experiment) if p is not None), None)
    views["reading"] = _partial_mark(evidence.reading(), running)
    views["seeds_table"] = _shown(seeds_frame(evidence.seeds) if evidence.seeds is not None else None)
    rec = evidence.recurrence
    views["recurrence_plot"] = _shown(recurrence_figure(rec) if rec is not None and rec.cells else None)
    views["recurrence_table"] = _shown(recurrence_frame(rec) if rec is not None else None)
    return views


def cleared() -> dict:
    """Every result part empty (a new run starts), the optional ones hidden."""
    return {"reading": "", "lesion": None, "curve": None, "lesion_table": render.lesion_frame(None),
            "curve_table": render.curve_frame(None), "downloads": None,
            **{name: gr.update(value=None, visible=False) for name in OPTIONAL}}


def _fmt(key: str, value) -> str:
    """A seeds-table cell: a change or a correlation with its sign, a p-value plain, yes or no."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if key.startswith(("p", "fisher")) else f"{value:+.4f}"
    return str(value)


def seeds_frame(seeds: SeedsResult) -> pd.DataFrame:
    """One line per first-seed component and seed: its match, its lesion against random, its p, Fisher over seeds."""
    rows = [[_fmt(key, line[key]) for key in SEEDS_COLUMNS] for line in seeds.table()]
    return pd.DataFrame(rows, columns=list(SEEDS_COLUMNS.values()))


def recurrence_frame(result) -> pd.DataFrame:
    """One line per prompt set and template component: how often it recurs, and how often its random twin does."""
    def share(value) -> str:
        return "—" if value is None else f"{100 * value:.0f} %"

    rows = [[cell.source, cell.component, cell.samples, share(cell.share), share(cell.random_share),
             f"{cell.mean_iou:.3f}"] for cell in result.cells]
    return pd.DataFrame(rows, columns=list(RECURRENCE_COLUMNS.values()))


def save_evidence(folder: Path, evidence: Evidence) -> list[str]:
    """Every part's JSON and CSV files in ``folder``, for the downloads."""
    paths = dict(evidence.experiment.save(folder))
    if evidence.seeds is not None:
        paths.update(evidence.seeds.save(folder))
    if evidence.recurrence is not None:
        paths.update(save_recurrence(evidence.recurrence, folder))
    return [str(path) for path in paths.values()]
