"""One-click demos: each fills every field, makes sure its template exists, and runs the comparison.

All presets share one template recipe (100 built-in prompts, k 10), so after the first
one the others start at once. A preset template is also kept in the fnweb cache
folder, keyed by everything that decides it (model, prompts, settings, fnweb
version): a build with the same settings gives the same template, so a later visitor
reuses it instead of waiting, exactly like the converted model in that folder. The
component numbers below were read off that template on the embedded model (CPU);
components are ordered strongest first, deterministically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import gradio as gr

from .. import __version__
from ..errors import FnwebError, Stopped
from ..models import EMBEDDED_ID, cache_dir
from ..templates import Template
from . import render
from .compare_tab import CompareTab, compare
from .feedback import page_error
from .model_bar import template_choices
from .state import Session
from .templates_tab import TemplatesTab, build_stream, config_from_form, config_key, config_label


@dataclass(frozen=True)
class Preset:
    title: str
    blurb: str
    prompt: str
    components: tuple[int, ...]
    columns: tuple[str, ...] = ("baseline", "lesion", "preserve", "random")
    max_new_tokens: int = 40
    # the template recipe (Templates tab fields)
    builtin: tuple[str, ...] = ("factual", "arithmetic", "code", "creative")
    samples: int = 25
    max_tokens: int = 128
    k: int = 10
    site: str = "neurons"
    threshold: str = "percentile"
    threshold_value: float = 98.0
    seed: int = 0

    def template_form(self) -> list:
        return [list(self.builtin), "", None, self.samples, self.max_tokens, self.k, self.site, self.threshold,
                self.threshold_value, self.seed]

    def compare_form(self) -> list:
        return [self.prompt, list(self.components), list(self.columns), self.max_new_tokens, "greedy", 0.8, 0, 3]


PRESETS = [
    Preset("Silence it with 2 % of its neurons",
           "Lesion one network (component 7) on one prompt: here the model says nothing, while as many random "
           "neurons leave it answering. One prompt is not a test: the Experiments tab measures a component over "
           "held-out prompts against many random draws.", "What is the capital of Japan?", (7,)),
    Preset("Lose the thread in French",
           "Lesion the two late-layer networks (8 and 9) on one prompt: here the answer drifts into broken "
           "French; random neurons leave it on track. A single generation, not evidence that they matter more "
           "than random neurons in general.", "What is the capital of France?", (8, 9)),
    Preset("Strongest five vs random",
           "Lesion the five strongest networks (10 % of neurons) against as many random neurons: "
           "a fair control, where random damage is also large.", "Write a haiku about the sea.", (0, 1, 2, 3, 4)),
    Preset("Keep only one network",
           "Preserve one network and zero the other 98 % of neurons: the model babbles one word. On this model "
           "no small set of networks keeps it near its baseline (see the preservation curve).",
           "Tell me a short story about a dragon.", (7,), ("baseline", "preserve")),
]


def build_presets(ctx, compare_tab: CompareTab) -> list[gr.Button]:
    """Preset buttons in the Compare tab, wired to fill both tabs' forms and run."""
    templates_tab: TemplatesTab = ctx.tabs["Templates"]
    buttons = []
    with compare_tab.presets:
        gr.Markdown("**Demo presets** on the embedded model: one click fills every field, builds the shared "
                    "template once (about a minute on a CPU; then cached) and runs the comparison.",
                    elem_classes="fn-preset-note")
        with gr.Row(equal_height=True):
            for index, preset in enumerate(PRESETS):
                button = gr.Button(preset.title, size="sm", variant="secondary", elem_id=f"fn-preset-{index}")
                buttons.append(button)
        note = gr.Markdown("", elem_classes="fn-preset-note", elem_id="fn-preset-note")
    for index, (preset, button) in enumerate(zip(PRESETS, buttons)):
        fields = templates_tab.settings + compare_tab.settings + [note]
        (button.click(lambda p=preset: p.template_form() + p.compare_form() + [f"**{p.title}.** {p.blurb}"],
                      None, fields, queue=False, api_visibility="private")
         .then(_ensurer(preset), ctx.session, [compare_tab.output, ctx.template, compare_tab.components],
               api_name=f"preset_{index}_template", concurrency_id=ctx.model_queue,
               concurrency_limit=ctx.model_jobs)
         .success(compare, [ctx.session, ctx.template, *compare_tab.settings],
                  [compare_tab.output, compare_tab.metrics], api_visibility="private",
                  concurrency_id=ctx.model_queue, concurrency_limit=ctx.model_jobs))
    return buttons


def _ensurer(preset: Preset):
    def ensure(session: Session):
        yield from ensure_template(session, preset)
    return ensure


def _cache_path(key: str):
    digest = hashlib.sha256(f"{__version__}|{key}".encode()).hexdigest()[:24]
    return cache_dir() / "preset-templates" / f"{digest}.json"


def ensure_template(session: Session, preset: Preset):
    """Select the preset's template (from the session, the cache, or a fresh build); stream progress."""
    skip = gr.skip()
    try:
        lm = session.require_model()
        if lm.model_id != EMBEDDED_ID:
            gr.Warning(f"Presets were made on the embedded model; on {lm.model_id} other components may matter.")
        config = config_from_form(*preset.template_form())
        key = config_key(session.model, config)
        entry = session.find_key(key)
        if entry is None and _cache_path(key).exists():
            entry = _from_cache(session, key, config)
        if entry is None:
            for html, built in build_stream(session, config, "Building the preset template (once)", "preset"):
                if built is None:
                    yield html, skip, skip
                entry = built or entry
            entry.template.save(_cache_path(key))
        session.select(entry.name)
        yield (render.message_html("info", f"Template '{entry.name}' ready; generating…"), template_choices(session),
               gr.update(value=list(preset.components)))
    except Exception as exc:
        error = page_error(exc)
        yield render.message_html("stopped" if isinstance(exc, Stopped) else "error", error.message), skip, skip
        raise error from exc  # also keeps the chained comparison from running


def _from_cache(session: Session, key: str, config):
    try:
        template = Template.load(_cache_path(key))
    except FnwebError:
        return None  # unreadable: build afresh (and overwrite it)
    return session.add(template, "preset", config_label(config), key)
