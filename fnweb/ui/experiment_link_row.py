"""The Experiments tab's sharing row: Copy link, the link itself, and opening an experiment's link.

"Copy link" reads the Experiments form as it stands (checked as Run checks it, so the
link is what Run would do), names the template by its reference (``fnweb.ui.links``)
and writes the query (``fnweb.ui.experiment_links``); the browser turns it into the
page's full address, shows it and copies it (Compare's ``COPY_JS``). A page opened with
such a link (after the restore of saved items) loads the link's model when it is
another, finds the template as a comparison's link does (``fnweb.ui.link_row``), fills
the Experiments form, switches to the tab and says "press Run experiment" in its status
line, which it brings into view. A bad or foreign link is one message there; the page
stays usable.
"""

from __future__ import annotations

import gradio as gr

from . import experiment_links, in_view, links, render
from .evidence_form import DEFAULTS
from .experiments_tab import plan_from_form
from .feedback import action
from .forms import on
from .link_row import link_parts, opened_link, wire_copy
from .model_bar import template_choices
from .state import Session

NOT_SHARED = ("template", "files")  # the template travels as its reference; uploaded files never travel
LINKED_JS = '(new URLSearchParams(location.search)).get("kind") === "experiment"'


def build_experiment_link_row(ctx, restored) -> dict:
    """The row at the foot of the Experiments tab (call inside it); a link is opened after ``restored``."""
    tab = ctx.tabs["Experiments"]
    with gr.Row(equal_height=False, elem_id="fn-exp-link-row"):
        copy, link = link_parts("fn-exp-", "Link to this experiment's setup", "Run experiment")
    note = gr.HTML("", elem_id="fn-exp-link-note")
    wire_copy(copy, link, note, experiment_link_query, ctx.session, tab.form)
    outputs = {"note": tab.status, "template": ctx.template, "page": ctx.page, "status": ctx.model.status,
               **{f"experiments.{n}": tab.form[n] for n in tab.form.names if n not in NOT_SHARED}}
    on(restored.then, open_experiment_link, [ctx.session], outputs, api_visibility="private")
    in_view.follow(restored.then, "fn-exp-status", ".fn-msg", when=LINKED_JS)  # Run experiment in view
    return {"copy": copy, "link": link, "note": note}


@action("note")
def experiment_link_query(session: Session, form: dict):
    """The query of a link to what Run experiment would do now."""
    plan_from_form(form)
    lm = session.require_model()
    entry = session.get(form["template"])
    ref = links.template_ref(entry)
    query = experiment_links.query(lm.model_id, ref, form)
    text = "Link copied: whoever opens it gets this experiment set up, and presses Run experiment."
    if form.get("files"):
        text += " Your uploaded prompt files are not in it (they stay on this server): only the built-in sets are."
    if (ref or "").startswith("saved:"):
        text += (" Its template is saved in this browser only: elsewhere, share the template on the Hub first "
                 "(Share tab) and copy the link again.")
    return {"note": render.message_html("ok", text), "query": query}


@action()
def open_experiment_link(session: Session, request: gr.Request):
    """Page load with an experiment's link: restore its setup (model, template, form); a bad link says why."""
    opened = opened_link(session, request, experiment_links.is_experiment_link, experiment_links.parse,
                         "experiments")
    if opened.outputs is not None:
        return opened.outputs
    link, entry, status = opened.link, opened.entry, opened.status
    session.select(entry.name)
    changed = [f"{name.replace('_', ' ')} {link.form[name]}" for name, value in DEFAULTS.items()
               if link.form.get(name) != value]
    options = f" Evidence options (open them to see): {', '.join(changed)}." if changed else ""
    note = render.message_html("ok", f"Restored from a link: {link.model} with the template '{entry.name}'."
                                     f"{options} Press Run experiment.")
    return {**{f"experiments.{name}": value for name, value in link.form.items()}, "note": note,
            "page": gr.Tabs(selected="experiments"), "template": template_choices(session),
            **({"status": status} if status else {})}
