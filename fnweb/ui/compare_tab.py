"""The Compare tab: baseline, each intervention (lesion, preserve, mean, scale by α) and random-control generations.

The columns follow the intervention table; α (the scale column's factor), the
intervention the random column applies and how its neurons are drawn are form fields too.
The handler reads the form's record (``plan_from_form`` owns the field names) into a
``ComparePlan``, runs ``fnweb.compare.compare_stream`` through the app's job runner
(``fnweb.ui.runner``: the status line beside Generate says whether it waits or how many
tokens are done) and re-renders the columns as tokens arrive; when the run is done it
shows the metrics table. The demo presets (in the Demo strip) are wired by ``build_app``. A
fine-tuned run of the visitor's (Fine-tune tab) can be added as one more column: after
the batched columns, it is loaded with its adapter and mask and generates from the
same prompt with the same seed, scored against the baseline's continuation. The work
runs in ``compare_on_device``, the function ZeroGPU places on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gradio as gr

from ..archs import layout_of
from ..cards import component_labels
from ..checks import whole_numbers
from ..compare import (
    COLUMNS,
    CONTROL_OF,
    DEFAULT_ALPHA,
    DEFAULT_COLUMNS,
    GenerationSettings,
    compare_stream,
    model_column_stream,
)
from ..controls import CONTROLS, DEFAULT_CONTROL, controls_help
from ..errors import FnwebError
from ..finetune import load_run
from ..finetune.runs import read_json
from ..interventions import ALPHA_RANGE, INTERVENTIONS, interventions_help
from ..masks import DEFAULT_PRESERVE_SCOPE
from ..models import ModelRequest, load_model
from ..progress import Progress
from ..templates import Template
from . import finetune_runs, links, render, runner
from .feedback import action
from .forms import Form, Tab, on, real, scope_dropdown, whole
from .jobs import Job, gpu, stream
from .redraw import Redraws
from .state import Session

EXAMPLE_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "What is 12 + 30?",
    "Write a Python function that adds two numbers.",
    "Translate to French: Good morning, my friend.",
    "Is this review positive or negative? The food was cold and the waiter was rude.",
]


def build_compare_tab(ctx) -> Tab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            prompt = gr.Textbox(label="Prompt", lines=2, value=EXAMPLE_PROMPTS[0], elem_id="fn-prompt")
            gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts",
                        examples_per_page=6)
        with gr.Column(scale=2, min_width=280):
            components = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="Components",
                                     info="From the selected template; 0 is the strongest", elem_id="fn-components")
            columns = gr.CheckboxGroup(list(COLUMNS), value=list(DEFAULT_COLUMNS), label="Columns",
                                       info=interventions_help())
            alpha = gr.Slider(*ALPHA_RANGE, value=DEFAULT_ALPHA, step=0.05, label="α (scale column)",
                              info="0 zeroes the neurons, 1 leaves them, above 1 amplifies", elem_id="fn-alpha")
            run = gr.Dropdown([], value=None, label="Fine-tuned run (extra column)", allow_custom_value=True,
                              info="One of your runs (Fine-tune tab), with its mask", elem_id="fn-compare-run")
            scope = scope_dropdown("fn-compare-scope")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="fn-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="fn-compare-stop")
            status = gr.HTML("", elem_id="fn-compare-status")
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            max_new_tokens = gr.Number(48, label="Max new tokens (1-1024)", precision=0, elem_id="fn-new-tokens")
            decoding = gr.Radio(["greedy", "sampled"], value="greedy", label="Decoding")
            temperature = gr.Number(0.8, label="Temperature (sampled, 0.05-5)", step=0.05)
            seed = gr.Number(0, label="Seed (re-applied for every column)", precision=0)
            draws = gr.Number(3, label="Random control draws (1-20)", precision=0)
        with gr.Row():
            control_of = gr.Dropdown(list(INTERVENTIONS), value=CONTROL_OF, label="Random column applies",
                                     elem_id="fn-control-of")
            control = gr.Radio(list(CONTROLS), value=DEFAULT_CONTROL, label="Random neurons matched on",
                               info=controls_help(), elem_id="fn-control")
    output = gr.HTML(render.columns_html(None), elem_id="fn-compare-output")
    metrics = gr.Dataframe(render.metrics_frame(None), label="Metrics (teacher-forced on the baseline's text)",
                           interactive=False, elem_id="fn-metrics", wrap=True)
    with gr.Accordion("What the numbers mean", open=False, elem_id="fn-metrics-legend"):
        gr.Markdown(render.metrics_legend(), elem_classes="fn-note")
    form = Form(template=ctx.template, prompt=prompt, components=components, columns=columns,
                max_new_tokens=max_new_tokens, decoding=decoding, temperature=temperature, seed=seed, draws=draws,
                run=run, preserve_scope=scope, alpha=alpha, control_of=control_of, control=control)
    tab = Tab(form, "status", generate=generate, stop=stop, status=status, output=output, metrics=metrics)

    results = tab.outputs("output", "metrics", "status")
    on(generate.click, compare, [ctx.session, form], results, api_name="compare", **ctx.model_work)
    on(prompt.submit, compare, [ctx.session, form], results, api_visibility="private", **ctx.model_work)
    on(stop.click, _stop, [ctx.session], api_visibility="private", concurrency_limit=None)
    on(run.focus, offer_runs, [ctx.session, run], {"run": run}, api_visibility="private", concurrency_limit=None)
    on(ctx.template.change, component_choices, [ctx.session, ctx.template, components], {"components": components},
       api_visibility="private")
    return tab


def component_choices(session: Session, name: Optional[str], current):
    """The picker's template changed: offer its components, keeping the chosen ones it has."""
    if not session.has(name):
        return gr.update(choices=[], value=[])
    template = session.get(name).template
    ids, labels = template.component_ids, component_labels(template)
    choices = [(f"{c} · {labels[c]}" if c in labels else f"{c}", c) for c in ids]
    current = [int(c) for c in (current or []) if str(c).lstrip("-").isdigit()]
    if current and all(c in ids for c in current):
        return gr.update(choices=choices)  # keep what is chosen (a preset may have just set it)
    return gr.update(choices=choices, value=ids[:1])


