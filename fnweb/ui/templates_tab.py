"""The Templates tab: build a template from prompt sets (with progress and Stop), or upload one.

Handlers read the form into a ``BuildConfig``, run ``fnweb.build.build_template`` as a
streamed, stoppable job (``jobs.stream``) and keep the result in the visitor's
session. A stopped or failed build adds nothing. The work itself runs in
``build_on_device``, the one function ZeroGPU places on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import gradio as gr

from ..access import check_hub_id
from ..archs import DEFAULT_SITE, SITES, check_site, layout_of, sites_help
from ..build import BuildConfig, build_template
from ..errors import FnwebError, Stopped
from ..models import ModelRequest, load_model
from ..prompts import BUILTIN_DIR, BUILTIN_PREFIX, PromptSource, builtin_sets
from ..templates import MAX_TEMPLATE_BYTES, Template
from ..thresholds import DEFAULT_RULE, THRESHOLDS
from . import render, uploads
from .feedback import handled, page_error
from .fit_note import fit_note, wire_fit_note
from .forms import real, whole
from .jobs import Job, gpu, stream
from .model_bar import template_choices
from .state import Session, SessionTemplate, stamp


@dataclass
class TemplatesTab:
    builtin: gr.CheckboxGroup
    hub: gr.Textbox
    files: gr.File
    samples: gr.Number
    max_tokens: gr.Number
    k: gr.Number
    site: gr.Radio
    threshold: gr.Radio
    threshold_value: gr.Number
    seed: gr.Number
    build: gr.Button
    stop: gr.Button
    progress: gr.HTML
    summary: gr.Markdown
    coverage: gr.Dataframe
    download: gr.DownloadButton
    upload: gr.UploadButton

    @property
    def settings(self) -> list:
        """The form's inputs, in the order ``config_from_form`` takes them."""
        return [self.builtin, self.hub, self.files, self.samples, self.max_tokens, self.k, self.site,
                self.threshold, self.threshold_value, self.seed]


def _builtin_choices() -> list[tuple[str, str]]:
    counts = {name: sum(1 for line in (BUILTIN_DIR / f"{name}.jsonl").open(encoding="utf-8") if line.strip())
              for name in builtin_sets()}
    return [(f"{name} ({n})", name) for name, n in counts.items()]


def build_templates_tab(ctx) -> TemplatesTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            gr.Markdown("#### 1 · Prompts", elem_classes="fn-step")
            builtin = gr.CheckboxGroup(_builtin_choices(), value=["factual"], label="Built-in prompt sets")
            with gr.Accordion("Hub datasets and your own files", open=False):
                hub = gr.Textbox(label="Hub datasets", lines=2, placeholder="tatsu-lab/alpaca\nglue, sst2, validation",
                                 info="One per line: name, optional config, optional split (default train)")
                files = gr.File(label="Dataset files (.json, .jsonl, .csv, .parquet)", file_count="multiple",
                                file_types=[".json", ".jsonl", ".csv", ".parquet"])
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
                build = gr.Button("Build template", variant="primary", elem_id="fn-build")
                stop = gr.Button("Stop", variant="stop", elem_id="fn-build-stop")
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
    tab = TemplatesTab(builtin, hub, files, samples, max_tokens, k, site, threshold, threshold_value, seed,
                       build, stop, progress, summary, coverage, download, upload)
    _wire(ctx, tab)
    wire_fit_note(ctx, tab.settings, note)
    return tab


def _wire(ctx, tab: TemplatesTab) -> None:
    results = [tab.progress, tab.summary, tab.coverage, tab.download, ctx.template]
    tab.threshold.change(_default_value, tab.threshold, tab.threshold_value, queue=False, api_visibility="private")
    tab.build.click(build, [ctx.session, *tab.settings], results, api_name="build_template",
                    concurrency_id=ctx.model_queue, concurrency_limit=ctx.model_jobs)
    tab.stop.click(stop, ctx.session, None, api_name="stop", concurrency_limit=None)
    tab.upload.upload(upload_template, [ctx.session, tab.upload], results, api_name="upload_template")
    ctx.template.change(show, [ctx.session, ctx.template], [tab.summary, tab.coverage, tab.download],
                        api_name="show_template")


def _default_value(kind: str) -> float:
    """A threshold rule's default value, put in the form when the rule changes."""
    return THRESHOLDS.get(kind, THRESHOLDS[DEFAULT_RULE]).default


# ---- reading the form ---------------------------------------------------------------


def parse_hub(text: str) -> list[PromptSource]:
    """'name[, config[, split]]' per line."""
    sources = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        parts = [p.strip() for p in line.split(",")]
        if not parts[0]:
            continue
        if len(parts) > 3 or " " in parts[0]:
            raise FnwebError(f"Hub datasets, line {number}: write 'name, config, split' (got '{line.strip()}').")
        check_hub_id(parts[0], f"a Hub dataset (line {number})")
        sources.append(PromptSource(parts[0], parts[1] if len(parts) > 1 and parts[1] else None,
                                    parts[2] if len(parts) > 2 and parts[2] else "train"))
    return sources


