"""The fnweb web app (Gradio): a model bar above one tab per task, over the engine in ``fnweb``.

``build_app()`` assembles the page: the model bar (model, dtype, Load, status, and
the visitor's template picker), the Demo strip (``fnweb.ui.presets``, whose buttons
fill two tabs' forms), the tabs listed in ``TABS``, in order, Compare's and Experiments'
sharing rows (``fnweb.ui.link_row``, ``fnweb.ui.experiment_link_row``), and the "Saved in
this browser" panel (``fnweb.ui.saved``, which restores the visitor's items after the page's load). The engine never
imports this package; handlers here only parse inputs, call the engine and format its
results. Tabs never import each other: what two tabs share lives in ``forms``,
``runner``, ``feedback``, ``render`` or ``state``.

Adding a tab
------------
Write ``fnweb/ui/<name>_tab.py`` with one builder and add one line to ``TABS``::

    ("Experiments", build_experiments_tab),

The builder is called inside its ``gr.Tab`` as ``build_x_tab(ctx: UiContext)``; it
creates its components and returns a ``forms.Tab``: its settings as a ``forms.Form``
(config field name -> component), its other parts by name, and the part its actions
report in (stored in ``ctx.tabs[title]`` for the tabs after it; ``tab.prompt`` reads a
field or part by name). What ``ctx`` gives:

- ``ctx.session``: the ``gr.State`` holding the visitor's ``fnweb.ui.state.Session``
  (``session.require_model()`` -> the loaded model or a clear error;
  ``session.get(name)`` -> a ``SessionTemplate`` with ``.template``;
  ``session.add(template, origin, label)`` keeps a new template; ``session.job``
  is what the Stop buttons act on). Never keep visitor data in module globals.
- ``ctx.template``: the template picker (``gr.Dropdown`` of the visitor's template
  names). Read it as an input (or put it in a form); listen to ``ctx.template.change``
  to redraw. After adding templates, return ``fnweb.ui.model_bar.template_choices(session)`` to it.
- ``ctx.model``: the model bar's components (``model_id``, ``dtype``, ``load``,
  ``status``); ``ctx.model.status.change`` fires after every (re)load.
- ``ctx.page``: the ``gr.Tabs``; return ``gr.Tabs(selected="compare")`` to it to switch tab.
  A tab whose ``connect`` is set has it called with ``ctx`` once every tab is built
  (to wire events into later tabs).
- ``ctx.visitor``: the browser's key (``gr.BrowserState``) that finds the visitor's runs
  and saved items (``fnweb.ui.saved``); ``ctx.demo``: the Demo strip under the model bar;
  ``ctx.blocks[title]``: a tab's ``gr.Tab`` (``with ctx.blocks["Compare"]:`` adds parts at its foot).
- ``ctx.model_work``: pass it (``**ctx.model_work``) to every event that runs the
  model, so that model work shares one bounded queue.

Wiring: ``forms.on(trigger, handler, inputs, outputs)``; a handler takes a form as one
dict and gives back a dict of named outputs; ``feedback.action("part")`` shows its
failures in that part and a toast, never as a red overlay. Long work: run it with
``runner.run(session, device_fn, *args, title=...)``, where ``device_fn`` is decorated
with ``jobs.gpu(duration=...)`` (ZeroGPU; nothing elsewhere) and streams through
``jobs.stream``; each view's ``status_html()`` is the status line (waiting and its place
in the line, or the phase, n of N and time left).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from .. import __version__
from ..access import forbid_implicit_token, multi_user
from . import in_view
from .api import add_api, mcp_available
from .compare_tab import build_compare_tab
from .experiment_link_row import build_experiment_link_row
from .experiments_tab import build_experiments_tab
from .finetune_tab import build_finetune_tab
from .forms import on
from .jobs import model_jobs
from .link_row import build_link_row
from .model_bar import ModelBar, build_model_bar, cache_status, load_default, load_selected, shown_model
from .networks_tab import build_networks_tab
from .present import build_presentation_toggle
from .presets import wire_presets
from .saved import visitor_state, wire_saved
from .share_tab import build_share_tab
from .state import Session, delete_session
from .templates_tab import build_templates_tab
from .theme import launch_options as look_options
from .uploads import max_upload_bytes

__all__ = ["TABS", "UiContext", "build_app", "launch_options"]

# (tab title, builder), in page order. Later tabs plug in with one line each.
TABS: list[tuple[str, Callable]] = [
    ("Templates", build_templates_tab),
    ("Networks", build_networks_tab),
    ("Compare", build_compare_tab),
    ("Experiments", build_experiments_tab),
    ("Fine-tune", build_finetune_tab),
    ("Share", build_share_tab),
]

MODEL_QUEUE = "model"


def model_events() -> int:
    """How many model events Gradio lets in at once: the jobs that run (``jobs.model_jobs``) and those that wait
    their turn in ``jobs.TURNS``, where they can say so (FNWEB_MODEL_WAITING more, default 8)."""
    return model_jobs() + max(0, int(os.environ.get("FNWEB_MODEL_WAITING", "8")))


@dataclass
class UiContext:
    """What every tab builder receives (see the module docstring)."""

    session: gr.State
    model: ModelBar
    model_queue: str = MODEL_QUEUE
    model_events: int = field(default_factory=model_events)
    tabs: dict[str, Any] = field(default_factory=dict)
    page: Any = None  # the gr.Tabs holding every tab (an output that switches tab: gr.Tabs(selected="compare"))
    visitor: Any = None  # the browser's key (gr.BrowserState): the visitor's runs and saved items
    demo: Any = None  # the Demo strip under the model bar (a gr.Column the presets fill)
    blocks: dict[str, Any] = field(default_factory=dict)  # each tab's gr.Tab, to add parts at its foot later

    @property
    def template(self) -> gr.Dropdown:
        return self.model.template

    @property
    def model_work(self) -> dict:
        """Event keywords for model work: one shared queue (jobs take their turns in ``jobs.TURNS``)."""
        return {"concurrency_id": self.model_queue, "concurrency_limit": self.model_events}


INTRO = (
    "Find **functional networks** in a language model (ICA of its MLP neurons), look at where they live, "
    "and see what happens when you switch them off (**lesion**), keep only them (**preserve**), "
    "or switch off as many **random** neurons."
)


def launch_options() -> dict:
    """Keyword arguments for ``demo.launch``: the page's look, the largest upload Gradio accepts, and the MCP server
    (where the ``mcp`` package is installed, unless FNWEB_MCP=0)."""
    mcp = mcp_available() and os.environ.get("FNWEB_MCP", "1") != "0"
    return {**look_options(), "max_file_size": max_upload_bytes(), "mcp_server": mcp}


def build_app(tabs: list[tuple[str, Callable]] | None = None) -> gr.Blocks:
    """The whole page; call ``.queue(...)`` and ``.launch(**launch_options())`` on it (see app.py).

    Serving many visitors (``fnweb.access``), it first stops every library from sending the
    server's own Hugging Face token on a visitor's behalf.
    """
    if multi_user():
        forbid_implicit_token()
    with gr.Blocks(title="fnweb: functional networks in language models") as demo:
        # A value, not a factory: Gradio re-runs a factory at page load, which would replace the session
        # that the model bar's own load event fills. Session.__deepcopy__ gives each visitor a fresh one.
        session = gr.State(Session(), delete_callback=delete_session)
        with gr.Row(equal_height=False, elem_classes="fn-header-row"):
            gr.Markdown(f"# fnweb · functional networks\n{INTRO}", elem_id="fn-header")
            build_presentation_toggle(demo)
        ctx = UiContext(session=session, model=build_model_bar(), visitor=visitor_state())
        ctx.demo = gr.Column(elem_classes="fn-presets", elem_id="fn-demo")  # on the first screen of every tab
        with gr.Tabs(elem_id="fn-tabs") as ctx.page:
            for title, builder in tabs or TABS:
                with gr.Tab(title, id=title.lower(), elem_id=f"fn-tab-{title.lower()}") as ctx.blocks[title]:
                    ctx.tabs[title] = builder(ctx)
        for tab in ctx.tabs.values():  # events between tabs, wired once every tab exists
            if callable(getattr(tab, "connect", None)):
                tab.connect(ctx)
        if "Templates" in ctx.tabs and "Compare" in ctx.tabs:
            wire_presets(ctx)  # presets fill the Templates and Compare forms by name
        in_view.wire(ctx)
        add_api(ctx.model_work, session)  # the typed endpoints (and MCP tools): standalone calls on the session
        bar = ctx.model
        status = {"status": bar.status}
        loading = on(bar.load.click, load_selected, [session, bar.model_id, bar.dtype], status, api_name="load_model",
                     concurrency_id="load", concurrency_limit=1)
        # Success or not, the Model box then shows the model in use (a failed id stays named in the status line).
        loading.then(shown_model, [session], [bar.model_id, bar.dtype], queue=False, api_visibility="private",
                     show_progress="hidden")
        on(bar.timer.tick, cache_status, [session, bar.status], status, queue=False, api_visibility="private")
        loaded = on(demo.load, load_default, [session], status, api_visibility="private", concurrency_id="load",
                    concurrency_limit=1)
        restored = wire_saved(ctx, loaded)["restored"]  # then the visitor's saved items, then a link
        if "Compare" in ctx.tabs:
            with ctx.blocks["Compare"]:
                build_link_row(ctx, restored)
        if "Experiments" in ctx.tabs:
            with ctx.blocks["Experiments"]:
                build_experiment_link_row(ctx, restored)
        gr.Markdown(f"fnweb {__version__} · models are shared read-only; what you make is kept for your browser "
                    "only.", elem_classes="fn-note")
    return demo
