"""The Experiments tab: does a network matter? Lesions and the preservation curve against random controls.

The handler reads the form into an ``ExperimentConfig`` (held-out sets: built-in
sets ticked and/or uploaded files), runs ``fnweb.experiments.experiment_stream`` as a
streamed, stoppable job on the visitor's template, and redraws as snapshots arrive:
the progress bar (phase, passes done of all, time left), the warnings, the two
figures of ``fnweb.experiment_plots``, the tables and the plain reading. At the end,
or after Stop (then marked partial), the result is written to the session's folder
as JSON and two CSV tables for download. The work runs in ``experiment_on_device``,
the function ZeroGPU places on a GPU.

It knows nothing about how the effects are measured (see fnweb.experiments).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gradio as gr
import pandas as pd

from ..cards import component_labels
from ..errors import FnwebError, Stopped
from ..experiment_plots import lesion_figure, preservation_figure
from ..experiment_results import ExperimentResult
from ..experiment_tables import curve_table, lesion_table
from ..experiments import STOPPED, ExperimentConfig, experiment_stream
from ..masks import DEFAULT_PRESERVE_SCOPE
from ..models import ModelRequest, load_model
from ..progress import Progress
from ..prompts import PromptSource, builtin_sets
from ..templates import Template
from . import render, uploads
from .compare_tab import scope_dropdown
from .feedback import page_error
from .forms import whole
from .jobs import Job, gpu, stream
from .state import Session, stamp, unique_name

TITLE = "Running the experiment"
DATA_TYPES = [".json", ".jsonl", ".csv", ".parquet"]


@dataclass
class ExperimentsTab:
    builtin: gr.CheckboxGroup
    files: gr.File
    samples: gr.Number
    draws: gr.Number
    seed: gr.Number
    max_tokens: gr.Number
    leave_out: gr.Checkbox
    run: gr.Button
    stop: gr.Button
    status: gr.HTML
    reading: gr.Markdown
    lesion: gr.Plot
    curve: gr.Plot
    lesion_table: gr.Dataframe
    curve_table: gr.Dataframe
    downloads: gr.File
    scope: Optional[gr.Dropdown] = None  # which layers the preservation curve edits

    @property
    def settings(self) -> list:
        """The form's inputs, in the order ``run_experiment_form`` takes them after the session and template."""
        return [self.builtin, self.files, self.samples, self.draws, self.seed, self.max_tokens, self.leave_out,
                *([self.scope] if self.scope is not None else [])]

    @property
    def outputs(self) -> list:
        return [self.status, self.reading, self.lesion, self.curve, self.lesion_table, self.curve_table,
                self.downloads]


@dataclass
class Snapshot:
    """What the job sends the page: the latest progress event and the latest result (either may be None)."""

    progress: Optional[Progress]
    result: Optional[ExperimentResult]


