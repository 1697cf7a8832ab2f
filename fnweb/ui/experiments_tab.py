"""The Experiments tab: does a network matter? Lesions and the preservation curve against random controls.

The handler reads the form's record (``plan_from_form`` owns the field names; the
evidence controls come from ``fnweb.ui.evidence_form``) into an ``ExperimentPlan``: the
``ExperimentConfig`` (held-out sets: built-in sets ticked and/or uploaded files; the
intervention, α, controls, task and dose-response), the number of template seeds and
the per-sample recurrence (or none). It runs ``fnweb.evidence_run.evidence_stream``
(the experiment on one or several template seeds, then recurrence) through the app's
job runner (``fnweb.ui.runner``) on the visitor's template, and redraws as snapshots
arrive (``fnweb.ui.experiments_view``): the progress bar (waiting and its place, or
the phase, passes done of all, time left), the warnings, the figures, tables and the
plain reading. At the end, or after Stop (then marked partial), every part is written
to the session's folder as JSON and CSV for download. The work runs in
``experiment_on_device``, the function ZeroGPU places on a GPU.

It knows nothing about how the effects are measured (see fnweb.experiments).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import gradio as gr

from ..cards import component_labels
from ..controls import CONTROLS
from ..errors import FnwebError
from ..evidence_run import Evidence, check_evidence, evidence_stream
from ..experiments import MAX_DRAWS, ExperimentConfig
from ..experiments.variants import check_statistics
from ..masks import DEFAULT_PRESERVE_SCOPE
from ..models import ModelRequest, load_model
from ..prompts import PromptSource, builtin_sets
from ..recurrence import RecurrenceConfig
from ..templates import Template
from . import render, runner
from .evidence_form import DEFAULTS, build_evidence_form, evidence_from_form, recurrence_for
from .experiments_view import (
    OPTIONAL,
    cleared,
    evidence_final_html,
    evidence_views,
    final_html,
    idle_html,
    result_views,
    save_evidence,
    warnings_html,
)
from .feedback import action
from .forms import Form, Tab, on, scope_dropdown, upload_paths, whole
from .jobs import Job, gpu, stream
from .state import Session, stamp, unique_name

__all__ = ["OUTPUTS", "build_experiments_tab", "final_html", "plan_from_form", "result_views"]

TITLE = "Running the experiment"
DATA_TYPES = [".json", ".jsonl", ".csv", ".parquet"]
# The API's order: the first seven as before, then the parts only some runs fill.
OUTPUTS = ("status", "reading", "lesion", "curve", "lesion_table", "curve_table", "downloads", *OPTIONAL)
CONTROL_WORDS = " or ".join(f"{c.help} ({name})" for name, c in CONTROLS.items())


def build_experiments_tab(ctx) -> Tab:
    gr.Markdown(
        "Does a network matter? On held-out prompts, each component of the selected template is **lesioned** "
        f"(its neurons zeroed, or as the evidence options say) beside random neurons: {CONTROL_WORDS}, as the "
        "control you choose says. Then the top components are **kept** alone (the preservation curve) beside "
        "random keeps of the same sizes.", elem_classes="fn-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            builtin = gr.CheckboxGroup(builtin_sets(), value=["factual", "creative"], label="Held-out prompt sets",
                                       info="Prompts the template was built from are left out (and counted)",
                                       elem_id="fn-exp-sets")
            files = gr.File(file_count="multiple", file_types=DATA_TYPES, type="filepath",
                            label="Or your own prompts (.json, .jsonl, .csv, .parquet)", height=110,
                            elem_id="fn-exp-files")
            evidence = build_evidence_form()
        with gr.Column(scale=2, min_width=280):
            with gr.Row():
                samples = gr.Number(12, label="Prompts per set (0 = all)", precision=0, elem_id="fn-exp-samples")
                draws = gr.Number(5, label=f"Random draws (1-{MAX_DRAWS})", precision=0, elem_id="fn-exp-draws")
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, elem_id="fn-exp-seed")
                max_tokens = gr.Number(128, label="Max tokens per prompt", precision=0, elem_id="fn-exp-tokens")
            leave_out = gr.Checkbox(True, label="Leave out the template's own prompts", elem_id="fn-exp-leave-out")
            scope = scope_dropdown("fn-exp-scope")
            with gr.Row():
                run = gr.Button("Run experiment", variant="primary", elem_id="fn-exp-run")
                stop = gr.Button("Stop", variant="stop", elem_id="fn-exp-stop")
    form = Form(template=ctx.template, builtin=builtin, files=files, samples=samples, draws=draws, seed=seed,
                max_tokens=max_tokens, leave_out=leave_out, preserve_scope=scope, **evidence.named())
    tab = Tab(form, "status", run=run, stop=stop, **_result_parts())
    on(run.click, run_experiment_form, [ctx.session, form], tab.outputs(*OUTPUTS), api_name="experiment",
       **ctx.model_work)
    on(stop.click, stop_experiment, [ctx.session], api_name="stop_experiment", concurrency_limit=None)
    return tab


def _result_parts() -> dict:
    """The status line and every result part, by output name."""
    parts = {"status": gr.HTML(idle_html(), elem_id="fn-exp-status"),
             "reading": gr.Markdown("", elem_id="fn-exp-reading")}
    with gr.Row(equal_height=False):
        parts["lesion"] = gr.Plot(label="Lesion effect per component", elem_id="fn-exp-lesion")
        parts["curve"] = gr.Plot(label="Preservation curve", elem_id="fn-exp-curve")
    with gr.Row(equal_height=False):
        parts["accuracy_plot"] = gr.Plot(label="Task accuracy per component", visible=False, elem_id="fn-exp-accuracy")
        parts["dose_plot"] = gr.Plot(label="Dose-response", visible=False, elem_id="fn-exp-dose-plot")
    parts["lesion_table"] = gr.Dataframe(render.lesion_frame(None), label="Lesions (nats per token)",
                                         interactive=False, wrap=True, elem_id="fn-exp-table")
    parts["curve_table"] = gr.Dataframe(render.curve_frame(None), label="Preservation curve (nats per token)",
                                        interactive=False, wrap=True, elem_id="fn-exp-curve-table")
    parts["seeds_table"] = gr.Dataframe(label="Across template seeds (each component matched to the first seed's)",
                                        interactive=False, wrap=True, visible=False, elem_id="fn-exp-seeds")
    parts["recurrence_plot"] = gr.Plot(label="Recurrence per sample", visible=False, elem_id="fn-exp-recurrence-plot")
    parts["recurrence_table"] = gr.Dataframe(label="Recurrence per sample (share of samples)", interactive=False,
                                             wrap=True, visible=False, elem_id="fn-exp-recurrence-table")
    parts["downloads"] = gr.File(label="Download (JSON and CSV)", file_count="multiple", interactive=False,
                                 elem_id="fn-exp-files-out")
    return parts


# ---- reading the form ---------------------------------------------------------------


@dataclass
class ExperimentPlan:
    """What one press of Run does: the experiment, on how many template seeds, and per-sample recurrence or not."""

    config: ExperimentConfig
    seeds: int = 1
    recurrence: Optional[RecurrenceConfig] = None


def plan_from_form(form: dict) -> ExperimentPlan:
    """The run's settings from the form's record (field names as in the tab's ``Form``), each part checked.

    The evidence fields a record lacks (an older link or API client) take the form's starting values.
    """
    sets = list(form["builtin"] or [])
    unknown = [s for s in sets if s not in builtin_sets()]
    if unknown:
        raise FnwebError(f"Unknown built-in prompt set(s): {', '.join(map(str, unknown))}; "
                         f"choose from {', '.join(builtin_sets())}.")
    sources = [PromptSource(f"builtin:{s}") for s in sets]
    sources += [PromptSource(str(p)) for p in upload_paths(form.get("files"))]
    evidence, seeds, recurrence = evidence_from_form(**{name: form.get(name, value) for name, value in
                                                        DEFAULTS.items()})
    config = ExperimentConfig(
        sources=sources, samples_per_dataset=whole(form["samples"], "Prompts per set"),
        draws=whole(form["draws"], "Random draws"), seed=whole(form["seed"], "Seed"),
        max_tokens=whole(form["max_tokens"], "Max tokens per prompt"),
        exclude_template_prompts=bool(form["leave_out"]),
        preserve_scope=form.get("preserve_scope") or DEFAULT_PRESERVE_SCOPE, **evidence,
    )
    config.validate()
    plan = ExperimentPlan(config, seeds, recurrence_for(config, recurrence))
    if plan.recurrence is not None:
        plan.recurrence.validate()
    return plan


def config_from_form(form: dict) -> ExperimentConfig:
    """The experiment's settings alone (see ``plan_from_form``)."""
    return plan_from_form(form).config


def check_plan(plan: ExperimentPlan, template: Template) -> None:
    """Refuse, before any work, what this template cannot do: a dose component it lacks, a rebuild it cannot
    make, statistics it does not hold."""
    if plan.config.dose_component is not None:
        template.check_components([plan.config.dose_component])
    check_evidence(template, plan.config, plan.seeds, plan.recurrence)
    check_statistics(template, plan.config)


# ---- the job ----------------------------------------------------------------------------


def _duration(request, template, plan: ExperimentPlan, job) -> int:
    config = plan.config
    prompts = max(1, config.samples_per_dataset or 50) * len(config.sources)
    seconds = 30 + prompts * len(template.components) * (config.draws + 1) * 0.2
    return int(min(600, seconds * plan.seeds + (60 if plan.recurrence else 0)))


@gpu(duration=_duration)
def experiment_on_device(request: ModelRequest, template: Template, plan: ExperimentPlan, job: Job):
    """The experiment job: yields ``jobs.Update``s (progress events and ``Evidence`` snapshots), the last ``done``
    with the final one."""
    lm = load_model(request)

    def work(emit, stop):
        last = None
        for last in evidence_stream(lm, template, plan.config, plan.seeds, plan.recurrence, emit, stop):
            emit(replace(last))  # a snapshot of its own: the run goes on filling the next
        return last

    yield from stream(work, lm.model, job)


@action("status")
def run_experiment_form(session: Session, form: dict):
    """Run handler: streams progress and the filling charts, then the tables, reading and files."""
    plan = plan_from_form(form)
    session.require_model()
    entry = session.get(form["template"])
    template, labels = entry.template, component_labels(entry.template)
    check_plan(plan, template)
    yield cleared()
    for view in runner.run(session, experiment_on_device, template, plan, title=TITLE):
        if view.stopped:  # stopped while waiting for the model: nothing was measured
            yield {"status": render.message_html("stopped", "Stopped before anything was measured. Press Run to "
                                                            "start again.")}
            return
        if not view.done:
            shown = evidence_views(view.value, labels) if view.fresh else {}
            yield {"status": view.status_html() + _warnings(view.value), **shown}
    final: Optional[Evidence] = view.result
    if final is None or final.experiment is None:
        raise FnwebError("The experiment measured nothing before it ended: press Run to try again.")
    session.keep_experiment(entry, final.experiment)
    yield {"status": evidence_final_html(final), **evidence_views(final, labels), "downloads": _save(session, final)}


def stop_experiment(session: Session) -> None:
    runner.stop(session)


def _warnings(evidence: Optional[Evidence]) -> str:
    if evidence is None:
        return ""
    return warnings_html(evidence.experiment, evidence.seeds, evidence.recurrence)


def _save(session: Session, evidence: Evidence) -> list[str]:
    folder = session.folder / unique_name(f"experiment-{stamp().replace(':', '')}")  # two in one second: two folders
    return save_evidence(folder, evidence)

