"""Shareable links to an experiment: the Experiments form as URL query parameters, and back, checked.

A link holds what decides an experiment: the model, the template's reference (as a
comparison's link names it, ``fnweb.ui.links``: ``preset``, ``hub:<id>[@rev]`` or
``saved:<id>``), the held-out built-in sets, prompts per set, draws, seed, max tokens,
leave-out, preserve scope, and the evidence options (intervention, α, control, second
control, template seeds, recurrence, task, dose-response component). ``kind=experiment``
tells it from a comparison's link. Uploaded prompt files never travel (they stay on the
server that received them): ``query`` leaves them out and says so.

``query(model, ref, form)`` writes the parameters (``PARAMS`` names them);
``parse(params)`` reads them back into a ``links.Link`` whose form holds the Experiments
form's fields by name, or raises one ``FnwebError`` listing every value that is wrong:
each field is read on its own, then the whole is checked as the form's Run checks it
(``fnweb.ui.experiments_tab.plan_from_form``). It knows nothing about Gradio components
or about how a template is fetched.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional
from urllib.parse import urlencode

from ..controls import CONTROLS
from ..errors import FnwebError
from ..interventions import check_alpha
from ..masks import PRESERVE_SCOPES
from ..prompts import builtin_sets
from ..tasks import TASKS
from ..template_seeds import check_seeds
from . import links
from .evidence_form import ACTING, DEFAULTS, NONE
from .experiments_tab import plan_from_form

KIND = "experiment"
# URL parameter -> Experiments form field (the model and the template are separate; uploaded files never travel).
PARAMS = {"sets": "builtin", "n": "samples", "draws": "draws", "seed": "seed", "tok": "max_tokens",
          "lo": "leave_out", "scope": "preserve_scope", "iv": "intervention", "a": "alpha", "ctl": "control",
          "also": "also_control", "ts": "template_seeds", "rec": "recurrence", "task": "task",
          "dose": "dose_component"}
WORDS = {"builtin": "prompt sets", "samples": "prompts per set", "draws": "random draws", "seed": "seed",
         "max_tokens": "max tokens", "leave_out": "leave-out", "preserve_scope": "preserve scope",
         "intervention": "intervention", "alpha": "α", "control": "control", "also_control": "second control",
         "template_seeds": "template seeds", "recurrence": "recurrence", "task": "task",
         "dose_component": "dose-response component"}
WHOLE = ("samples", "draws", "seed", "max_tokens", "template_seeds")
FLAGS = ("leave_out", "recurrence")
CHOICES = {"preserve_scope": list(PRESERVE_SCOPES), "intervention": ACTING, "control": list(CONTROLS),
           "also_control": [NONE, *CONTROLS], "task": [NONE, *TASKS]}


def is_experiment_link(params: Mapping[str, str]) -> bool:
    """Whether a page's query parameters ask to restore an experiment."""
    return params.get("kind") == KIND


def query(model: str, ref: Optional[str], form: dict) -> str:
    """The link's query string (without '?') for the Experiments form's record (checked by the caller)."""
    if not ref:
        raise FnwebError("This template cannot be named in a link: it is kept in this page only. Share it on the "
                         "Hub (Share tab) or rebuild it here, then copy the link again.")
    if not form.get("builtin"):
        raise FnwebError("A link can hold built-in prompt sets only (uploaded files stay on this server): tick at "
                         "least one built-in set, then copy the link again.")
    values = {"v": links.VERSION, "kind": KIND, "m": model, "t": ref}
    values.update({param: _written(name, form.get(name, DEFAULTS.get(name))) for param, name in PARAMS.items()})
    return urlencode(values)


def _written(name: str, value) -> str:
    if name == "builtin":
        return ",".join(value or [])
    if name in FLAGS:
        return "1" if value else "0"
    if name in WHOLE:
        return str(int(value))
    if name == "alpha":
        return f"{float(value):g}"
    return "" if value is None else str(value).strip()


def parse(params: Mapping[str, str]) -> links.Link:
    """The experiment link in a page's query parameters, checked; one error naming every bad value."""
    problems: list[str] = []
    version = params.get("v", links.VERSION)
    if version != links.VERSION:
        problems.append(f"it was made by another fnweb version ({version!r})")
    model = links.check_model(params.get("m", ""), problems)
    template = links.check_template(params.get("t", ""), problems)
    form = {}
    for param, name in PARAMS.items():
        text = params.get(param)
        if text is None and name not in DEFAULTS:  # the evidence options may be missing (an older link)
            problems.append(f"it has no {WORDS[name]} ('{param}')")
            continue
        form[name] = DEFAULTS[name] if text is None else _read(name, text, problems)
    if not problems:  # each value reads: now the whole, as Run checks it
        try:
            plan_from_form({**form, "template": None, "files": None})
        except FnwebError as exc:
            problems.append(links.its(exc))
    if problems:
        raise FnwebError("This experiment link cannot be restored: " + "; ".join(problems) + ". Ask for a new link, "
                         "or set the experiment up by hand.")
    return links.Link(model, template, form)


def _read(name: str, text: str, problems: list[str]):
    """One field's value from its parameter's text; what is wrong goes to ``problems``."""
    what = WORDS[name]
    if name == "builtin":
        sets = [s.strip() for s in text.split(",") if s.strip()]
        if not sets or any(s not in builtin_sets() for s in sets):
            problems.append(f"its {what} {text[:60]!r} are not among {', '.join(builtin_sets())}")
        return sets
    if name in FLAGS:
        if text not in ("0", "1"):
            problems.append(f"its {what} {text[:20]!r} is neither 1 nor 0")
        return text == "1"
    if name in CHOICES:
        if text not in CHOICES[name]:
            problems.append(f"its {what} {text[:30]!r} is none of {', '.join(CHOICES[name])}")
        return text
    if name == "dose_component":
        if text and not re.fullmatch(r"\d{1,4}", text):
            problems.append(f"its {what} {text[:20]!r} is not a component id")
        return text
    kind = float if name == "alpha" else int
    value = links.check_number(text, what, kind, problems)
    check = {"alpha": check_alpha, "template_seeds": check_seeds}.get(name)
    if value is not None and check is not None:
        try:
            check(value)
        except FnwebError as exc:
            problems.append(links.its(exc))
    return value

