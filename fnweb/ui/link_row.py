"""Compare's sharing row: Copy link, the link itself, Markdown and JSON exports, and opening a link.

"Copy link" reads the Compare form as it stands (so the link is what Generate would
run), names the template by its reference (``fnweb.ui.links``), and the browser turns
the query into the page's full address, shows it and copies it to the clipboard. A
page opened with such a link (after the model bar's load and the restore of saved
items, ``fnweb.ui.saved``) loads the link's model when it is another, finds the
template (the presets' one from the cache, a Hub template, or one saved in this
browser), fills the Compare form, switches to Compare and says "press Generate" in the
status line beside Generate, which it brings into view. A bad or foreign link is one
message there (and a toast); the page stays usable. "Export"
writes the last finished comparison as Markdown (texts and metrics) and JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import gradio as gr

from ..access import check_hub_id
from ..compare_record import markdown, to_json
from ..errors import FnwebError
from ..hub import load_template_from_hub
from ..ids import EMBEDDED_ID
from ..io import write_atomic
from ..models import ModelRequest, load_model
from ..templates import Template
from . import in_view, links, render
from .compare_tab import settings_from_form
from .feedback import action, failure
from .forms import on
from .model_bar import status_html, template_choices
from .presets import cache_path, preset_key
from .saved import form_outputs
from .state import Session, unique_name

# The page was opened with a comparison's link (an experiment's says kind=experiment).
LINKED_JS = '(q => q.has("m") && [null, "comparison"].includes(q.get("kind")))(new URLSearchParams(location.search))'
# The browser's half of Copy link: the page's own address with the query, shown and copied.
COPY_JS = """(query) => {
  if (!query) return "";
  const url = window.location.origin + window.location.pathname + "?" + query;
  if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
  return url;
}"""


def build_link_row(ctx, restored) -> dict:
    """The row at the foot of the Compare tab (call inside it); a link is opened after ``restored``."""
    compare = ctx.tabs["Compare"]
    with gr.Row(equal_height=False, elem_id="fn-link-row"):
        copy, link = link_parts("fn-", "Link to this comparison", "Generate")
        export = gr.Button("Export (Markdown, JSON)", size="sm", elem_id="fn-export", scale=0, min_width=180)
    files = gr.File(label="Exported comparison", file_count="multiple", interactive=False, visible=False,
                    elem_id="fn-export-files")
    note = gr.HTML("", elem_id="fn-link-note")
    wire_copy(copy, link, note, link_query, ctx.session, compare.form)
    on(export.click, export_comparison, [ctx.session], {"note": note, "files": files}, api_visibility="private")
    outputs = {"note": compare.status, "template": ctx.template, "page": ctx.page, "status": ctx.model.status,
               **{f"compare.{n}": compare.form[n] for n in compare.form.names if n != "template"}}
    on(restored.then, open_link, [ctx.session], outputs, api_visibility="private")
    in_view.follow(restored.then, "fn-compare-status", ".fn-msg", when=LINKED_JS)  # Generate in view
    return {"copy": copy, "link": link, "export": export, "files": files, "note": note}


def link_parts(prefix: str, label: str, run_word: str) -> tuple[gr.Button, gr.Textbox]:
    """A Copy link button and the link's box (call inside a row); element ids start with ``prefix``."""
    copy = gr.Button("Copy link", size="sm", elem_id=f"{prefix}copy-link", scale=0, min_width=120)
    link = gr.Textbox(label=label, interactive=False, buttons=["copy"], scale=4, elem_id=f"{prefix}link",
                      placeholder=f"Press Copy link: open it anywhere, press {run_word}")
    return copy, link


def wire_copy(copy: gr.Button, link: gr.Textbox, note: gr.HTML, make_query, session, form) -> None:
    """Copy link: ``make_query(session, form)`` writes the query and a note; the browser makes the query the
    page's full address, shows it in ``link`` and copies it."""
    query = gr.Textbox(visible=False)
    made = on(copy.click, make_query, [session, form], {"note": note, "query": query}, api_visibility="private")
    made.success(None, [query], [link], js=COPY_JS, queue=False, show_progress="hidden")


# ---- making a link, exporting -------------------------------------------------------------


@action("note")
def link_query(session: Session, form: dict):
    """The query of a link to what the Compare form would run now."""
    settings = settings_from_form(form)
    lm = session.require_model()
    entry = session.get(form["template"]) if any(c != "baseline" for c in form["columns"] or []) else None
    if form.get("run"):
        raise FnwebError("A fine-tuned run cannot go into a link (runs stay with their owner): clear the run "
                         "column, then copy the link again.")
    setup = links.setup_of(lm.model_id, session.model.dtype, entry.name if entry else None,
                           links.template_ref(entry), form, settings)
    ref = links.template_ref(entry) or ""
    text = "Link copied: whoever opens it gets this comparison set up, and presses Generate."
    if ref.startswith("saved:"):
        text = "Link copied. Its template is saved in this browser only: elsewhere, share the template on the " \
               "Hub first (Share tab) and copy the link again."
    return {"note": render.message_html("ok", text), "query": links.query(setup)}