@dataclass
class ComparePlan:
    """The comparison a form asks for, checked: what ``compare_on_device`` runs."""

    prompt: str
    template: Optional[Template]
    components: list[int]
    columns: list[str]
    settings: GenerationSettings
    run_folder: Optional[Path] = None

    @property
    def note(self) -> str:
        s = self.settings
        return "greedy" if s.greedy else f"sampled at T {s.temperature:g}, seed {s.seed}"


def settings_from_form(form: dict) -> GenerationSettings:
    decoding = form["decoding"]
    if decoding not in ("greedy", "sampled"):
        raise FnwebError(f"Decoding must be greedy or sampled (got {decoding!r}).")
    settings = GenerationSettings(
        max_new_tokens=whole(form["max_new_tokens"], "Max new tokens"), greedy=decoding == "greedy",
        temperature=real(form["temperature"], "Temperature"), seed=whole(form["seed"], "Seed"),
        random_draws=whole(form["draws"], "Random control draws"),
        preserve_scope=form.get("preserve_scope") or DEFAULT_PRESERVE_SCOPE,
        alpha=real(form.get("alpha", DEFAULT_ALPHA), "α"), control_of=form.get("control_of") or CONTROL_OF,
        control=form.get("control") or DEFAULT_CONTROL,
    )
    settings.validate()
    return settings


def plan_from_form(session: Session, form: dict) -> ComparePlan:
    """The form's record as a checked ``ComparePlan`` (field names as in the tab's ``Form``)."""
    settings = settings_from_form(form)
    prompt = form["prompt"]
    if not prompt or not str(prompt).strip():
        raise FnwebError("The prompt is empty: type a prompt or pick an example.")
    columns = list(form["columns"] or [])
    if not columns:
        raise FnwebError(f"No columns chosen: tick at least one of {', '.join(COLUMNS)}.")
    session.require_model()
    run = form.get("run")
    run_folder = None if run in (None, "", []) else finetune_runs.run_folder(session, run)
    needs_template = any(c != "baseline" for c in columns)
    template = session.get(form["template"]).template if needs_template else None
    ids = _component_ids(form["components"])
    if template is not None:
        template.check_components(ids)
    return ComparePlan(str(prompt), template, ids, columns, settings, run_folder)


