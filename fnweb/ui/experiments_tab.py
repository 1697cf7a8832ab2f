"""The Experiments tab: does a network matter? Lesions and the preservation curve against random controls.

The handler reads the form's record (``config_from_form`` owns the field names) into an
``ExperimentConfig`` (held-out sets: built-in sets ticked and/or uploaded files), runs
``fnweb.experiments.experiment_stream`` through the app's job runner
(``fnweb.ui.runner``) on the visitor's template, and redraws as snapshots arrive: the
progress bar (waiting and its place, or the phase, passes done of all, time left), the warnings, the two
figures of ``fnweb.experiment_plots``, the tables and the plain reading. At the end,
or after Stop (then marked partial), the result is written to the session's folder
as JSON and two CSV tables for download. The work runs in ``experiment_on_device``,
the function ZeroGPU places on a GPU.

It knows nothing about how the effects are measured (see fnweb.experiments).
"""

from __future__ import annotations

from typing import Optional

import gradio as gr

from ..cards import component_labels
from ..errors import FnwebError
from ..experiment_plots import lesion_figure, preservation_figure
from ..experiment_results import ExperimentResult
from ..experiments import MAX_DRAWS, STOPPED, ExperimentConfig, experiment_stream
from ..masks import DEFAULT_PRESERVE_SCOPE
from ..models import ModelRequest, load_model
from ..prompts import PromptSource, builtin_sets
from ..templates import Template
from . import render, runner
from .feedback import action
from .forms import Form, Tab, on, scope_dropdown, upload_paths, whole
from .jobs import Job, gpu, stream
from .state import Session, stamp, unique_name

TITLE = "Running the experiment"
DATA_TYPES = [".json", ".jsonl", ".csv", ".parquet"]
OUTPUTS = ("status", "reading", "lesion", "curve", "lesion_table", "curve_table", "downloads")  # the API's order


def build_experiments_tab(ctx) -> Tab:
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
                draws = gr.Number(5, label=f"Random draws (1-{MAX_DRAWS})", precision=0, elem_id="fn-exp-draws")
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
    lesions = gr.Dataframe(render.lesion_frame(None), label="Lesions (nats per token)", interactive=False, wrap=True,
                           elem_id="fn-exp-table")
    curve_points = gr.Dataframe(render.curve_frame(None), label="Preservation curve (nats per token)",
                                interactive=False, wrap=True, elem_id="fn-exp-curve-table")
    downloads = gr.File(label="Download (JSON and CSV)", file_count="multiple", interactive=False,
                        elem_id="fn-exp-files-out")
    form = Form(template=ctx.template, builtin=builtin, files=files, samples=samples, draws=draws, seed=seed,
                max_tokens=max_tokens, leave_out=leave_out, preserve_scope=scope)
    tab = Tab(form, "status", run=run, stop=stop, status=status, reading=reading, lesion=lesion, curve=curve,
              lesion_table=lesions, curve_table=curve_points, downloads=downloads)
    on(run.click, run_experiment_form, [ctx.session, form], tab.outputs(*OUTPUTS), api_name="experiment",
       **ctx.model_work)
    on(stop.click, stop_experiment, [ctx.session], api_name="stop_experiment", concurrency_limit=None)
    return tab


# ---- reading the form ---------------------------------------------------------------


def config_from_form(form: dict) -> ExperimentConfig:
    """The experiment's settings from the form's record (field names as in the tab's ``Form``), checked."""
    sets = list(form["builtin"] or [])
    unknown = [s for s in sets if s not in builtin_sets()]
    if unknown:
        raise FnwebError(f"Unknown built-in prompt set(s): {', '.join(map(str, unknown))}; "
                         f"choose from {', '.join(builtin_sets())}.")
    sources = [PromptSource(f"builtin:{s}") for s in sets]
    sources += [PromptSource(str(p)) for p in upload_paths(form["files"])]
    config = ExperimentConfig(
        sources=sources, samples_per_dataset=whole(form["samples"], "Prompts per set"),
        draws=whole(form["draws"], "Random draws"), seed=whole(form["seed"], "Seed"),
        max_tokens=whole(form["max_tokens"], "Max tokens per prompt"),
        exclude_template_prompts=bool(form["leave_out"]),
        preserve_scope=form.get("preserve_scope") or DEFAULT_PRESERVE_SCOPE,
    )
    config.validate()
    return config


# ---- the job ----------------------------------------------------------------------------


def _duration(request, template, config: ExperimentConfig, job) -> int:
    prompts = max(1, config.samples_per_dataset or 50) * len(config.sources)
    return int(min(600, 30 + prompts * len(template.components) * (config.draws + 1) * 0.2))


@gpu(duration=_duration)
def experiment_on_device(request: ModelRequest, template: Template, config: ExperimentConfig, job: Job):
    """The experiment job: yields ``jobs.Update``s (progress events and partial results), the last ``done``
    with the final result."""
    lm = load_model(request)

    def work(emit, stop):
        last = None
        for last in experiment_stream(lm, template, config, emit, stop):
            emit(last)
        return last

    yield from stream(work, lm.model, job)


@action("status")
def run_experiment_form(session: Session, form: dict):
    """Run handler: streams progress and the filling charts, then the tables, reading and files."""
    config = config_from_form(form)
    session.require_model()
    entry = session.get(form["template"])
    template, labels = entry.template, component_labels(entry.template)
    yield {"reading": "", "lesion": None, "curve": None, "lesion_table": render.lesion_frame(None),
           "curve_table": render.curve_frame(None), "downloads": None}
    for view in runner.run(session, experiment_on_device, template, config, title=TITLE):
        if view.stopped:  # stopped while waiting for the model: nothing was measured
            yield {"status": render.message_html("stopped", "Stopped before anything was measured. Press Run to "
                                                            "start again.")}
            return
        if not view.done:
            shown = result_views(view.value, labels) if view.fresh else {}
            yield {"status": view.status_html() + _warnings_html(view.value), **shown}
    final = view.result
    if final is None:
        raise FnwebError("The experiment measured nothing before it ended: press Run to try again.")
    entry.experiment = final  # the component cards show its lesion effects
    session.keep("experiments", final.to_json(), {"template": entry.saved_id, "name": entry.name})  # for a reload
    yield {"status": final_html(final), **result_views(final, labels), "downloads": _save(session, final)}


def stop_experiment(session: Session) -> None:
    runner.stop(session)


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


def final_html(result: ExperimentResult) -> str:
    if result.partial:
        head = render.message_html("stopped", f"PARTIAL RESULT: {result.partial_note} "
                                              "The charts, tables and files cover only what was measured.")
    else:
        head = render.message_html("ok", f"Done in {render.seconds(result.seconds)}: {result.prompts} held-out "
                                         f"prompts, {result.settings.get('draws')} random draws per condition.")
    return head + _warnings_html(result)


def result_views(result: ExperimentResult, labels: Optional[dict] = None) -> dict:
    """The reading, both figures and both tables of a result (partial or final); components named by label."""
    reading = result.reading()
    if result.partial and result.partial_note.startswith(STOPPED):
        reading = "**Partial result (stopped).** " + reading
    return {"reading": reading, "lesion": lesion_figure(result), "curve": preservation_figure(result),
            "lesion_table": render.lesion_frame(result, labels), "curve_table": render.curve_frame(result)}
