"""Component cards: what each network does, as data that travels inside the template file.

A ``Cards`` holds, per component, its strongest contexts (token windows with the
signal at every token, as ids *and* decoded text pieces, so a downloaded template
shows them without the model), the mean signal per prompt set, the tokens its direct
effect promotes and suppresses, a readout (how to read its signal from its neurons,
for searching new text), and a short label made from those (e.g. ``code · `def`,
`return`; promotes `(```). ``to_dict``/``from_dict`` are the ``cards`` key of a
template's ``fnweb`` block; ``from_dict`` checks the shape and says what is wrong.
``tokenizer_mismatch`` tells whether the cards' ids decode to the same text with a
given tokenizer. ``card_text`` prints one card.

It knows nothing about how the numbers were measured (``fnweb.explain`` does that).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional

from .activity import Context
from .direct_effect import TokenEffect
from .errors import FnwebError
from .ids import short_name
from .readout import Readout

VERSION = 1
PROMPT_CHARS = 400  # a prompt kept for the click-through to Compare is cut to this
METHODS = {
    "build": "ICA source of the build (standard deviations over its tokens)",
    "on demand": "the mask's leading direction over fresh prompts (standard deviations over them)",
}
DIRECT_NOTE = "direct effect (ignores later layers)"


@dataclass
class ComponentCard:
    component: int
    top: list[Context]
    sets: list[float]  # mean signal per prompt set, as ``Cards.sets``
    bottom: list[Context] = field(default_factory=list)  # the most negative tokens, when asked for
    promotes: list[TokenEffect] = field(default_factory=list)
    suppresses: list[TokenEffect] = field(default_factory=list)
    readout: Optional[Readout] = None
    label: str = ""


@dataclass
class Cards:
    method: str  # a key of METHODS
    model_id: str
    vocab: int  # the tokenizer's size when the cards were made
    sets: list[str]  # prompt-set names
    prompts: dict[int, str]  # the prompts the contexts came from (cut to PROMPT_CHARS)
    components: dict[int, ComponentCard]
    tokens: int = 0  # tokens the signal was measured on
    window: tuple[int, int] = (12, 4)
    direct_effect_error: str = ""  # why there is no direct effect, if there is none

    def card(self, component) -> ComponentCard:
        try:
            return self.components[int(component)]
        except (KeyError, TypeError, ValueError) as exc:
            ids = sorted(self.components)
            raise FnwebError(f"There is no card for component {component!r}: this template's cards cover "
                             f"components {ids[0]}..{ids[-1]}." if ids else "These cards cover no components.") from exc

    def labels(self) -> dict[int, str]:
        return {c: card.label for c, card in sorted(self.components.items())}

    # ---- files ----

    def to_dict(self) -> dict:
        return {
            "version": VERSION, "method": self.method, "model_id": self.model_id, "vocab": self.vocab,
            "tokens": self.tokens, "window": list(self.window), "sets": list(self.sets),
            "direct_effect_error": self.direct_effect_error,
            "prompts": {str(i): text for i, text in sorted(self.prompts.items())},
            "components": [_card_dict(card) for _, card in sorted(self.components.items())],
        }

    @classmethod
    def from_dict(cls, data) -> "Cards":
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise FnwebError("The template's stored cards are not in a format this fnweb reads "
                             f"(version {data.get('version') if isinstance(data, dict) else '?'}; expected {VERSION}).")
        try:
            components = [_card_from(c) for c in data["components"]]
            return cls(method=str(data["method"]), model_id=str(data["model_id"]), vocab=int(data["vocab"]),
                       sets=[str(s) for s in data["sets"]], tokens=int(data.get("tokens", 0)),
                       prompts={int(i): str(t) for i, t in data.get("prompts", {}).items()},
                       components={c.component: c for c in components}, window=tuple(data.get("window", (12, 4))),
                       direct_effect_error=str(data.get("direct_effect_error", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FnwebError(f"The template's stored cards are malformed ({type(exc).__name__}: {exc}).") from exc


def _card_dict(card: ComponentCard) -> dict:
    out = {"component": card.component, "label": card.label, "sets": [round(v, 4) for v in card.sets],
           "top": [_context_dict(c) for c in card.top], "bottom": [_context_dict(c) for c in card.bottom],
           "promotes": [[e.token, e.piece, e.logit] for e in card.promotes],
           "suppresses": [[e.token, e.piece, e.logit] for e in card.suppresses]}
    if card.readout is not None:
        out["readout"] = card.readout.to_dict()
    return out


def _context_dict(context: Context) -> dict:
    return asdict(context)


def _context_from(data: dict) -> Context:
    context = Context(prompt=int(data["prompt"]), position=int(data["position"]), value=float(data["value"]),
                      ids=[int(i) for i in data["ids"]], values=[float(v) for v in data["values"]],
                      at=int(data["at"]), pieces=[str(p) for p in data["pieces"]])
    if not (len(context.ids) == len(context.values) == len(context.pieces)) or not 0 <= context.at < len(context.ids):
        raise ValueError(f"a context of prompt {context.prompt} has {len(context.ids)} ids, {len(context.pieces)} "
                         f"pieces, {len(context.values)} values and its token at {context.at}")
    return context


def _effects(rows) -> list[TokenEffect]:
    return [TokenEffect(int(token), str(piece), float(logit)) for token, piece, logit in rows]


def _card_from(data: dict) -> ComponentCard:
    return ComponentCard(
        component=int(data["component"]), label=str(data.get("label", "")),
        sets=[float(v) for v in data["sets"]], top=[_context_from(c) for c in data["top"]],
        bottom=[_context_from(c) for c in data.get("bottom", [])], promotes=_effects(data.get("promotes", [])),
        suppresses=_effects(data.get("suppresses", [])),
        readout=Readout.from_dict(data["readout"]) if data.get("readout") else None)


# ---- text of tokens ----

def token_pieces(tokenizer, ids: list[int], lookback: int = 4) -> list[str]:
    """Each token's share of the decoded text.

    Decoded after a few tokens of context, so that a leading space survives and a character
    split over tokens goes to the token that completes it (bytes of a character begun
    before the ids, or not finished in them, show as nothing).
    """
    def text(span: list[int]) -> str:
        return tokenizer.decode(span).strip("\ufffd") if span else ""

    pieces = []
    for end in range(1, len(ids) + 1):
        start = max(0, end - 1 - lookback)
        before, now = text(ids[start : end - 1]), text(ids[start:end])
        pieces.append(now[len(before):] if now.startswith(before) else text(ids[end - 1 : end]))
    return pieces


def tokenizer_mismatch(cards: Cards, tokenizer, checked: int = 40) -> Optional[str]:
    """Why these cards' token ids do not fit ``tokenizer`` (another vocabulary, other text), or None."""
    if len(tokenizer) != cards.vocab:
        return (f"The stored cards were made with a tokenizer of {cards.vocab:,} tokens; this model's has "
                f"{len(tokenizer):,}.")
    contexts = [c for card in cards.components.values() for c in card.top][:checked]
    differ = sum(token_pieces(tokenizer, c.ids) != c.pieces for c in contexts)
    if contexts and differ > len(contexts) // 5:
        return (f"The stored cards' token ids decode to other text with this model's tokenizer ({differ} of "
                f"{len(contexts)} contexts differ): they were made with another tokenizer.")
    return None


