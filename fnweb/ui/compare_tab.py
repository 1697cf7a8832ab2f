"""The Compare tab: baseline, each intervention (lesion, preserve, mean, scale by α) and random-control generations.

The columns follow the intervention table; α (the scale column's factor), the
intervention the random column applies and how its neurons are drawn are inputs after the
fine-tuned run, so older callers of the ``compare`` endpoint keep working. The handler
reads the form into ``GenerationSettings``, runs
``fnweb.compare.compare_stream`` as a streamed, stoppable job and re-renders the
columns as tokens arrive; when the run is done it shows the metrics table. A
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
from ..compare import (COLUMNS, CONTROL_OF, DEFAULT_ALPHA, DEFAULT_COLUMNS, GenerationSettings, compare_stream,
                       model_column_stream)
from ..controls import CONTROLS, DEFAULT_CONTROL, controls_help
from ..interventions import ALPHA_RANGE, INTERVENTIONS, interventions_help
from ..errors import FnwebError, Stopped
from ..finetune import load_run
from ..finetune.runs import read_json
from ..models import ModelRequest, load_model
from ..templates import Template
from . import render
from .feedback import page_error
from .finetune_runs import run_choices as finetuned_runs
from .finetune_runs import run_folder
from .forms import real, whole
from .jobs import Job, gpu, stream
from .state import Session

EXAMPLE_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "What is 12 + 30?",
    "Write a Python function that adds two numbers.",
    "Translate to French: Good morning, my friend.",
    "Is this review positive or negative? The food was cold and the waiter was rude.",
]


@dataclass
class CompareTab:
    prompt: gr.Textbox
    components: gr.Dropdown
    columns: gr.CheckboxGroup
    max_new_tokens: gr.Number
    decoding: gr.Radio
    temperature: gr.Number
    seed: gr.Number
    draws: gr.Number
    generate: gr.Button
    stop: gr.Button
    output: gr.HTML
    metrics: gr.Dataframe
    presets: gr.Column  # where the demo preset buttons go
    run: Optional[gr.Dropdown] = None  # a fine-tuned run as an extra column
    alpha: Optional[gr.Slider] = None  # the scale column's factor
    control_of: Optional[gr.Dropdown] = None  # the intervention the random column applies
    control: Optional[gr.Radio] = None  # how the random column's neurons are drawn

    @property
    def settings(self) -> list:
        """The form's inputs, in the order ``compare`` takes them after the session and template."""
        return [self.prompt, self.components, self.columns, self.max_new_tokens, self.decoding,
                self.temperature, self.seed, self.draws]


def build_compare_tab(ctx) -> CompareTab:
    presets = gr.Column(elem_classes="fn-presets")
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
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="fn-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="fn-compare-stop")
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
    tab = CompareTab(prompt, components, columns, max_new_tokens, decoding, temperature, seed, draws,
                     generate, stop, output, metrics, presets, run, alpha, control_of, control)
    tab_inputs = [ctx.session, ctx.template, *tab.settings, run, alpha, control_of, control]
    tab.generate.click(compare, tab_inputs, [output, metrics], api_name="compare",
                       concurrency_id=ctx.model_queue, concurrency_limit=ctx.model_jobs)
    tab.prompt.submit(compare, tab_inputs, [output, metrics], api_visibility="private",
                      concurrency_id=ctx.model_queue, concurrency_limit=ctx.model_jobs)
    tab.stop.click(_stop, ctx.session, None, api_visibility="private", concurrency_limit=None)
    run.focus(offer_runs, [ctx.session, run], run, api_visibility="private", concurrency_limit=None)
    ctx.template.change(component_choices, [ctx.session, ctx.template, components], components,
                        api_visibility="private")
    from .presets import build_presets  # presets fill this tab's and the Templates tab's fields

    build_presets(ctx, tab)
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