def config_from_form(builtin, hub, files, samples, max_tokens, k, site, threshold, threshold_value,
                     seed) -> BuildConfig:
    sources = [PromptSource(BUILTIN_PREFIX + name) for name in (builtin or [])]
    sources += parse_hub(hub)
    sources += [PromptSource(str(f)) for f in _paths(files)]
    check_site(site)
    config = BuildConfig(
        sources=sources, samples_per_dataset=whole(samples, "Samples per dataset"),
        max_tokens=whole(max_tokens, "Max tokens per sample"), k=whole(k, "k"), site=site,
        threshold=threshold or DEFAULT_RULE,
        threshold_value=None if threshold_value in (None, "") else real(threshold_value, "Threshold value"),
        seed=whole(seed, "Seed"),
    )
    config.validate()
    return config


def _paths(files, limit: Optional[int] = None) -> list[Path]:
    """The uploaded files' paths, each within the upload bound (``limit``, default the server's)."""
    if not files:
        return []
    files = files if isinstance(files, list) else [files]
    return uploads.checked([Path(getattr(f, "name", f)) for f in files], limit)


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


def build_stream(session: Session, config: BuildConfig, title: str = "Building the template",
                 origin: str = "built") -> Iterator[tuple[str, Optional[SessionTemplate]]]:
    """(progress html, None) while building, then ('', the new session template). Raises on failure."""
    session.require_model()
    job = session.job = Job()
    event = None
    try:
        for update in build_on_device(session.model, config, job):
            if update.kind == "done":
                result = update.value
                entry = session.add(result.template, origin, config_label(config), config_key(session.model, config))
                total = sum(result.seconds.values())
                yield render.message_html(
                    "ok", f"Built '{entry.name}' from {result.n_tokens:,} tokens in {total:.1f} s."), entry
                return
            event = update.value if update.kind == "event" else event
            yield render.progress_html(event, update.elapsed, title, waiting=update.kind == "waiting"), None
    finally:
        session.finish(job)


def build(session: Session, builtin, hub, files, samples, max_tokens, k, site, threshold, threshold_value, seed):
    """Build handler: streams the progress, then shows the new template (nothing on Stop or failure)."""
    skip = gr.skip()
    try:
        config = config_from_form(builtin, hub, files, samples, max_tokens, k, site, threshold, threshold_value,
                                  seed)
        session.require_model()
        yield render.progress_html(None, 0.0), skip, skip, skip, skip
        for html, entry in build_stream(session, config):
            if entry is None:
                yield html, skip, skip, skip, skip
            else:
                yield (html, *_entry_outputs(entry), template_choices(session))
    except Stopped:
        yield render.message_html("stopped", "Stopped. Nothing was saved; your earlier templates are unchanged."), \
            skip, skip, skip, skip
    except Exception as exc:
        error = page_error(exc)
        yield render.message_html("error", error.message), skip, skip, skip, skip
        raise error from exc


@handled
def stop(session: Session) -> None:
    """Ask this visitor's running job to stop (the engine stops at its next check)."""
    if session.job is None:
        gr.Info("Nothing is running.")
        return
    session.job.request_stop()
    gr.Info("Stopping…")


def _entry_outputs(entry: SessionTemplate) -> tuple:
    return render.template_summary(entry.name, entry.template, entry.origin), \
        render.coverage_frame(entry.template), str(entry.path)


def upload_template(session: Session, file):
    """Read an uploaded template file, check it fits the loaded model, and keep it."""
    skip = gr.skip()
    try:
        paths = _paths(file, MAX_TEMPLATE_BYTES)
        if not paths:
            raise FnwebError("No file received: choose a template .json file.")
        template = Template.load(paths[0])
        note = ""
        if session.model is not None:
            lm = session.require_model()
            note = template.check_fits(layout_of(lm.model), lm.model_id) or ""
        name = Path(paths[0]).stem
        entry = session.add(template, "uploaded", f"{name} (uploaded {stamp()})")
        if note:
            gr.Warning(note)
        message = f"Using the uploaded template '{entry.name}'." + (f" {note}" if note else "")
        yield (render.message_html("ok", message), *_entry_outputs(entry), template_choices(session))
    except Exception as exc:
        error = page_error(exc)
        yield render.message_html("error", error.message), skip, skip, skip, skip
        raise error from exc


@handled
def show(session: Session, name: Optional[str]):
    """The picker changed: show that template's summary, coverage and file."""
    if not session.has(name):
        return "", render.coverage_frame(Template([], 1, {})), None
    session.select(name)
    return _entry_outputs(session.get(name))