def build_experiments_tab(ctx) -> ExperimentsTab:
    gr.Markdown(
        "Does a network matter? On held-out prompts, each component of the selected template is **lesioned** "
        "(its neurons zeroed) beside random neurons of the same per-layer sizes, then the top components are "
        "**kept** alone (the preservation curve) beside random keeps of the same sizes.",
        elem_classes="fn-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            builtin = gr.CheckboxGroup(builtin_sets(), value=["factual", "creative"], label="Held-out prompt sets",
                                       info="Prompts the template was built from are left out (and counted)",
                                       elem_id="fn-exp-sets")
            files = gr.File(file_count="multiple", file_types=DATA_TYPES, type="filepath",
                            label="Or your own prompts (.json, .jsonl, .csv, .parquet)", height=110,
                            elem_id="fn-exp-files")
        with gr.Column(scale=2, min_width=280):
            with gr.Row():
                samples = gr.Number(12, label="Prompts per set (0 = all)", precision=0, elem_id="fn-exp-samples")
                draws = gr.Number(5, label="Random draws (1-50)", precision=0, elem_id="fn-exp-draws")
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, elem_id="fn-exp-seed")
                max_tokens = gr.Number(128, label="Max tokens per prompt", precision=0, elem_id="fn-exp-tokens")
            leave_out = gr.Checkbox(True, label="Leave out the template's own prompts")
            scope = scope_dropdown("fn-exp-scope")
            with gr.Row():
                run = gr.Button("Run experiment", variant="primary", elem_id="fn-exp-run")
                stop = gr.Button("Stop", variant="stop", elem_id="fn-exp-stop")
    status = gr.HTML(_idle_html(), elem_id="fn-exp-status")
    reading = gr.Markdown("", elem_id="fn-exp-reading")
    with gr.Row(equal_height=False):
        lesion = gr.Plot(label="Lesion effect per component", elem_id="fn-exp-lesion")
        curve = gr.Plot(label="Preservation curve", elem_id="fn-exp-curve")
    lesions = gr.Dataframe(_lesion_frame(None), label="Lesions (nats per token)", interactive=False, wrap=True,
                           elem_id="fn-exp-table")
    curve_points = gr.Dataframe(_curve_frame(None), label="Preservation curve (nats per token)", interactive=False,
                                wrap=True, elem_id="fn-exp-curve-table")
    downloads = gr.File(label="Download (JSON and CSV)", file_count="multiple", interactive=False,
                        elem_id="fn-exp-files-out")
    tab = ExperimentsTab(builtin, files, samples, draws, seed, max_tokens, leave_out, run, stop, status, reading,
                         lesion, curve, lesions, curve_points, downloads, scope)
    run.click(run_experiment_form, [ctx.session, ctx.template, *tab.settings], tab.outputs, api_name="experiment",
              concurrency_id=ctx.model_queue, concurrency_limit=ctx.model_jobs)
    stop.click(stop_experiment, ctx.session, None, api_name="stop_experiment", concurrency_limit=None)
    return tab


# ---- reading the form ---------------------------------------------------------------


def config_from_form(builtin, files, samples, draws, seed, max_tokens, leave_out,
                     preserve_scope=DEFAULT_PRESERVE_SCOPE) -> ExperimentConfig:
    sets = list(builtin or [])
    unknown = [s for s in sets if s not in builtin_sets()]
    if unknown:
        raise FnwebError(f"Unknown built-in prompt set(s): {', '.join(map(str, unknown))}; "
                         f"choose from {', '.join(builtin_sets())}.")
    sources = [PromptSource(f"builtin:{s}") for s in sets] + [PromptSource(str(p)) for p in _paths(files)]
    config = ExperimentConfig(
        sources=sources, samples_per_dataset=whole(samples, "Prompts per set"),
        draws=whole(draws, "Random draws"), seed=whole(seed, "Seed"),
        max_tokens=whole(max_tokens, "Max tokens per prompt"), exclude_template_prompts=bool(leave_out),
        preserve_scope=preserve_scope or DEFAULT_PRESERVE_SCOPE,
    )
    config.validate()
    return config


def _paths(files) -> list[Path]:
    if not files:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    return uploads.checked([Path(f if isinstance(f, str) else getattr(f, "name", None) or f["path"]) for f in items])


# ---- the job ----------------------------------------------------------------------------


def _duration(request, template, config: ExperimentConfig, job) -> int:
    prompts = max(1, config.samples_per_dataset or 50) * len(config.sources)
    return int(min(600, 30 + prompts * len(template.components) * (config.draws + 1) * 0.2))


@gpu(duration=_duration)
def experiment_on_device(request: ModelRequest, template: Template, config: ExperimentConfig, job: Job):
    """The experiment job: yields ``jobs.Update``s of Snapshots, the last ``done`` with the final result."""
    lm = load_model(request)

    def work(emit, stop):
        latest = Snapshot(None, None)

        def progress(event: Progress) -> None:
            latest.progress = copy.copy(event)  # the engine updates one event in place
            emit(Snapshot(latest.progress, latest.result))

        for result in experiment_stream(lm, template, config, progress, stop):
            latest.result = result
            emit(Snapshot(latest.progress, result))
        return latest.result

    yield from stream(work, lm.model, job)


