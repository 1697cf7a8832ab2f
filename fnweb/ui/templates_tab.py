"""The Templates tab: build a template from prompt sets (with progress and Stop), or upload one.

The form (``Form``: fields named as in ``config_from_form``) becomes a ``BuildConfig``;
``build_job`` runs ``fnweb.build.build_template`` through the app's job runner
(``fnweb.ui.runner``) and keeps the result in the visitor's session. A stopped or failed
build adds nothing. The work itself runs in ``build_on_device``, the one function
ZeroGPU places on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import gradio as gr

from ..archs import DEFAULT_SITE, SITES, check_site, layout_of, sites_help
from ..build import BuildConfig, build_template
from ..errors import FnwebError
from ..models import ModelRequest, load_model
from ..prompts import BUILTIN_PREFIX, PromptSource
from ..templates import MAX_TEMPLATE_BYTES, Template
from ..thresholds import DEFAULT_RULE, THRESHOLDS
from . import render, runner
from .feedback import action
from .fit_note import fit_note, wire_fit_note
from .forms import Form, Tab, builtin_choices, on, parse_hub, real, upload_paths, whole
from .jobs import Job, gpu, stream
from .model_bar import template_choices
from .runner import JobView
from .state import Session, SessionTemplate, stamp

TITLE = "Building the template"
STOPPED = "Stopped. Nothing was saved; your earlier templates are unchanged."


def build_templates_tab(ctx) -> Tab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            gr.Markdown("#### 1 · Prompts", elem_classes="fn-step")
            builtin = gr.CheckboxGroup(builtin_choices(), value=["factual"], label="Built-in prompt sets")
            with gr.Accordion("Hub datasets and your own files", open=False):
                hub = gr.Textbox(label="Hub datasets", lines=2, placeholder="tatsu-lab/alpaca\nglue, sst2, validation",
                                 info="One per line: name, optional config, optional split (default train)")
                files = gr.File(label="Dataset files (.json, .jsonl, .csv, .parquet)", file_count="multiple",
                                file_types=[".json", ".jsonl", ".csv", ".parquet"], elem_id="fn-build-files")
            gr.Markdown("#### 2 · Settings", elem_classes="fn-step")
            # Numbers, not sliders: a value out of range then gets the engine's message, which names the setting.
            with gr.Row():
                samples = gr.Number(100, label="Samples per dataset", precision=0, min_width=110, elem_id="fn-samples")
                max_tokens = gr.Number(128, label="Max tokens per sample", precision=0, min_width=110,
                                       elem_id="fn-max-tokens")
                k = gr.Number(10, label="Components (k)", precision=0, min_width=110, elem_id="fn-k")
                seed = gr.Number(0, label="Seed", precision=0, min_width=90, elem_id="fn-seed")
            site = gr.Radio(list(SITES), value=DEFAULT_SITE, label="Site", info=sites_help())
            with gr.Row():
                threshold = gr.Radio(list(THRESHOLDS), value=DEFAULT_RULE, label="Threshold", min_width=160)
                threshold_value = gr.Number(THRESHOLDS[DEFAULT_RULE].default, label="Value", min_width=120,
                                            info=" or ".join(rule.hint for rule in THRESHOLDS.values()))
            with gr.Row():
                build_button = gr.Button("Build template", variant="primary", elem_id="fn-build")
                stop_button = gr.Button("Stop", variant="stop", elem_id="fn-build-stop")
            note = fit_note()
        with gr.Column(scale=6, min_width=380):
            gr.Markdown("#### 3 · Result", elem_classes="fn-step")
            progress = gr.HTML(render.message_html("info", "Pick prompt sets and press Build template. "
                                                   "A small build (20 samples, k 5) takes seconds."),
                               elem_id="fn-build-progress")
            summary = gr.Markdown("", elem_id="fn-template-summary")
            coverage = gr.Dataframe(render.coverage_frame(Template([], 1, {})), interactive=False,
                                    label="Coverage per component · peak layer: the layer with most of its "
                                          "neurons (how many) · % var: share of the variance · stability: "
                                          "map / mask agreement over resampled re-runs (1: found every time)",
                                    max_height=320, elem_id="fn-coverage")
            with gr.Row():
                download = gr.DownloadButton("Download template (.json)", value=None, elem_id="fn-download")
                upload = gr.UploadButton("Upload a template (.json)", file_types=[".json"], elem_id="fn-upload")
    form = Form(builtin=builtin, hub=hub, files=files, samples=samples, max_tokens=max_tokens, k=k, site=site,
                threshold=threshold, threshold_value=threshold_value, seed=seed)
    tab = Tab(form, "progress", build=build_button, stop=stop_button, progress=progress, summary=summary,
              coverage=coverage, download=download, upload=upload)
    _wire(ctx, tab)
    wire_fit_note(ctx, form, note)
    return tab


def _wire(ctx, tab: Tab) -> None:
    results = tab.outputs("progress", "summary", "coverage", "download", template=ctx.template)
    on(tab.threshold.change, _default_value, [tab.threshold], {"threshold_value": tab.threshold_value},
       queue=False, api_visibility="private")
    on(tab.build.click, build, [ctx.session, tab.form], results, api_name="build_template", **ctx.model_work)
    on(tab.stop.click, stop, [ctx.session], api_name="stop", concurrency_limit=None)
    on(tab.upload.upload, upload_template, [ctx.session, tab.upload], results, api_name="upload_template")
    on(ctx.template.change, show, [ctx.session, ctx.template], tab.outputs("summary", "coverage", "download"),
       api_name="show_template")


def _default_value(kind: str) -> float:
    """A threshold rule's default value, put in the form when the rule changes."""
    return THRESHOLDS.get(kind, THRESHOLDS[DEFAULT_RULE]).default


