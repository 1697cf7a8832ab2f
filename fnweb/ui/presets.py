"""One-click demos: each fills every field, makes sure its template exists, and runs the comparison.

The preset buttons sit in the "Demo" strip under the model bar (``ctx.demo``, on the
first screen of every tab), with their progress line beside them; a click switches to
the Compare tab and, once the first tokens arrive, scrolls the columns into view
(``fnweb.ui.in_view``).

All presets share one template recipe, the README's evidence template (five built-in
sets of 20 prompts, 128 tokens, k 10, site ``neurons`` at the 98th percentile, seed 0;
``docs/figures/evidence.py``), so a preset's component number is the one the README's
evidence measured, and after the first preset the others start at once. One recipe, not
two: a second template would double the start-up build (minutes on a CPU) and leave some
presets waiting on it; with one, the first preset can show the confirmed network and the
others reuse its template. A preset template is also kept in the fnweb cache
folder, keyed by everything that decides it (model, prompts, settings, fnweb
version): a build with the same settings gives the same template, so a later visitor
reuses it instead of waiting, exactly like the converted model in that folder. The
server builds it once at start-up in the background (``warm_up``, through
``fnweb.ui.warmup``; FNWEB_PRESET_WARMUP=0 turns that off); a visitor who clicks a
preset meanwhile follows that build's progress rather than starting a second one. The
template holds built-in prompts only, so one cached copy serves every visitor, on an
app for one user or for many (``fnweb.access``). The component numbers below were read
off that template on the embedded model (CPU); components are ordered strongest
first, deterministically. Each preset also fills the random column's intervention and
control, so what a click shows does not depend on the settings a visitor left.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import gradio as gr

from .. import __version__
from ..compare import CONTROL_OF
from ..controls import DEFAULT_CONTROL
from ..errors import FnwebError, Stopped
from ..ids import is_embedded
from ..models import ModelRequest, cache_dir
from ..templates import Template
from ..verdicts import LARGER, SAME, Claim
from . import in_view, render
from .compare_tab import compare
from .feedback import action
from .forms import on
from .jobs import TICK, Job
from .model_bar import template_choices
from .state import Session
from .templates_tab import build_job, config_from_form, config_key, config_label
from .warmup import WARMUP, WarmBuild

WARMING = "Building the preset template (once, at start-up)"


@dataclass(frozen=True)
class Preset:
    title: str
    blurb: str
    prompt: str
    components: tuple[int, ...]
    columns: tuple[str, ...] = ("baseline", "lesion", "preserve", "random")
    max_new_tokens: int = 40
    control: str = DEFAULT_CONTROL  # how the random column's neurons are drawn (fnweb.controls.CONTROLS)
    # the template recipe (Templates tab fields): the README's evidence template (docs/figures/evidence.py)
    builtin: tuple[str, ...] = ("factual", "arithmetic", "code", "creative", "multilingual")
    samples: int = 20
    max_tokens: int = 128
    k: int = 10
    site: str = "neurons"
    threshold: str = "percentile"
    threshold_value: float = 98.0
    seed: int = 0
    # What the blurb asserts of the preset's own numbers (tests/test_preset_claims.py checks it on the embedded
    # model): the column whose number must be larger than (or indistinguishable from) its random control's.
    claim: Optional[Claim] = None

    def template_form(self) -> dict:
        """The Templates tab's fields, by name."""
        return dict(builtin=list(self.builtin), hub="", files=None, samples=self.samples, max_tokens=self.max_tokens,
                    k=self.k, site=self.site, threshold=self.threshold, threshold_value=self.threshold_value,
                    seed=self.seed)

    def compare_form(self) -> dict:
        """The Compare tab's fields, by name (the template is chosen once it exists)."""
        return dict(prompt=self.prompt, components=list(self.components), columns=list(self.columns),
                    max_new_tokens=self.max_new_tokens, decoding="greedy", temperature=0.8, seed=0, draws=3,
                    control_of=CONTROL_OF, control=self.control)


PRESETS = [
    Preset("The one network that passed the test",
           "Lesion network 5 (2 % of neurons, densest in layer 17), the one of ten at this site that the README's "
           "evidence confirmed: over held-out prompts, on two other template seeds, its lesion raised cross-entropy "
           "by +1.00 nats per token against +0.29 for 19 random twins matched on layer and activation scale "
           "(p = 0.0175). Here, on one prompt against three such twins: the lesioned model writes nothing, the "
           "twins still write a poem.", "Write a haiku about the sea.", (5,), ("baseline", "lesion", "random"),
           control="magnitude", claim=Claim("lesion", LARGER)),  # measured: KL 1.377 vs 0.474 ± 0.174
    Preset("Silence it, then change the control",
           "The same network on a one-line answer: lesioned, the model says nothing, while as many random neurons "
           "per layer leave it answering (here 5.7 × their KL). Switch \"Random neurons matched on\" to magnitude "
           "and, on this prompt, the twins matched on activation scale too come close: one prompt is not a test, "
           "and the control decides what \"more than random\" means.", "What is the capital of Japan?", (5,),
           claim=Claim("lesion", LARGER)),  # measured: KL 0.692 vs 0.122 ± 0.163 (magnitude: 0.613 ± 0.437)
    Preset("Lose the thread in French",
           "Lesion the two late-layer networks (4 and 9) on one prompt: here the answer drifts into broken "
           "French; random neurons leave it in English. A single generation, not evidence that they matter more "
           "than random neurons: in the README's screen neither was beyond its random twins.",
           "What is the capital of France?", (4, 9),
           claim=Claim("lesion", SAME)),  # measured: lesion KL 0.298 vs random 0.374 ± 0.411
    Preset("Strongest five vs random",
           "Lesion the five strongest networks (10 % of neurons) against as many random neurons: "
           "a fair control, where random damage is also large.", "Describe the moon in two sentences.",
           (0, 1, 2, 3, 4), claim=Claim("lesion", SAME)),  # measured: lesion KL 1.222 vs random 1.750 ± 0.313
    Preset("Keep only one network",
           "Preserve the confirmed network (5) and zero the other 98 % of neurons: the model babbles one word. On "
           "this model no small set of networks keeps it near its baseline (see the preservation curve).",
           "Tell me a short story about a dragon.", (5,), ("baseline", "preserve")),
]