def run_experiment_form(session: Session, template_name: Optional[str], builtin, files, samples, draws, seed,
                        max_tokens, leave_out, preserve_scope=DEFAULT_PRESERVE_SCOPE):
    """Run handler: streams progress and the filling charts, then the tables, reading and files."""
    skip = gr.skip()
    job = None
    shown = None  # the result last drawn (charts are redrawn only when it changes)
    try:
        config = config_from_form(builtin, files, samples, draws, seed, max_tokens, leave_out, preserve_scope)
        session.require_model()
        entry = session.get(template_name)
        template, labels = entry.template, component_labels(entry.template)
        job = session.job = Job()
        yield render.progress_html(None, 0.0, TITLE), "", None, None, _lesion_frame(None), _curve_frame(None), None
        final = None
        for update in experiment_on_device(session.model, template, config, job):
            if update.kind == "waiting":
                yield render.progress_html(None, update.elapsed, TITLE, waiting=True), *[skip] * 6
                continue
            if update.kind == "done":
                final = update.value
                break
            snap = update.value
            status = _running_html(snap, update.elapsed)
            if snap is not None and snap.result is not None and snap.result is not shown:
                shown = snap.result
                yield status, *_views(shown, labels), skip
            else:
                yield status, *[skip] * 6
        if final is None:
            raise FnwebError("The experiment measured nothing before it ended: press Run to try again.")
        entry.experiment = final  # the component cards show its lesion effects
        yield _final_html(final), *_views(final, labels), _save(session, final)
    except Stopped:  # stopped while waiting for the model: nothing was measured
        yield render.message_html("stopped", "Stopped before anything was measured. Press Run to start again."), \
            *[skip] * 6
    except Exception as exc:
        error = page_error(exc)
        yield render.message_html("error", error.message), *[skip] * 6
        raise error from exc
    finally:
        session.finish(job)


def stop_experiment(session: Session) -> None:
    if session.job is not None:
        session.job.request_stop()


def _save(session: Session, result: ExperimentResult) -> list[str]:
    folder = session.folder / unique_name(f"experiment-{stamp().replace(':', '')}")  # two in one second: two folders
    paths = result.save(folder)
    return [str(paths["json"]), str(paths["components"]), str(paths["curve"])]


# ---- what the page shows -----------------------------------------------------------------


def _idle_html() -> str:
    return render.message_html("info", "Pick a template in the bar above and held-out prompts, then press "
                                       "Run experiment.")


def _warnings_html(result: Optional[ExperimentResult]) -> str:
    if result is None or not result.warnings:
        return ""
    return "".join(render.message_html("info", f"Note: {w}") for w in result.warnings)


def _running_html(snap: Optional[Snapshot], elapsed: float) -> str:
    bar = render.progress_html(snap.progress if snap else None, elapsed, TITLE)
    return bar + _warnings_html(snap.result if snap else None)


def _final_html(result: ExperimentResult) -> str:
    if result.partial:
        head = render.message_html("stopped", f"PARTIAL RESULT: {result.partial_note} "
                                              "The charts, tables and files cover only what was measured.")
    else:
        head = render.message_html("ok", f"Done in {render.seconds(result.seconds)}: {result.prompts} held-out "
                                         f"prompts, {result.settings.get('draws')} random draws per condition.")
    return head + _warnings_html(result)


def _views(result: ExperimentResult, labels: Optional[dict] = None) -> tuple:
    """The reading, both figures and both tables of a result (partial or final); components named by label."""
    reading = result.reading()
    if result.partial and result.partial_note.startswith(STOPPED):
        reading = "**Partial result (stopped).** " + reading
    return (reading, lesion_figure(result), preservation_figure(result), _lesion_frame(result, labels),
            _curve_frame(result))


def _named(component, labels: Optional[dict]) -> str:
    """A component id with its card's label, when the template has cards."""
    label = (labels or {}).get(int(component)) if str(component).isdigit() else None
    return f"{component} · {label}" if label else str(component)


def _lesion_frame(result: Optional[ExperimentResult], labels: Optional[dict] = None) -> pd.DataFrame:
    headers, rows = lesion_table(result)
    return pd.DataFrame([[_named(row[0], labels), *row[1:]] for row in rows], columns=headers)


def _curve_frame(result: Optional[ExperimentResult]) -> pd.DataFrame:
    headers, rows = curve_table(result)
    return pd.DataFrame(rows, columns=headers)
