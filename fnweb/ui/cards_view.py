"""HTML of component cards and of a text search, for the Networks tab.

``card_html`` draws one card: the component's label, its share of neurons and a
small bar per layer, its stability, its strongest contexts with each token shaded
by the component's signal there (the strongest token outlined, as Neuronpedia
does; a click on a context sends its prompt to Compare), the prompt sets where it is
most active, its direct effect, and the visitor's lesion result when there is one.
``overview_html`` lists every component's label; ``search_html`` shades a searched
text per component. Elements that can be clicked carry ``data-context`` or
``data-component``; the tab's script turns a click into an event. No model work here.
"""

from __future__ import annotations

from typing import Optional

from ..cards import DIRECT_NOTE, METHODS, Cards, ComponentCard, massive_note, set_name, shown
from ..explain import SearchResult
from ..templates import Template
from .render import esc

SHOWN_CONTEXTS = 8  # contexts shown at once; the rest fold away

CSS = """
.fnc { border: 1px solid #e2e8f0; border-radius: 10px; padding: .7rem .85rem; background: white; font-size: .9rem; }
.fnc h4 { margin: 0 0 .15rem; font-size: 1.05rem; }
.fnc h5 { margin: .7rem 0 .25rem; font-size: .78rem; text-transform: uppercase; letter-spacing: .05em; color: #64748b; }
.fnc-label { color: #4338ca; font-weight: 600; }
.fnc-label code { font-size: .85em; background: #eef2ff; padding: 0 .25em; border-radius: 3px; }
.fnc summary { cursor: pointer; color: #64748b; font-size: .8rem; margin: .2rem 0; }
.fnc-facts, .fnc-note { color: #64748b; font-size: .8rem; }
.fnc-massive { color: #b45309; }
.fnc-layers { display: flex; align-items: flex-end; gap: 1px; height: 28px; margin-top: .3rem; }
.fnc-layers div { flex: 1; background: #6366f1; min-height: 1px; border-radius: 1px 1px 0 0; }
.fnc-ctx { font-family: ui-monospace, monospace; font-size: .8rem; padding: .2rem .35rem; border-radius: 6px;
           cursor: pointer; white-space: pre-wrap; word-break: break-word; line-height: 1.55; }
.fnc-ctx:hover { background: #f1f5f9; }
.fnc-val { display: inline-block; min-width: 3.2em; color: #64748b; }
.fnc-tok { border-radius: 3px; }
.fnc-top { outline: 2px solid #c2410c; }
.fnc-set { display: grid; grid-template-columns: 7.5em 1fr 3.8em; gap: .4rem; align-items: center; font-size: .8rem; }
.fnc-set div div { height: 8px; background: #f59e0b; border-radius: 4px; }
.fnc-chip { display: inline-block; font-family: ui-monospace, monospace; font-size: .78rem; padding: 0 .35rem;
            margin: .1rem; border-radius: 4px; }
.fnc-up { background: #dcfce7; color: #166534; }
.fnc-down { background: #fee2e2; color: #991b1b; }
.fnc-row { cursor: pointer; padding: .3rem .2rem; border-bottom: 1px solid #f1f5f9; }
.fnc-row:hover { background: #f8fafc; }
.fnc-search td, .fnc-search th { padding: .15rem .5rem; font-size: .85rem; text-align: left; }
"""

# A click on a context or a component row becomes the HTML component's click event, with what was clicked.
CLICK_JS = """
element.addEventListener('click', (event) => {
  const hit = event.target.closest('[data-context], [data-component]');
  if (!hit) return;
  trigger('click', {context: hit.dataset.context || '', component: hit.dataset.component || ''});
});
"""


def _shade(value: float, peak: float) -> str:
    """Orange whose strength follows the signal (nothing at or below zero)."""
    alpha = 0.0 if peak <= 0 else max(0.0, min(1.0, value / peak))
    return f"background: rgba(249, 115, 22, {0.85 * alpha:.2f})" if alpha > 0.02 else ""