def settings_from_form(max_new_tokens, decoding, temperature, seed, draws, alpha=DEFAULT_ALPHA,
                       control_of=CONTROL_OF, control=DEFAULT_CONTROL) -> GenerationSettings:
    if decoding not in ("greedy", "sampled"):
        raise FnwebError(f"Decoding must be greedy or sampled (got {decoding!r}).")
    settings = GenerationSettings(
        max_new_tokens=whole(max_new_tokens, "Max new tokens"), greedy=decoding == "greedy",
        temperature=real(temperature, "Temperature"), seed=whole(seed, "Seed"),
        random_draws=whole(draws, "Random control draws"), alpha=real(alpha, "α"),
        control_of=control_of or CONTROL_OF, control=control or DEFAULT_CONTROL,
    )
    settings.validate()
    return settings


def _duration(request, prompt, template, components, columns, settings: GenerationSettings, job,
              run_folder=None) -> int:
    return int(min(180, 20 + settings.max_new_tokens * (0.5 if run_folder is None else 1.0)))


@gpu(duration=_duration)
def compare_on_device(request: ModelRequest, prompt: str, template: Optional[Template], components: list[int],
                      columns: list[str], settings: GenerationSettings, job: Job, run_folder: Optional[Path] = None):
    """The comparison job: yields ``jobs.Update``s of Comparisons, the last ``done`` with the final one."""
    lm = load_model(request)

    def work(emit, stop):
        last = None
        for last in compare_stream(lm, prompt, template, components, columns, settings, stop):
            emit(last)
        if run_folder is not None:
            for last in run_column(lm, last, run_folder, settings, stop):
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
    listed = finetuned_runs(session)
    value = current if current in [r for _, r in listed] else None
    return gr.update(choices=listed, value=value)


def compare(session: Session, template_name: Optional[str], prompt, components, columns, max_new_tokens,
            decoding, temperature, seed, draws, run=None, alpha=DEFAULT_ALPHA, control_of=CONTROL_OF,
            control=DEFAULT_CONTROL):
    """Generate handler: streams the columns (and a fine-tuned run's, when chosen), then the metrics table."""
    skip = gr.skip()
    job = last = None
    try:
        settings = settings_from_form(max_new_tokens, decoding, temperature, seed, draws, alpha, control_of, control)
        if not prompt or not str(prompt).strip():
            raise FnwebError("The prompt is empty: type a prompt or pick an example.")
        columns = list(columns or [])
        if not columns:
            raise FnwebError(f"No columns chosen: tick at least one of {', '.join(COLUMNS)}.")
        session.require_model()
        run_folder = _run_folder(session, run)
        needs_template = any(c != "baseline" for c in columns)
        template = session.get(template_name).template if needs_template else None
        ids = _component_ids(components)
        if template is not None:
            template.check_components(ids)
        note = "greedy" if settings.greedy else f"sampled at T {settings.temperature:g}, seed {settings.seed}"
        job = session.job = Job()
        yield render.progress_html(None, 0.0, "Generating"), render.metrics_frame(None)
        for update in compare_on_device(session.model, str(prompt), template, ids, columns, settings, job,
                                        run_folder):
            if update.kind == "waiting":
                yield render.progress_html(None, update.elapsed, "Generating", waiting=True), skip
            elif update.value is not None:
                last = update.value
                yield render.columns_html(last, note), skip
        yield render.columns_html(last, note), render.metrics_frame(last)
    except Stopped:
        if last is not None:
            yield render.columns_html(last, "stopped"), skip
        else:
            yield render.message_html("stopped", "Stopped. Press Generate to run again."), skip
    except Exception as exc:
        error = page_error(exc)
        yield render.message_html("error", error.message), skip
        raise error from exc
    finally:
        session.finish(job)


def _run_folder(session: Session, run) -> Optional[Path]:
    return None if run in (None, "", []) else run_folder(session, run)


def _component_ids(components) -> list[int]:
    values = components if isinstance(components, (list, tuple)) else ([] if components in (None, "") else [components])
    try:
        return [int(c) for c in values]
    except (TypeError, ValueError) as exc:
        raise FnwebError(f"Component ids must be whole numbers (got {list(values)}).") from exc


def _stop(session: Session) -> None:
    if session.job is not None:
        session.job.request_stop()
