"""Shareable links: a comparison's setup as URL query parameters, and back, checked.

A link holds what decides a comparison: the model, how to find the template again, the
Compare form's fields (prompt, components, columns, generation settings). The template
is named by a reference, never carried in the link:

- ``preset``: the demo presets' template, built on the link's model (cached on disk);
- ``hub:<namespace/name>[@<revision>]``: a template on the Hugging Face Hub;
- ``saved:<id>``: a template saved in the browser that made the link (works there only:
  nothing is shared between visitors).

The intervention settings travel too (α, the random column's intervention and how its
neurons are drawn); a link made before they did reads as their defaults.

``query(setup)`` writes the parameters (``PARAMS`` names them), ``parse(params)`` reads
them back into a ``Link`` or raises one ``FnwebError`` listing every value that is wrong
and what to do. ``setup_of`` says what a finished comparison was (what a link, a saved
comparison and an export hold); ``remember`` keeps a finished one as the session's last
(for the export) and in the browser's store. It knows nothing about Gradio or about how
a template is fetched.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Mapping, Optional
from urllib.parse import urlencode

from ..compare import BASELINE, COLUMNS, CONTROL_OF, DEFAULT_ALPHA, GenerationSettings
from ..compare_record import record, to_json
from ..controls import CONTROLS, DEFAULT_CONTROL
from ..errors import FnwebError
from ..ids import EMBEDDED_ID
from ..interventions import ALPHA_RANGE, INTERVENTIONS
from ..masks import DEFAULT_PRESERVE_SCOPE
from ..templates import MAX_COMPONENTS
from .visitor_store import valid_id

VERSION = "1"
KIND = "comparison"  # what a link restores, when it says nothing else (an experiment's says kind=experiment)
MAX_PROMPT = 2000  # characters: a link is for a prompt one reads aloud, not a document
MAX_LISTED = 64  # components in a link
# URL parameter -> Compare form field (the template and the model are separate).
PARAMS = {"p": "prompt", "c": "components", "cols": "columns", "n": "max_new_tokens", "dec": "decoding",
          "temp": "temperature", "seed": "seed", "draws": "draws", "scope": "preserve_scope", "a": "alpha",
          "of": "control_of", "ctl": "control"}
# Fields a link names from a table: (URL parameter, form field, table, default, what it is called in a message).
_CHOICES = (("of", "control_of", INTERVENTIONS, CONTROL_OF, "random column's intervention"),
            ("ctl", "control", CONTROLS, DEFAULT_CONTROL, "random control"))
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_HUB_REF = re.compile(r"^hub:([A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96})(?:@([\w./-]{1,80}))?$")


@dataclass
class Link:
    """A checked link: the model, the template reference, and the Compare form's fields by name."""

    model: str
    template: str
    form: dict

    @property
    def hub(self) -> Optional[tuple[str, Optional[str]]]:
        """(repo id, revision) of a Hub template, else None."""
        match = _HUB_REF.match(self.template)
        return (match.group(1), match.group(2)) if match else None

    @property
    def saved_id(self) -> Optional[str]:
        return self.template.removeprefix("saved:") if self.template.startswith("saved:") else None


def is_link(params: Mapping[str, str]) -> bool:
    """Whether a page's query parameters ask to restore a comparison (not another kind of link: ``kind=...``)."""
    return ("m" in params or "t" in params) and params.get("kind", KIND) == KIND


def setup_of(model: str, dtype: str, template_name: Optional[str], template_ref: Optional[str], form: dict,
             settings: GenerationSettings) -> dict:
    """What a comparison was, as plain values (the form's own fields, the model and the template)."""
    return {"model": model, "dtype": dtype, "template": {"name": template_name, "ref": template_ref},
            "prompt": str(form["prompt"]), "components": [int(c) for c in form.get("components") or []],
            "columns": [c for c in form.get("columns") or [] if c in COLUMNS], "settings": asdict(settings)}


def template_ref(entry) -> Optional[str]:
    """How a link finds a session's template again (``SessionTemplate``): its source, else its saved id."""
    if entry is None:
        return None
    return entry.source or (f"saved:{entry.saved_id}" if entry.saved_id else None)


def remember(session, form: dict, settings: GenerationSettings, comparison) -> dict:
    """Keep a finished comparison as the session's last and in the browser's store; its record."""
    needs_template = any(c != BASELINE for c in form.get("columns") or [])
    entry = session.get(form.get("template")) if needs_template else None
    return keep_comparison(session, session.model.model_id, session.model.dtype, entry, form, settings, comparison)


def keep_comparison(session, model_id: str, dtype: str, entry, form: dict, settings: GenerationSettings,
                    comparison) -> dict:
    """Keep a finished comparison on ``entry``'s template (None: none) as the session's last and in the browser's
    store; its record."""
    setup = setup_of(model_id, dtype, entry.name if entry else None, template_ref(entry), form, settings)
    session.last_comparison = record(setup, comparison)
    session.keep("comparisons", to_json(session.last_comparison), {"prompt": setup["prompt"][:80]})
    return session.last_comparison


