"""The card panel of the Networks tab: a component's card, cards made on demand, and a text search.

``show_card`` draws the picked component's card (or every label, for all components)
from the template's stored cards: no model work, so it is instant. For a template
without them, "Make cards" runs ``fnweb.explain.cards_on_demand`` through the app's job
runner (``fnweb.ui.runner``) and keeps the result on the visitor's template (and in its download). "Search" reads
every component's signal on a typed text (the model runs once over it). A click on a
context sends its prompt to Compare with that component chosen; a click on a
component row picks it (``clicked``, wired by the Networks tab once Compare exists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import gradio as gr

from ..cards import Cards, tokenizer_mismatch
from ..checks import whole_number
from ..errors import FnwebError
from ..explain import ON_DEMAND_SAMPLES, cards_on_demand, search_text
from ..models import ModelRequest, load_model
from ..templates import Template
from . import render, runner
from .cards_view import CLICK_JS, CSS, card_html, overview_html, search_html
from .feedback import action
from .forms import on
from .jobs import Job, gpu, stream
from .state import Session

NO_TEMPLATE = "Build or upload a template to see what its components do."
NO_CARDS = ("This template has no stored cards (it was made by the original tool or an older fnweb). "
            f"Press Make cards to make them now: the model runs over {ON_DEMAND_SAMPLES} prompts of each of its "
            "prompt sets (of the built-in sets when those cannot be read here).")


@dataclass
class CardPanel:
    query: gr.Textbox
    search: gr.Button
    make: gr.Button
    status: gr.HTML
    card: gr.HTML


def build_card_panel(ctx, component: gr.Dropdown) -> CardPanel:
    with gr.Row(equal_height=True):
        query = gr.Textbox(label="Search: which networks does a text activate?", placeholder="a word or a text",
                           scale=4, min_width=200, elem_id="fn-card-query")
        search = gr.Button("Search", scale=1, min_width=90, elem_id="fn-card-search")
        make = gr.Button("Make cards", scale=1, min_width=110, visible=False, elem_id="fn-card-make")
    status = gr.HTML("", elem_id="fn-card-status")
    card = gr.HTML(render.message_html("info", NO_TEMPLATE), css_template=CSS, js_on_load=CLICK_JS,
                   elem_id="fn-card", max_height=900)
    panel = CardPanel(query, search, make, status, card)
    shown = [ctx.session, ctx.template, component]
    on(ctx.template.change, show_card, shown, {"card": card, "make": make}, api_name="show_card")
    on(component.input, show_card, shown, {"card": card, "make": make}, api_visibility="private")
    on(make.click, make_cards, shown, {"status": status, "card": card, "make": make}, api_name="make_cards",
       **ctx.model_work)
    searched = {"card": card, "status": status}
    on(search.click, run_search, [ctx.session, ctx.template, query], searched, api_name="search_networks",
       **ctx.model_work)
    on(query.submit, run_search, [ctx.session, ctx.template, query], searched, api_visibility="private",
       **ctx.model_work)
    return panel


def session_cards(session: Session, name: Optional[str]) -> tuple[Optional[Cards], str]:
    """The template's cards (None when it has none) and a note on them for this visitor."""
    entry = session.get(name)
    if not entry.template.cards:
        return None, ""
    try:
        cards = Cards.from_dict(entry.template.cards)
    except FnwebError as exc:
        return None, f"{exc} Press Make cards to make them again."
    loaded = session.model.model_id if session.model else None
    note = (f"These cards were made on {cards.model_id}; the loaded model is {loaded}."
            if loaded and loaded != cards.model_id else "")
    return cards, note


def _chosen(component) -> Optional[int]:
    return None if component in (None, "", "all") else whole_number(component, "A component")


@action()
def show_card(session: Session, name: Optional[str], component):
    """The picked component's card, or every label; the Make cards button when there are none."""
    if not session.has(name):
        return render.message_html("info", NO_TEMPLATE), gr.update(visible=False)
    cards, note = session_cards(session, name)
    if cards is None:
        return render.message_html("info", note or NO_CARDS), gr.update(visible=True)
    entry = session.get(name)
    chosen = _chosen(component)
    if chosen is None or chosen not in entry.template.components:
        return overview_html(cards), gr.update(visible=False)
    return card_html(entry.template, cards, chosen, entry.experiment, note), gr.update(visible=False)


@gpu(duration=180)
def cards_on_device(request: ModelRequest, template: Template, job: Job):
    """Make on-demand cards as a job: yields ``jobs.Update``s, the last ``done`` with the Cards."""
    lm = load_model(request)
    yield from stream(lambda emit, stop: cards_on_demand(lm, template, progress=emit, stop=stop), lm.model, job)


@action("status")
def make_cards(session: Session, name: Optional[str], component):
    """Make cards button: streams progress, then keeps the cards on the template and shows them."""
    session.require_model()
    entry = session.get(name)
    for view in runner.run(session, cards_on_device, entry.template, title="Making cards"):
        if view.stopped:
            yield {"status": render.message_html("stopped", "Stopped; no cards were made.")}
            return
        if not view.done:
            yield {"status": view.status_html()}
    entry.template.cards = view.result.to_dict()
    entry.template.save(entry.path)  # the download has them too
    card, button = show_card(session, name, component)
    yield {"status": render.message_html("ok", "Cards made on demand."), "card": card, "make": button}


@gpu(duration=30)
def search_on_device(request: ModelRequest, template: Template, cards: Cards, text: str, job: Job):
    lm = load_model(request)

    def work(emit, stop):
        why = tokenizer_mismatch(cards, lm.tokenizer)
        if why:
            raise FnwebError(f"{why} Make cards with this model (Make cards) to search with it.")
        return search_text(lm, template, cards, text, stop)

    yield from stream(work, lm.model, job)


@action("status")
def run_search(session: Session, name: Optional[str], text):
    """Search: every component's signal on the text, ranked, the top ones shaded."""
    if not isinstance(text, str) or not text.strip():
        raise FnwebError("The search text is empty: type a word or paste a text.")
    session.require_model()
    cards, _ = session_cards(session, name)
    if cards is None:
        raise FnwebError("This template has no cards to search with: press Make cards first.")
    for view in runner.run(session, search_on_device, session.get(name).template, cards, text, title="Searching"):
        if view.stopped:
            yield {"status": render.message_html("stopped", "Stopped; nothing was searched.")}
            return
        if not view.done:
            yield {"status": view.status_html()}
    yield {"card": search_html(view.result, cards.labels()), "status": ""}


@action()
def clicked(session: Session, name: Optional[str], evt: gr.EventData):
    """A click in the panel: a component row picks it; a context goes to Compare with its prompt and component."""
    skip = gr.skip()
    data = getattr(evt, "_data", None) or {}
    try:
        if data.get("component"):
            return str(int(data["component"])), skip, skip, skip
        if not data.get("context") or not session.has(name):
            return skip, skip, skip, skip
        component, side, index = str(data["context"]).split(":")
        cards, _ = session_cards(session, name)
        card = cards.card(component)
        context = (card.top if side == "top" else card.bottom)[int(index)]
    except (ValueError, IndexError, AttributeError) as exc:
        raise FnwebError(f"That click did not name a context of these cards ({data}); pick the component again.") \
            from exc
    prompt = cards.prompts.get(context.prompt, "")
    if not prompt:
        raise FnwebError("This context's prompt was not kept with the cards.")
    return skip, prompt, [int(component)], gr.Tabs(selected="compare")