def tokens_html(pieces: list[str], values: list[float], peak: float, top: Optional[int] = None) -> str:
    spans = []
    for i, (piece, value) in enumerate(zip(pieces, values)):
        extra = " fnc-top" if i == top else ""
        spans.append(f'<span class="fnc-tok{extra}" style="{_shade(value, peak)}" title="{value:+.2f}">'
                     f"{esc(shown(piece))}</span>")
    return "".join(spans)


def _layer_bars(template: Template, component: int) -> str:
    per_layer = template.components[component]
    bars = []
    for layer in template.layers:
        count = len(per_layer.get(layer, []))
        height = 0 if count == 0 else max(4, round(100 * count / max(1, max(map(len, per_layer.values())))))
        bars.append(f'<div style="height:{height}%" title="layer {layer}: {count} neurons"></div>')
    return f'<div class="fnc-layers" title="neurons per layer, layer 0 on the left">{"".join(bars)}</div>'


def label_html(label: str) -> str:
    """A label with its `token` spans as code."""
    parts = label.split("`")
    return "".join(f"<code>{esc(part)}</code>" if i % 2 else esc(part) for i, part in enumerate(parts))


def _contexts(card: ComponentCard, side: str, shown_first: int = SHOWN_CONTEXTS) -> str:
    contexts = card.top if side == "top" else card.bottom
    sign = 1.0 if side == "top" else -1.0  # the most negative are shaded by how negative they are
    peak = max((sign * c.value for c in contexts), default=1.0)
    rows = []
    for i, context in enumerate(contexts):
        rows.append(f'<div class="fnc-ctx" data-context="{card.component}:{side}:{i}" title="prompt {context.prompt}, '
                    f'token {context.position}; click to try this prompt in Compare">'
                    f'<span class="fnc-val">{context.value:.2f}</span>'
                    f"{tokens_html(context.pieces, [sign * v for v in context.values], peak, context.at)}</div>")
    if not rows:
        return '<div class="fnc-note">No contexts kept.</div>'
    more = rows[shown_first:]
    return "".join(rows[:shown_first]) + (f"<details><summary>{len(more)} more</summary>{''.join(more)}</details>"
                                          if more else "")


def _sets(cards: Cards, card: ComponentCard) -> str:
    peak = max(max(card.sets, default=0.0), 1e-9)
    rows = sorted(zip(cards.sets, card.sets), key=lambda pair: -pair[1])
    return "".join(f'<div class="fnc-set"><span>{esc(set_name(name))}</span><div><div style="width:'
                   f'{max(0.0, 100 * value / peak):.0f}%"></div></div><span>{value:+.3f}</span></div>'
                   for name, value in rows)


def _effects(cards: Cards, card: ComponentCard) -> str:
    if not card.promotes:
        why = cards.direct_effect_error or "not computed"
        return f'<div class="fnc-note">Not available: {esc(why)}</div>'
    chips = lambda effects, kind: "".join(  # noqa: E731
        f'<span class="fnc-chip fnc-{kind}" title="{e.logit:+.3f}">{esc(shown(e.piece)) or "␣"}</span>'
        for e in effects)
    return (f"<div>promotes {chips(card.promotes, 'up')}</div><div>suppresses {chips(card.suppresses, 'down')}</div>"
            '<div class="fnc-note">What its neurons write, pushed straight through the final norm and the unembedding: '
            "it ignores every later layer, so it is a hint of what it favours, not what a lesion changes.</div>")


def _lesion(experiment, component: int) -> str:
    rows = [r for r in getattr(experiment, "rows", []) if str(r.component) == str(component)]
    if not rows:
        return ""
    row = rows[0]
    dce, kl, rand, times = row.network.get("dce"), row.network.get("kl"), row.random.get("dce"), row.ratio.get("dce")
    if dce is None:
        return ""
    ratio = "" if times is None else f" ({times:.1f}x random)"
    spread = "" if rand is None or rand.mean is None else f"; random neurons {rand.mean:+.4f} ± {rand.sd or 0.0:.4f}"
    kl_text = "" if kl is None else f"; KL {kl:.4f}"
    return (f"<h5>Lesion (your experiment)</h5><div>ΔCE {dce:+.4f}{ratio}{spread}{kl_text} "
            f"on {row.prompts} prompts</div>")