def query(setup: dict) -> str:
    """The link's query string (without '?') for a setup (``setup_of``); a clear error when it cannot be shared."""
    ref = (setup.get("template") or {}).get("ref")
    if not ref and any(c != BASELINE for c in setup["columns"]):
        raise FnwebError("This template cannot be named in a link: it is kept in this page only. Share it on the "
                         "Hub (Share tab) or rebuild it here, then copy the link again.")
    s = setup["settings"]
    values = {"v": VERSION, "m": setup["model"], **({"t": ref} if ref else {}), "p": setup["prompt"],
              "c": ",".join(str(c) for c in setup["components"]), "cols": ",".join(setup["columns"]),
              "n": s["max_new_tokens"], "dec": "greedy" if s["greedy"] else "sampled", "temp": f"{s['temperature']:g}",
              "seed": s["seed"], "draws": s["random_draws"], "scope": s.get("preserve_scope", DEFAULT_PRESERVE_SCOPE),
              "a": f"{s.get('alpha', DEFAULT_ALPHA):g}", "of": s.get("control_of", CONTROL_OF),
              "ctl": s.get("control", DEFAULT_CONTROL)}
    return urlencode(values)


def parse(params: Mapping[str, str]) -> Link:
    """The link in a page's query parameters, checked; one error naming every bad value."""
    problems: list[str] = []
    version = params.get("v", VERSION)
    if version != VERSION:
        problems.append(f"it was made by another fnweb version ({version!r})")
    model = check_model(params.get("m", ""), problems)
    columns = _columns(params.get("cols", ",".join(COLUMNS)), problems)
    needs_template = any(c != BASELINE for c in columns) or bool(params.get("t"))
    template = check_template(params.get("t", ""), problems) if needs_template else ""
    form = {"prompt": _prompt(params.get("p", ""), problems),
            "components": _whole_list(params.get("c", ""), "components", 0, MAX_COMPONENTS - 1, problems),
            "columns": columns}
    form.update(_settings(params, problems))
    if problems:
        raise FnwebError("This link cannot be restored: " + "; ".join(problems) + ". Ask for a new link, or set "
                         "the comparison up by hand.")
    return Link(model, template, form)


def check_model(text: str, problems: list[str]) -> str:
    text = text.strip()
    if not text or len(text) > 200:
        problems.append("it names no model" if not text else "its model id is too long")
        return text
    if text != EMBEDDED_ID and not _HUB_ID.match(text):  # a link is foreign input: never a path, even locally
        problems.append(f"its model {text[:60]!r} is not a Hub id like 'namespace/name'")
    return text


def check_template(text: str, problems: list[str]) -> str:
    text = text.strip()
    saved = text.removeprefix("saved:")
    if text == "preset" or _HUB_REF.match(text) or (text.startswith("saved:") and valid_id(saved)):
        return text
    problems.append(f"its template {text[:60]!r} is none of 'preset', 'hub:namespace/name' or 'saved:<id>'"
                    if text else "it names no template")
    return text


def _prompt(text: str, problems: list[str]) -> str:
    if not text.strip():
        problems.append("its prompt is empty")
    elif len(text) > MAX_PROMPT:
        problems.append(f"its prompt is longer than {MAX_PROMPT} characters")
    return text


def _whole_list(text: str, what: str, low: int, high: int, problems: list[str]) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) > MAX_LISTED or not all(re.fullmatch(r"\d{1,4}", p) and low <= int(p) <= high for p in parts):
        problems.append(f"its {what} {text[:60]!r} are not whole numbers from {low} to {high}")
        return []
    return [int(p) for p in parts]


def _columns(text: str, problems: list[str]) -> list[str]:
    columns = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        problems.append(f"its columns {text[:60]!r} are not among {', '.join(COLUMNS)}")
        return []
    return columns


def _settings(params: Mapping[str, str], problems: list[str]) -> dict:
    """The generation fields, checked as the Compare form checks them."""
    decoding = params.get("dec", "greedy")
    values = {"max_new_tokens": check_number(params.get("n", "48"), "max new tokens", int, problems),
              "decoding": decoding,
              "temperature": check_number(params.get("temp", "0.8"), "temperature", float, problems),
              "seed": check_number(params.get("seed", "0"), "seed", int, problems),
              "draws": check_number(params.get("draws", "3"), "random draws", int, problems),
              "preserve_scope": params.get("scope", DEFAULT_PRESERVE_SCOPE), **_intervention(params, problems)}
    if decoding not in ("greedy", "sampled"):
        problems.append(f"its decoding {decoding[:20]!r} is neither greedy nor sampled")
    elif None not in values.values():
        try:
            GenerationSettings(values["max_new_tokens"], decoding == "greedy", values["temperature"], values["seed"],
                               values["draws"], preserve_scope=values["preserve_scope"], alpha=values["alpha"],
                               control_of=values["control_of"], control=values["control"]).validate()
        except FnwebError as exc:
            problems.append(its(exc))
    return values


def _intervention(params: Mapping[str, str], problems: list[str]) -> dict:
    """α, the random column's intervention and its control, each checked against its table (None when wrong)."""
    low, high = ALPHA_RANGE
    alpha = check_number(params.get("a", f"{DEFAULT_ALPHA:g}"), "α", float, problems)
    if alpha is not None and not low <= alpha <= high:
        problems.append(f"its α {alpha:g} is not from {low:g} to {high:g}")
        alpha = None
    values = {"alpha": alpha}
    for key, field, table, default, what in _CHOICES:
        text = params.get(key, default)
        if text not in table:
            problems.append(f"its {what} {text[:20]!r} is none of {', '.join(table)}")
            text = None
        values[field] = text
    return values


def check_number(text: str, what: str, kind: type, problems: list[str]):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        problems.append(f"its {what} {str(text)[:20]!r} is not a {'whole ' if kind is int else ''}number")
        return None
    if kind is float and not (value == value and abs(value) != float("inf")):
        problems.append(f"its {what} is not a finite number")
        return None
    return value


def its(exc: FnwebError) -> str:
    """An error's sentence as one item of a link's list of problems ("its α must ...")."""
    text = str(exc).rstrip(".")
    return "its " + text[0].lower() + text[1:]
