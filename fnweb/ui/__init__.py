"""The fnweb web app (Gradio): a model bar above one tab per task, over the engine in ``fnweb``.

``build_app()`` assembles the page: the model bar (model, dtype, Load, status, and
the visitor's template picker), then the tabs listed in ``TABS``, in order. The
engine never imports this package; handlers here only parse inputs, call the engine
and format its results.

Adding a tab
------------
Write ``fnweb/ui/<name>_tab.py`` with one builder and add one line to ``TABS``::

    ("Experiments", "fnweb.ui.experiments_tab:build_experiments_tab"),

The builder is called inside its ``gr.Tab`` as ``build_x_tab(ctx: UiContext)``; it
creates its components, wires its events and returns an object holding its
components (stored in ``ctx.tabs[title]`` for the tabs after it). What ``ctx`` gives:

- ``ctx.session``: the ``gr.State`` holding the visitor's ``fnweb.ui.state.Session``
  (``session.require_model()`` -> the loaded model or a clear error;
  ``session.get(name)`` -> a ``SessionTemplate`` with ``.template``;
  ``session.add(template, origin, label)`` keeps a new template; ``session.job``
  is what the Stop buttons act on). Never keep visitor data in module globals.
- ``ctx.template``: the template picker (``gr.Dropdown`` of the visitor's template
  names). Read it as an input; listen to ``ctx.template.change`` to redraw. After
  adding templates, return ``fnweb.ui.model_bar.template_choices(session)`` to it.
- ``ctx.model``: the model bar's components (``model_id``, ``dtype``, ``load``,
  ``status``); ``ctx.model.status.change`` fires after every (re)load.
- ``ctx.page``: the ``gr.Tabs``; return ``gr.Tabs(selected="compare")`` to it to switch tab.
  A tab object with a ``connect(ctx)`` method has it called once every tab is built
  (to wire events into later tabs).
- ``ctx.model_queue`` / ``ctx.model_jobs``: pass them as ``concurrency_id`` /
  ``concurrency_limit`` to every event that runs the model, so that model work
  shares one bounded queue.
- Long work: run it through ``fnweb.ui.jobs.stream`` inside a function decorated
  with ``fnweb.ui.jobs.gpu(duration=...)`` (ZeroGPU; nothing elsewhere), with a
  ``jobs.Job`` kept in ``session.job`` so Stop works; show ``render.progress_html``;
  turn failures into messages with ``feedback.page_error`` / ``feedback.handled``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .. import __version__
from ..access import forbid_implicit_token, multi_user
from .model_bar import ModelBar, build_model_bar, cache_status, load_default, load_selected
from .state import Session, delete_session
from .theme import launch_options as look_options
from .uploads import max_upload_bytes

__all__ = ["TABS", "UiContext", "build_app", "launch_options"]

# (tab title, "module:builder"), in page order. Later tabs plug in with one line each.
TABS: list[tuple[str, str]] = [
    ("Templates", "fnweb.ui.templates_tab:build_templates_tab"),
    ("Networks", "fnweb.ui.networks_tab:build_networks_tab"),
    ("Compare", "fnweb.ui.compare_tab:build_compare_tab"),
    ("Experiments", "fnweb.ui.experiments_tab:build_experiments_tab"),
    ("Fine-tune", "fnweb.ui.finetune_tab:build_finetune_tab"),
    ("Share", "fnweb.ui.share_tab:build_share_tab"),
]

MODEL_QUEUE = "model"


def model_jobs() -> int:
    """How many model jobs may run at once (jobs on the same model still take turns)."""
    return max(1, int(os.environ.get("FNWEB_MODEL_JOBS", "2")))


@dataclass
class UiContext:
    """What every tab builder receives (see the module docstring)."""

    session: gr.State
    model: ModelBar
    model_queue: str = MODEL_QUEUE
    model_jobs: int = field(default_factory=model_jobs)
    tabs: dict[str, Any] = field(default_factory=dict)
    page: Any = None  # the gr.Tabs holding every tab (an output that switches tab: gr.Tabs(selected="compare"))

    @property
    def template(self) -> gr.Dropdown:
        return self.model.template


INTRO = (
    "Find **functional networks** in a language model (ICA of its MLP neurons), look at where they live, "
    "and see what happens when you switch them off (**lesion**), keep only them (**preserve**), "
    "or switch off as many **random** neurons."
)


def _builder(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def launch_options() -> dict:
    """Keyword arguments for ``demo.launch``: the page's look, and the largest upload Gradio accepts."""
    return {**look_options(), "max_file_size": max_upload_bytes()}


def build_app(tabs: list[tuple[str, str]] | None = None) -> gr.Blocks:
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
        gr.Markdown(f"# fnweb · functional networks\n{INTRO}", elem_id="fn-header")
        ctx = UiContext(session=session, model=build_model_bar())
        with gr.Tabs(elem_id="fn-tabs") as ctx.page:
            for title, spec in tabs or TABS:
                with gr.Tab(title, id=title.lower(), elem_id=f"fn-tab-{title.lower()}"):
                    ctx.tabs[title] = _builder(spec)(ctx)
        for tab in ctx.tabs.values():  # events between tabs, wired once every tab exists
            if callable(getattr(tab, "connect", None)):
                tab.connect(ctx)
        gr.Markdown(f"fnweb {__version__} · models are shared read-only; your templates stay in your session.",
                    elem_classes="fn-note")
        bar = ctx.model
        bar.load.click(load_selected, [session, bar.model_id, bar.dtype], bar.status, api_name="load_model",
                       concurrency_id="load", concurrency_limit=1)
        bar.timer.tick(cache_status, [session, bar.status], bar.status, queue=False, api_visibility="private")
        demo.load(load_default, session, bar.status, api_visibility="private", concurrency_id="load",
                  concurrency_limit=1)
    return demo