def wire_presets(ctx) -> list[gr.Button]:
    """Preset buttons in the Demo strip (``ctx.demo``), each filling both tabs' forms by name, switching to
    Compare and running; the strip's status line beside the buttons follows the template and the generation."""
    templates, compare_tab = ctx.tabs["Templates"], ctx.tabs["Compare"]
    with ctx.demo:
        gr.Markdown("**Demo** on the embedded model: one click fills every field, makes sure the shared preset "
                    "template exists (built once, then cached) and runs the comparison in the Compare tab.",
                    elem_classes="fn-preset-note")
        with gr.Row(equal_height=True):
            buttons = [gr.Button(p.title, size="sm", variant="secondary", elem_id=f"fn-preset-{i}")
                       for i, p in enumerate(PRESETS)]
        status = gr.HTML("", elem_id="fn-preset-status")
        note = gr.Markdown("", elem_classes="fn-preset-note", elem_id="fn-preset-note")
    sample = PRESETS[0]  # every preset fills the same fields
    filled = [*templates.form.fill(sample.template_form()), *compare_tab.form.fill(sample.compare_form()), note,
              ctx.page]
    shown = {**compare_tab.outputs("output", "metrics"), "status": status}
    for index, (preset, button) in enumerate(zip(PRESETS, buttons, strict=True)):
        def fill(p=preset):  # outputs keyed by component, as Gradio takes them
            return {**templates.form.fill(p.template_form()), **compare_tab.form.fill(p.compare_form()),
                    note: f"**{p.title}.** {p.blurb}", ctx.page: gr.Tabs(selected="compare")}

        in_view.follow(button.click, "fn-compare-output", ".fn-card")
        filling = button.click(fill, None, filled, queue=False, api_visibility="private", show_progress="hidden")
        ensured = on(filling.then, _ensurer(preset), [ctx.session],
                     {"status": status, "components": compare_tab.components, "template": ctx.template},
                     api_name=f"preset_{index}_template", **ctx.model_work)
        on(ensured.success, compare, [ctx.session, compare_tab.form], shown, api_visibility="private",
           **ctx.model_work)
    return buttons


def _ensurer(preset: Preset):
    @action("status")
    def ensure(session: Session):
        yield from ensure_template(session, preset)
    return ensure


def cache_path(key: str):
    digest = hashlib.sha256(f"{__version__}|{key}".encode()).hexdigest()[:24]
    return cache_dir() / "preset-templates" / f"{digest}.json"


def preset_key(request: ModelRequest) -> str:
    """The cache key of the presets' template on a model (every preset shares one recipe)."""
    return config_key(request, config_from_form(PRESETS[0].template_form()))


def warm_up(request: ModelRequest) -> Optional[WarmBuild]:
    """Build the presets' template on ``request``'s model in the background, unless cached or switched off
    (FNWEB_PRESET_WARMUP=0); the build, or None."""
    if os.environ.get("FNWEB_PRESET_WARMUP", "1") == "0":
        return None
    key = preset_key(request)
    return WARMUP.start(request, config_from_form(PRESETS[0].template_form()), key, cache_path(key))


def ensure_template(session: Session, preset: Preset):
    """Select the preset's template (from the session, the cache, or a fresh build); stream progress.

    A Stop or a failure raises, which keeps the chained comparison from running."""
    lm = session.require_model()
    if not is_embedded(lm.model_id):
        gr.Warning(f"Presets were made on the embedded model; on {lm.model_id} other components may matter.")
    config = config_from_form(preset.template_form())
    key = config_key(session.model, config)
    entry = session.find_key(key)
    if entry is None:
        yield from follow_warmup(session, key)
    if entry is None and cache_path(key).exists():
        entry = _from_cache(session, key, config)
    if entry is None:
        for view in build_job(session, config, "Building the preset template (once)", "preset"):
            if view.stopped:
                raise Stopped()
            if not view.done:
                yield {"status": view.status_html()}
        entry = view.result[0]
        entry.template.save(cache_path(key))
    session.select(entry.name)
    yield {"status": render.message_html("info", f"Template '{entry.name}' ready; generating…"),
           "template": template_choices(session), "components": gr.update(value=list(preset.components))}


def follow_warmup(session: Session, key: str):
    """While the start-up build of this template runs, show its progress (Stop ends the wait, not the build)."""
    build = WARMUP.get(key)
    if build is None or build.finished.is_set():
        return
    job = session.job = Job()
    try:
        while not build.finished.wait(TICK):
            job.flag().check()
            yield {"status": render.progress_html(build.progress, build.elapsed, WARMING, phases=render.BUILD_PHASES)}
    finally:
        session.finish(job)


def _from_cache(session: Session, key: str, config):
    try:
        template = Template.load(cache_path(key))
    except FnwebError:
        return None  # unreadable: build afresh (and overwrite it)
    return session.add(template, "preset", config_label(config), key)