def _duration(request, plan: ComparePlan, job) -> int:
    return int(min(180, 20 + plan.settings.max_new_tokens * (0.5 if plan.run_folder is None else 1.0)))


@gpu(duration=_duration)
def compare_on_device(request: ModelRequest, plan: ComparePlan, job: Job):
    """The comparison job: yields ``jobs.Update``s (progress and Comparisons), the last ``done`` with the final one."""
    lm = load_model(request)

    def work(emit, stop):
        last = None
        report = Progress("generating", 0, plan.settings.max_new_tokens, "tokens", "Generating")
        for last in compare_stream(lm, plan.prompt, plan.template, plan.components, plan.columns, plan.settings,
                                   stop):
            report.done = last.step
            emit(report)
            emit(last)
        if plan.run_folder is not None and not last.stopped:
            report = Progress("generating", 0, plan.settings.max_new_tokens, "tokens", "Generating the run's column")
            batched = last
            for last in run_column(lm, batched, plan.run_folder, plan.settings, stop):
                report.done = last.step
                emit(report)
                emit(last)
        return last

    yield from stream(work, lm.model, job)


def run_column(lm, comparison, run_folder: Path, settings: GenerationSettings, stop):
    """The fine-tuned run's column: its adapter on a private copy of the model, its mask re-applied."""
    config = read_json(run_folder / "train_config.json") or {}
    if config.get("model_id") != lm.model_id:
        raise FnwebError(f"Run {run_folder.name} was trained on {config.get('model_id')}, not on {lm.model_id}: "
                         "load that model in the bar to compare it.")
    run = load_run(run_folder, lm)
    share = run.plan.share(layout_of(lm.model))
    yield from model_column_stream(lm, comparison, run.loaded_model(), "run", run.label, settings, stop, run.masked,
                                   share)


def offer_runs(session: Session, current):
    """The run list: the visitor's runs with a saved adapter (keeps the current choice)."""
    listed = finetune_runs.run_choices(session)
    value = current if current in [r for _, r in listed] else None
    return gr.update(choices=listed, value=value)


@action("status")
def compare(session: Session, form: dict):
    """Generate handler: streams the columns (and a fine-tuned run's, when chosen), then the metrics table.

    The columns are redrawn as often as their size allows (``fnweb.ui.redraw``), the status line at every tick.
    After a Stop the columns so far are shown at once, then scored: the metrics cover the tokens generated.
    """
    plan = plan_from_form(session, form)
    last, redraws, pending = None, Redraws(), False
    yield {"metrics": render.metrics_frame(None)}  # the last comparison's metrics do not describe the new one
    for view in runner.run(session, compare_on_device, plan, title="Generating"):
        if view.fresh:
            last, pending = view.value, True
        if view.stopped:  # stopped before generating (while waiting for its turn)
            yield {"status": render.message_html("stopped", "Stopped. Press Generate to run again.")}
            return
        if view.done:
            break
        out = {"status": _scoring_html(last) if last is not None and last.stopped else view.status_html()}
        if pending and (redraws.due() or last.stopped):
            out["output"] = redraws.sent(render.columns_html(last, "stopped" if last.stopped else plan.note))
            pending = False
        yield out
    last = view.result
    links.remember(session, form, plan.settings, last)  # for the export, a link and a reload
    if last.stopped:
        status = render.message_html("stopped", f"Stopped at token {last.step}: the columns and the numbers cover "
                                                f"the {last.step} tokens generated.")
    else:
        status = render.message_html("ok", f"Done in {render.seconds(view.elapsed)}: {last.step} tokens.")
    yield {"status": status, "output": render.columns_html(last, "stopped" if last.stopped else plan.note),
           "metrics": render.metrics_frame(last)}


def _scoring_html(comparison) -> str:
    return render.message_html("stopped", f"Stopped at token {comparison.step}: scoring the tokens generated…")


def _component_ids(components) -> list[int]:
    values = components if isinstance(components, (list, tuple)) else ([] if components in (None, "") else [components])
    return whole_numbers(values, "A component id")  # 1.5 is refused, not made 1


def _stop(session: Session) -> None:
    runner.stop(session)