def card_html(template: Template, cards: Cards, component: int, experiment=None, note: str = "") -> str:
    """One component's card."""
    card = cards.card(component)
    row = next(r for r in template.coverage() if r["component"] == component)
    stable = f" · stability {row['stability']:.2f}" if "stability" in row else ""
    fidelity = (f"; its readout from the neurons correlates {card.readout.fidelity:.2f} with it"
                if card.readout is not None and card.readout.fidelity is not None else "")
    negative = f"<h5>Most negative</h5>{_contexts(card, 'bottom')}" if card.bottom else ""
    return (f'<div class="fnc" id="fnc-card-{component}"><h4>Component {component} · '
            f'<span class="fnc-label">{label_html(card.label)}</span></h4>'
            f'<div class="fnc-facts">{row["channels"]:,} neurons ({100 * row["share"]:.2f} %) in {row["layers"]} '
            f"layers{stable}</div>{_layer_bars(template, component)}"
            + (f'<div class="fnc-note fnc-massive">{esc(massive_note(row["massive"]))}</div>'
               if row.get("massive") else "")
            + (f'<div class="fnc-note">{esc(note)}</div>' if note else "")
            + f"<h5>Strongest contexts</h5>{_contexts(card, 'top')}{negative}"
            f"<h5>Where it is most active (mean signal per prompt set)</h5>{_sets(cards, card)}"
            f"<h5>{DIRECT_NOTE}</h5>{_effects(cards, card)}{_lesion(experiment, component)}"
            f'<div class="fnc-note" style="margin-top:.6rem">Signal: {esc(METHODS.get(cards.method, cards.method))}'
            f"{fidelity}. Click a context to try its prompt in Compare.</div></div>")


def overview_html(cards: Cards) -> str:
    """Every component's label; a click picks one."""
    rows = []
    for c, card in sorted(cards.components.items()):
        best = card.top[0] if card.top else None
        snippet = "" if best is None else tokens_html(best.pieces, best.values, best.value, best.at)
        rows.append(f'<div class="fnc-row" data-component="{c}"><b>{c}</b> · <span class="fnc-label">'
                    f'{label_html(card.label)}</span><div class="fnc-ctx">{snippet}</div></div>')
    return (f'<div class="fnc"><h4>What each component does</h4><div class="fnc-note">Click one for its card. '
            f"Signal: {esc(METHODS.get(cards.method, cards.method))}.</div>{''.join(rows)}</div>")


def search_html(result: SearchResult, labels: dict[int, str], shown_components: int = 3) -> str:
    """The components ranked by their peak on the text, and the text shaded for the top few."""
    ranking = result.ranking()
    table = "".join(f"<tr><td>{c}</td><td>{label_html(labels.get(c, ''))}</td><td>{peak:+.2f}</td>"
                    f"<td>{esc(shown(result.pieces[at]))}</td></tr>" for c, peak, at in ranking)
    texts = []
    for c, peak, _ in ranking[:shown_components]:
        column = result.components.index(c)
        texts.append(f'<div class="fnc-row" data-component="{c}"><b>{c}</b> · <span class="fnc-label">'
                     f'{label_html(labels.get(c, ""))}</span><div class="fnc-ctx">'
                     f'{tokens_html(result.pieces, result.values[:, column].tolist(), max(peak, 1e-9))}</div></div>')
    return (f'<div class="fnc fnc-search"><h4>Which networks this text activates</h4><table><tr><th>component</th>'
            f"<th>label</th><th>peak</th><th>at</th></tr>{table}</table>{''.join(texts)}"
            '<div class="fnc-note">Read as plain text (no chat template). Each component is read from its own '
            "neurons by its cards' readout, whose weights fold in the per-neuron mean and standard deviation of "
            "the tokens the cards were made on (the build's, or the on-demand prompts'). Peak: the largest value "
            "over the text, in standard deviations of the component's signal on those tokens (above 3 is rare "
            "there).</div></div>")
