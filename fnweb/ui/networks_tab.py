"""The Networks tab: where the selected template's components live, how much they cover, how they overlap.

Draws the figures of ``fnweb.plots`` for the template chosen in the bar; one
component or all of them; redrawn when the template, the component or the bin count
changes. No model work: figures come from the template alone. Beside the heatmap, the
card panel (``fnweb.ui.cards_panel``) says what the picked component does.
"""

from __future__ import annotations

from typing import Optional

import gradio as gr

from .. import plots
from ..checks import whole_number
from ..errors import FnwebError
from .cards_panel import build_card_panel, clicked, show_card
from .feedback import action
from .forms import Form, Tab, on, whole
from .state import Session

ALL = "all"


def build_networks_tab(ctx) -> Tab:
    with gr.Row(equal_height=True):
        component = gr.Dropdown([("all components", ALL)], value=ALL, label="Show", scale=2, min_width=200,
                                elem_id="fn-net-component")
        bins = gr.Slider(32, 512, value=plots.MAX_BINS, step=32, label="Neuron bins per layer (at most)",
                         scale=3, min_width=240)
        note = gr.Markdown("Build or upload a template to see its networks.", elem_classes="fn-note")
    with gr.Row(equal_height=False):
        heatmap = gr.Plot(label="Membership: layer x neuron", elem_id="fn-heatmap", scale=3)
        with gr.Column(scale=2, min_width=340):
            panel = build_card_panel(ctx, component)
    with gr.Row(equal_height=False):
        coverage = gr.Plot(label="Coverage per layer", elem_id="fn-coverage-plot", scale=3)
        overlap = gr.Plot(label="Overlap (Jaccard)", elem_id="fn-overlap-plot", scale=2)
    form = Form(template=ctx.template, component=component, bins=bins)
    tab = Tab(form, "note", note=note, heatmap=heatmap, coverage=coverage, overlap=overlap, panel=panel)
    tab.connect = lambda ctx: _connect(ctx, tab)
    drawn = tab.outputs("component", "note", "heatmap", "coverage", "overlap")
    inputs = [ctx.session, ctx.template, component, bins]
    on(ctx.template.change, draw, inputs, drawn, api_name="draw_networks")
    on(component.input, draw, inputs, drawn, api_visibility="private")
    on(bins.release, draw, inputs, drawn, api_visibility="private")
    return tab


def _connect(ctx, tab: Tab) -> None:
    """Once every tab exists: a click on a context goes to Compare; a click on a component row picks it."""
    compare = ctx.tabs.get("Compare")
    if compare is None:
        return
    inputs = [ctx.session, ctx.template, tab.component, tab.bins]
    picked = on(tab.panel.card.click, clicked, [ctx.session, ctx.template],
                {"component": tab.component, "prompt": compare.prompt, "components": compare.components,
                 "page": ctx.page}, api_visibility="private")
    drawn = on(picked.success, draw, inputs, tab.outputs("component", "note", "heatmap", "coverage", "overlap"),
               api_visibility="private")
    on(drawn.success, show_card, [ctx.session, ctx.template, tab.component],
       {"card": tab.panel.card, "make": tab.panel.make}, api_visibility="private")


@action("note")
def draw(session: Session, name: Optional[str], component, bins):
    """The three figures for template ``name`` (one component, or ``all``)."""
    if not session.has(name):
        return gr.update(choices=[("all components", ALL)], value=ALL), \
            "Build or upload a template to see its networks.", None, None, None
    template = session.get(name).template
    choices = [("all components", ALL)] + [(f"component {c}", str(c)) for c in template.component_ids]
    chosen = _component(component, template.component_ids)
    bins = plots.MAX_BINS if bins in (None, "", 0) else whole(bins, "Bins per layer")
    if not 1 <= bins <= 4096:
        raise FnwebError(f"Bins per layer must lie between 1 and 4096 (got {bins}).")
    ids = template.component_ids if chosen is None else [chosen]
    union = sum(len(v) for v in template.neurons(ids).values()) if ids else 0
    note = (f"{'All components' if chosen is None else f'Component {chosen}'}: {union:,} of "
            f"{template.total_channels():,} neurons ({100 * union / max(1, template.total_channels()):.2f} %). "
            "Hover a cell for its layer, neuron range and count; the camera icon saves a PNG.")
    return (gr.update(choices=choices, value=ALL if chosen is None else str(chosen)), note,
            plots.membership_heatmap(template, chosen, bins), plots.coverage_bars(template),
            plots.overlap_matrix(template))


def _component(value, ids: list[int]) -> Optional[int]:
    """None for all; a component id kept only if this template has it."""
    if value in (None, "", ALL):
        return None
    chosen = whole_number(value, "A component")  # '1.5' is refused, not made 1
    return chosen if chosen in ids else None
