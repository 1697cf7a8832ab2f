"""The card panel of the Networks tab: a component's card, cards made on demand, and a text search.

``show_card`` draws the picked component's card (or every label, for all components)
from the template's stored cards: no model work, so it is instant. For a template
without them, "Make cards" runs ``fnweb.explain.cards_on_demand`` as a stoppable job
and keeps the result on the visitor's template (and in its download). "Search" reads
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
from ..errors import FnwebError, Stopped
from ..explain import ON_DEMAND_SAMPLES, cards_on_demand, search_text
from ..models import ModelRequest, load_model
from ..templates import Template
from . import render
from .cards_view import CLICK_JS, CSS, card_html, overview_html, search_html
from .feedback import handled, page_error
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
    ctx.template.change(show_card, shown, [card, make], api_name="show_card")
    component.input(show_card, shown, [card, make], api_visibility="private")
    make.click(make_cards, shown, [status, card, make], api_name="make_cards",
               concurrency_id=ctx.model_queue, concurrency_limit=ctx.model_jobs)
    search.click(run_search, [ctx.session, ctx.template, query], card, api_name="search_networks",
                 concurrency_id=ctx.model_queue, concurrency_limit=ctx.model_jobs)
    query.submit(run_search, [ctx.session, ctx.template, query], card, api_visibility="private",
                 concurrency_id=ctx.model_queue, concurrency_limit=ctx.model_jobs)
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


@handled
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


def make_cards(session: Session, name: Optional[str], component):
    """Make cards button: streams progress, then keeps the cards on the template and shows them."""
    skip, job = gr.skip(), None
    try:
        session.require_model()
        entry = session.get(name)
        job = session.job = Job()
        for update in cards_on_device(session.model, entry.template, job):
            if update.kind == "done":
                entry.template.cards = update.value.to_dict()
                entry.template.save(entry.path)  # the download has them too
                card, button = show_card(session, name, component)
                yield render.message_html("ok", "Cards made on demand."), card, button
                return
            yield render.progress_html(update.value if update.kind == "event" else None, update.elapsed,
                                       "Making cards", waiting=update.kind == "waiting"), skip, skip
    except Stopped:
        yield render.message_html("stopped", "Stopped; no cards were made."), skip, skip
    except Exception as exc:
        error = page_error(exc)
        yield render.message_html("error", error.message), skip, skip
        raise error from exc
    finally:
        session.finish(job)


@gpu(duration=30)
def search_on_device(request: ModelRequest, template: Template, cards: Cards, text: str, job: Job):
    lm = load_model(request)

    def work(emit, stop):
        why = tokenizer_mismatch(cards, lm.tokenizer)
        if why:
            raise FnwebError(f"{why} Make cards with this model (Make cards) to search with it.")
        return search_text(lm, template, cards, text, stop)

    yield from stream(work, lm.model, job)


@handled
def run_search(session: Session, name: Optional[str], text):
    """Search: every component's signal on the text, ranked, the top ones shaded."""
    if not isinstance(text, str) or not text.strip():
        raise FnwebError("The search text is empty: type a word or paste a text.")
    session.require_model()
    cards, _ = session_cards(session, name)
    if cards is None:
        raise FnwebError("This template has no cards to search with: press Make cards first.")
    job = session.job = Job()
    try:
        for update in search_on_device(session.model, session.get(name).template, cards, text, job):
            if update.kind == "done":
                return search_html(update.value, cards.labels())
    finally:
        session.finish(job)
    raise FnwebError("The search ended without a result: press Search again.")


@handled
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