# ---- reading the form ---------------------------------------------------------------


def config_from_form(form: dict) -> BuildConfig:
    """The build's settings from the form's record (field names as in the tab's ``Form``), checked."""
    sources = [PromptSource(BUILTIN_PREFIX + name) for name in (form["builtin"] or [])]
    sources += parse_hub(form["hub"])
    sources += [PromptSource(str(f)) for f in upload_paths(form["files"])]
    check_site(form["site"])
    value = form["threshold_value"]
    config = BuildConfig(
        sources=sources, samples_per_dataset=whole(form["samples"], "Samples per dataset"),
        max_tokens=whole(form["max_tokens"], "Max tokens per sample"), k=whole(form["k"], "k"), site=form["site"],
        threshold=form["threshold"] or DEFAULT_RULE,
        threshold_value=None if value in (None, "") else real(value, "Threshold value"),
        seed=whole(form["seed"], "Seed"),
    )
    config.validate()
    return config


def config_key(model: ModelRequest, config: BuildConfig) -> str:
    """What decides a build's result: equal keys give equal templates."""
    names = ",".join(s.label() for s in config.sources)
    return (f"{model.model_id}|{model.dtype}|{names}|{config.samples_per_dataset}|{config.max_tokens}|{config.k}|"
            f"{config.site}|{config.threshold}|{config.resolved_threshold}|{config.seed}")


def config_label(config: BuildConfig) -> str:
    def short(source: PromptSource) -> str:
        name = source.name.removeprefix(BUILTIN_PREFIX)
        return Path(name).name if Path(name).suffix else name

    names = [short(s)[:32] for s in config.sources]
    names = "+".join(names) if len(names) <= 2 else f"{names[0]}+{len(names) - 1} more"
    return f"{names} · k{config.k} · {stamp()}"


# ---- building -----------------------------------------------------------------------


def _build_seconds(request: ModelRequest, config: BuildConfig, job: Job) -> int:
    """ZeroGPU time to ask for: generous for the capture, capped at a few minutes."""
    tokens = len(config.sources) * config.samples_per_dataset * config.max_tokens
    return int(min(300, 40 + tokens / 4000))


@gpu(duration=_build_seconds)
def build_on_device(request: ModelRequest, config: BuildConfig, job: Job):
    """The build job: yields ``jobs.Update``s, the last one ``done`` with the BuildResult."""
    lm = load_model(request)
    yield from stream(lambda emit, stop: build_template(lm, config, progress=emit, stop=stop), lm.model, job)


def build_job(session: Session, config: BuildConfig, title: str = TITLE, origin: str = "built") -> Iterator[JobView]:
    """The build as this visitor's job: a view per update; once done, the view's ``result`` is
    (the kept ``SessionTemplate``, a line saying what was built). Nothing is kept when stopped."""
    for view in runner.run(session, build_on_device, config, title=title, phases=render.BUILD_PHASES):
        if view.state == runner.DONE:
            built = view.result
            entry = session.add(built.template, origin, config_label(config), config_key(session.model, config))
            line = f"Built '{entry.name}' from {built.n_tokens:,} tokens in {sum(built.seconds.values()):.1f} s."
            view.result = entry, line
        yield view


@action("progress")
def build(session: Session, form: dict):
    """Build handler: streams the progress, then shows the new template (nothing on Stop or failure)."""
    config = config_from_form(form)
    for view in build_job(session, config):
        if view.stopped:
            yield {"progress": render.message_html("stopped", STOPPED)}
            return
        if not view.done:
            yield {"progress": view.status_html()}
    entry, line = view.result
    yield {"progress": render.message_html("ok", line), **_entry_outputs(entry), "template": template_choices(session)}


def stop(session: Session) -> None:
    """Ask this visitor's running job to stop (the engine stops at its next check)."""
    gr.Info("Stopping…" if runner.stop(session) else "Nothing is running.")


def _entry_outputs(entry: SessionTemplate) -> dict:
    return {"summary": render.template_summary(entry.name, entry.template, entry.origin),
            "coverage": render.coverage_frame(entry.template), "download": str(entry.path)}


@action("progress")
def upload_template(session: Session, file):
    """Read an uploaded template file, check it fits the loaded model, and keep it."""
    paths = upload_paths(file, MAX_TEMPLATE_BYTES)
    if not paths:
        raise FnwebError("No file received: choose a template .json file.")
    template = Template.load(paths[0])
    note = ""
    if session.model is not None:
        lm = session.require_model()
        note = template.check_fits(layout_of(lm.model), lm.model_id) or ""
    entry = session.add(template, "uploaded", f"{Path(paths[0]).stem} (uploaded {stamp()})")
    if note:
        gr.Warning(note)
    message = f"Using the uploaded template '{entry.name}'." + (f" {note}" if note else "")
    return {"progress": render.message_html("ok", message), **_entry_outputs(entry),
            "template": template_choices(session)}


def show(session: Session, name: Optional[str]):
    """The picker changed: show that template's summary, coverage and file."""
    if not session.has(name):
        return {"summary": "", "coverage": render.coverage_frame(Template([], 1, {})), "download": None}
    session.select(name)
    return _entry_outputs(session.get(name))