_VISIBLE = {"\n": "⏎", "\t": "⇥", "\r": "␍"}


def shown(piece: str) -> str:
    """A token's text for a label or a terminal: line breaks and tabs visible, other control characters escaped."""
    return "".join(_VISIBLE.get(ch) or (ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}")
                   for ch in piece)


def token_text(tokenizer, token: int) -> str:
    """One token's text on its own (a byte of a longer character shows as �; a token with no text, by its name)."""
    text = tokenizer.decode([token])
    if "\ufffd" in text:
        return "\ufffd"
    return text or str(tokenizer.convert_ids_to_tokens(token))


def context_text(context: Context, mark: str = "[[{}]]") -> str:
    pieces = list(context.pieces)
    if not pieces:
        return ""
    pieces[context.at] = mark.format(pieces[context.at])
    return shown("".join(pieces))


# ---- labels ----

def set_name(name: str) -> str:
    """A short name for a prompt set: ``builtin:code`` -> code, a file -> its stem, a Hub id -> its last part."""
    return short_name(name)


def _quoted(piece: str) -> str:
    """A token in backticks: its text without surrounding spaces; a line break or space alone made visible."""
    stripped = piece.strip()
    if not piece:  # a byte of a character that the next token completes
        return "`�`"
    text = (shown(stripped) if stripped else (shown(piece.strip(" ")) or "␣"))[:16]
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def make_label(card: ComponentCard, sets: list[str]) -> str:
    """A short automatic label: the prompt set that drives it (if one stands out), its top tokens, what it promotes."""
    parts = []
    if len(sets) > 1 and card.sets:
        ranked = sorted(range(len(sets)), key=lambda i: -card.sets[i])
        first, second = card.sets[ranked[0]], card.sets[ranked[1]]
        if first > 0.2 and first > 2 * max(second, 0.05):
            parts.append(set_name(sets[ranked[0]]) + " · ")
    strength = Counter()
    for context in card.top:
        if context.pieces:
            strength[context.pieces[context.at]] += max(context.value, 0.0) ** 2  # one strong token beats many weak
    ranked = strength.most_common(2)
    tokens = [piece for piece, weight in ranked if weight >= 0.25 * ranked[0][1]]
    parts.append(", ".join(_quoted(p) for p in tokens) if tokens else "no contexts")
    promoted = next((e.piece for e in card.promotes if e.piece.strip()), None)
    if promoted is not None:
        parts.append(f"; promotes {_quoted(promoted)}")
    return "".join(parts)