@action("note")
def export_comparison(session: Session):
    """The last finished comparison as Markdown and JSON files."""
    data = session.last_comparison
    if data is None:
        raise FnwebError("No finished comparison to export yet: press Generate and let it finish.")
    stem = session.folder / unique_name("comparison")
    md = write_atomic(stem.with_suffix(".md"), markdown(data))
    js = write_atomic(stem.with_suffix(".json"), to_json(data))
    return {"note": render.message_html("ok", "Exported the last comparison: texts and metrics."),
            "files": gr.update(value=[str(md), str(js)], visible=True)}


# ---- opening a link ---------------------------------------------------------------------------


@action()
def open_link(session: Session, request: gr.Request):
    """Page load with a link: restore its comparison (model, template, form); a bad link says why, in place."""
    opened = opened_link(session, request, links.is_link, links.parse, "compare")
    if opened.outputs is not None:
        return opened.outputs
    link, entry, status = opened.link, opened.entry, opened.status
    if entry is not None:
        session.select(entry.name)
    setup = {"prompt": link.form["prompt"], "components": link.form["components"], "columns": link.form["columns"],
             "settings": {"max_new_tokens": link.form["max_new_tokens"], "greedy": link.form["decoding"] == "greedy",
                          "temperature": link.form["temperature"], "seed": link.form["seed"],
                          "random_draws": link.form["draws"], "preserve_scope": link.form["preserve_scope"],
                          "alpha": link.form["alpha"], "control_of": link.form["control_of"],
                          "control": link.form["control"]}}
    where = f" with the template '{entry.name}'" if entry else ""
    note = render.message_html("ok", f"Restored from a link: {link.model}{where}. Press Generate.")
    return {**form_outputs(setup, session), "note": note, "page": gr.Tabs(selected="compare"),
            "template": template_choices(session), **({"status": status} if status else {})}


@dataclass
class Opened:
    """A link on the page's address, read: its outputs to return as they are (no link, or what was wrong with it),
    or the link with its model loaded (``status``: the bar's new line, or None) and its template found."""

    outputs: Optional[dict] = None
    link: object = None
    entry: object = None
    status: Optional[str] = None


def opened_link(session: Session, request: gr.Request, recognise: Callable[[dict], bool],
                parse: Callable[[dict], object], tab: str) -> Opened:
    """Read a link of one kind (``recognise``, ``parse``), load its model and find its template; a bad one is
    one message in the ``note`` of the ``tab`` it belongs to."""
    params = dict(request.query_params) if request is not None else {}
    if not recognise(params):
        return Opened(outputs={})
    try:
        link = parse(params)
        status = load_link_model(session, link.model)
        entry = find_link_template(session, link)
    except FnwebError as exc:
        text, _ = failure(exc)
        return Opened(outputs={"note": render.message_html("error", text), "page": gr.Tabs(selected=tab)})
    return Opened(link=link, entry=entry, status=status)


def load_link_model(session: Session, model_id: str) -> Optional[str]:
    """Load the link's model for this visitor when it is another; the bar's new status line, or None."""
    if session.model is not None and session.model.model_id == model_id:
        return None
    if model_id != EMBEDDED_ID:
        check_hub_id(model_id, "a link's model")
    request = ModelRequest(model_id=model_id)
    request.validate()
    lm = load_model(request)
    session.model = request
    return status_html("Loaded " + lm.summary_line())


def find_link_template(session: Session, link: links.Link):
    """The link's template in this session (found, loaded from the cache or the Hub), or None when none is needed."""
    if not link.template:
        return None
    if link.saved_id is not None:
        entry = session.find_saved(link.saved_id)
        if entry is None:
            raise FnwebError("This link names a template saved in another browser (or deleted since): templates "
                             "are never shared between visitors. Ask for a link to a template on the Hub.")
        return entry
    if link.hub is not None:
        repo_id, revision = link.hub
        found = next((t for t in session.templates.values() if t.source == link.template), None)
        template = found.template if found else load_template_from_hub(repo_id, revision=revision)
        return found or session.add(template, "from the Hub", f"{repo_id} (Hub)", source=link.template)
    key = preset_key(session.model)
    entry = session.find_key(key)
    if entry is None and cache_path(key).exists():
        entry = session.add(Template.load(cache_path(key)), "preset", "Demo preset template", key)
    if entry is None:
        raise FnwebError("This link uses the demo presets' template, which this server has not built yet: press "
                         "any Demo preset once (it builds it), then open the link again.")
    return entry
