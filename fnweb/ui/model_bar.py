"""The bar above the tabs: which model (and dtype) this visitor works with, and which template.

Loading goes through ``fnweb.models.load_model``, whose cache shares a model between
visitors who ask for the same one; the visitor's choice is kept in their session. The
cache is bounded: when it unloads this visitor's model to make room for another, the
status line says so (a timer looks every ``STATUS_EVERY`` seconds), and again when the
model's next use has loaded it back. On an app serving many visitors the model is a Hub
id (public: nothing loads with the server's token) or the embedded model, never a path
on the server. The bar also holds the template picker that every tab reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..access import check_hub_id
from ..embedded import embedded_available
from ..errors import FnwebError
from ..ids import EMBEDDED_HUB_ID, EMBEDDED_ID, is_embedded
from ..models import DTYPES, ModelRequest, cache_note, is_loaded, load_model
from .feedback import action, explain
from .render import esc
from .state import Session

STATUS_EVERY = 20  # seconds between looks at whether the cache unloaded this visitor's model
SUGGESTED_MODELS = [EMBEDDED_ID, EMBEDDED_HUB_ID, "HuggingFaceTB/SmolLM2-360M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"]


def default_model_id() -> str:
    """The embedded model where it is installed (or already converted), else its original on the Hub.

    A Space installs requirements.txt only, which cannot hold the embedded package (it must be
    installed without its dependencies); there the Hub copy of the same model is the default.
    """
    if embedded_available():
        return EMBEDDED_ID
    return EMBEDDED_HUB_ID


@dataclass
class ModelBar:
    model_id: gr.Dropdown
    dtype: gr.Dropdown
    load: gr.Button
    status: gr.HTML
    template: gr.Dropdown  # the visitor's template picker, shared by every tab
    timer: gr.Timer  # refreshes the status when the shared cache unloads or reloads the model


def build_model_bar() -> ModelBar:
    with gr.Row(elem_classes="fn-bar-row", equal_height=True):
        model_id = gr.Dropdown(
            SUGGESTED_MODELS, value=default_model_id(), allow_custom_value=True, label="Model",
            info="The embedded SmolLM2-135M, any Hub id, or a local folder", scale=4, min_width=260,
        )
        dtype = gr.Dropdown(list(DTYPES), value="auto", label="dtype", info="auto: float32 on CPU", scale=1,
                            min_width=110)
        load = gr.Button("Load model", variant="primary", scale=1, min_width=120, elem_classes="fn-load")
        template = gr.Dropdown([], value=None, label="Template", allow_custom_value=True, scale=3, min_width=220,
                               info="Yours: built or uploaded in the Templates tab", elem_id="fn-template-picker")
    status = gr.HTML(status_html(None), elem_id="fn-model-status")
    return ModelBar(model_id, dtype, load, status, template, gr.Timer(STATUS_EVERY))


def status_html(summary: str | None, kind: str = "ok") -> str:
    if summary is None:
        return '<div class="fn-status fn-status-idle">No model loaded yet: press <b>Load model</b>.</div>'
    return f'<div class="fn-status fn-status-{kind}">{esc(summary)}</div>'


@action("status", render_message=lambda kind, text: status_html(text, kind))
def load_selected(session: Session, model_id: str, dtype: str):
    """Load the chosen model for this visitor (streams 'Loading…' first); a failure shows in the status line."""
    yield from _load(session, model_id, dtype)


def _load(session: Session, model_id: str, dtype: str):
    model_id = (model_id or "").strip()
    if not is_embedded(model_id):
        check_hub_id(model_id, "the model")
    request = ModelRequest(model_id=model_id, dtype=dtype or "auto")
    request.validate()
    yield status_html(f"Loading {request.model_id} …", "busy")
    lm = load_model(request)
    session.model = request
    yield status_html("Loaded " + lm.summary_line())


@action("status", render_message=lambda kind, text: status_html(text, kind))
def load_default(session: Session):
    """On page load: give a visitor without a model the default one (a failure only shows as status)."""
    if session.model is not None:
        yield status_html("Loaded " + session.require_model().summary_line())
        return
    try:
        yield from _load(session, default_model_id(), "auto")
    except FnwebError as exc:
        yield status_html(f"The default model could not be loaded ({explain(exc)}); choose another model and "
                          "press Load.", "error")


def cache_status(session: Session, shown: str | None):
    """The status line again when the shared cache has unloaded (or reloaded) this visitor's model; else no change."""
    request = session.model
    note = cache_note(request) if request is not None else None
    if note is None:
        return gr.skip()
    if is_loaded(request):
        html = status_html(f"Loaded {session.require_model().summary_line()} ({note}).")
    else:
        html = status_html(f"{request.model_id} is not in memory now: {note}. It loads again when you next use "
                           "it (this takes a moment).", "busy")
    return gr.skip() if html == shown else html


def template_choices(session: Session):
    """An update for a template picker: this visitor's templates, the selected one chosen."""
    return gr.update(choices=session.names(), value=session.selected)