# ---- text ----

def _bar(share: float, width: int = 20) -> str:
    return "█" * round(max(0.0, min(1.0, share)) * width)


def card_text(cards: Cards, component: int, coverage: Optional[dict] = None, top: int = 5) -> str:
    """One card as plain text (``coverage``: the template's coverage row for it, with stability if known)."""
    card = cards.card(component)
    lines = [f"Component {card.component}: {card.label}"]
    if coverage:
        stable = f", stability {coverage['stability']:.2f}" if "stability" in coverage else ""
        lines.append(f"  {coverage['channels']:,} neurons ({100 * coverage['share']:.2f} %) in "
                     f"{coverage['layers']} layers{stable}")
        if coverage.get("massive"):
            lines.append(f"  {massive_note(coverage['massive'])}")
    lines.append(f"  strongest contexts ({METHODS.get(cards.method, cards.method)}):")
    lines += [f"    {c.value:6.2f}  {context_text(c)}" for c in card.top[:top]]
    if card.bottom:
        lines.append("  most negative:")
        lines += [f"    {c.value:6.2f}  {context_text(c)}" for c in card.bottom[:top]]
    if cards.sets:
        peak = max(max(card.sets), 1e-9)
        lines.append("  mean signal per prompt set:")
        lines += [f"    {set_name(name):<14} {value:+.3f} {_bar(value / peak)}" for name, value in
                  sorted(zip(cards.sets, card.sets), key=lambda pair: -pair[1])]
    if card.promotes:
        lines.append(f"  {DIRECT_NOTE}: promotes " + " ".join(_quoted(e.piece) for e in card.promotes))
        lines.append(f"  {' ' * len(DIRECT_NOTE)}  suppresses " + " ".join(_quoted(e.piece) for e in card.suppresses))
    elif cards.direct_effect_error:
        lines.append(f"  {DIRECT_NOTE}: not available ({cards.direct_effect_error})")
    return "\n".join(lines)


def massive_note(channels) -> str:
    """A card's warning that its component holds massive-activation channels ((layer, channel) pairs)."""
    where = ", ".join(f"layer {layer} #{channel}" for layer, channel in channels)
    return (f"Contains {len(channels)} massive-activation channel{'s' if len(channels) != 1 else ''} ({where}): "
            "a few channels orders of magnitude larger than the rest of their layer; a lesion's effect may be "
            "theirs alone (compare its row without them).")


def stored_cards(template) -> Optional[Cards]:
    """The template's stored cards, or None when it has none or they cannot be read."""
    data = getattr(template, "cards", None)
    if not data:
        return None
    try:
        return Cards.from_dict(data)
    except FnwebError:
        return None


def component_labels(template) -> dict[int, str]:
    """Each component's label from the template's stored cards ({} without cards)."""
    cards = stored_cards(template)
    return cards.labels() if cards else {}
