"""Forms as named records: a tab's settings by config field name, its parts by name, and events wired by name.

A tab builder puts its settings in a ``Form`` (``Form(prompt=box, seed=number, ...)``:
config field name -> component, in the order the API takes them) and returns a
``Tab`` (the form, its other parts by name, and the part where its actions report).
Handlers take a form as one dict of values by name (``{"prompt": "...", "seed": 0}``)
and give back their outputs as a dict keyed by output name, so that adding a field
is one component in the builder and one line in the tab's form-to-config function;
no handler signature, argument list or preset changes with it. Presets and saved
state fill fields by name (``Form.fill``); ``Form.portable`` keeps what of a record
can go into a link or a saved state.

``on`` wires one event: inputs may be components or forms (each form arrives as one
dict), outputs are named; the handler is wrapped by ``fnweb.ui.feedback.action`` (a
failure is one message in place and a toast, never a red overlay) and the event shows
no Gradio status over its outputs (``show_progress="hidden"``: each job draws its own
progress line). Its API parameters are named after the form's fields.

Also here, the readers of form values that several tabs share: numbers that may be
empty or fractional (``real``, ``whole``), uploaded files (``upload_paths``), Hub
dataset lines (``parse_hub``) and the built-in prompt sets on offer
(``builtin_choices``); and the one field two tabs build alike (``scope_dropdown``). Each
reader names the field in its error, so the message says which setting to fix. It knows nothing about any one tab.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import gradio as gr

from ..access import check_hub_id
from ..errors import FnwebError
from ..masks import DEFAULT_PRESERVE_SCOPE, PRESERVE_SCOPES
from ..prompts import BUILTIN_DIR, PromptSource, builtin_sets
from . import uploads
from .feedback import action

# ---- reading values ---------------------------------------------------------------------


def real(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise FnwebError(f"{what} is {'empty' if value in (None, '') else repr(value)}: enter a number.") from exc
    if not math.isfinite(number):
        raise FnwebError(f"{what} must be a finite number (got {value}).")
    return number


def whole(value, what: str) -> int:
    number = real(value, what)
    if number != int(number):
        raise FnwebError(f"{what} must be a whole number (got {value}).")
    return int(number)


def upload_paths(files, limit: Optional[int] = None) -> list[Path]:
    """The uploaded files' paths (one or a list; paths, file objects or dicts), each within the upload bound."""
    if not files:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    paths = [Path(f["path"] if isinstance(f, dict) else getattr(f, "name", f)) for f in items]
    return uploads.checked(paths, limit)


def parse_hub(text: str) -> list[PromptSource]:
    """'name[, config[, split]]' per line."""
    sources = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        parts = [p.strip() for p in line.split(",")]
        if not parts[0]:
            continue
        if len(parts) > 3 or " " in parts[0]:
            raise FnwebError(f"Hub datasets, line {number}: write 'name, config, split' (got '{line.strip()}').")
        check_hub_id(parts[0], f"a Hub dataset (line {number})")
        sources.append(PromptSource(parts[0], parts[1] if len(parts) > 1 and parts[1] else None,
                                    parts[2] if len(parts) > 2 and parts[2] else "train"))
    return sources


def scope_dropdown(elem_id: str) -> gr.Dropdown:
    """The preserve-scope choice (``fnweb.masks.PRESERVE_SCOPES``) of the Compare and Experiments tabs."""
    return gr.Dropdown([(f"{name}: {scope.help}", name) for name, scope in PRESERVE_SCOPES.items()],
                       value=DEFAULT_PRESERVE_SCOPE, label="Preserve scope", elem_id=elem_id,
                       info="Which layers preserve edits: all of them, or only those holding network neurons")


def builtin_choices() -> list[tuple[str, str]]:
    """(label with its prompt count, name) of every built-in prompt set."""
    counts = {name: sum(1 for line in (BUILTIN_DIR / f"{name}.jsonl").open(encoding="utf-8") if line.strip())
              for name in builtin_sets()}
    return [(f"{name} ({n})", name) for name, n in counts.items()]


# ---- the records ----------------------------------------------------------------------


class Form:
    """A tab's settings: config field name -> component, in the order the API takes them."""

    def __init__(self, **fields: gr.components.Component) -> None:
        self.fields = dict(fields)

    @property
    def names(self) -> list[str]:
        return list(self.fields)

    @property
    def components(self) -> list:
        return list(self.fields.values())

    def __getitem__(self, name: str):
        return self.fields[name]

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def __len__(self) -> int:
        return len(self.fields)

    def read(self, values: Sequence) -> dict[str, Any]:
        """The values of the form's components (in order) as a record by field name."""
        return dict(zip(self.names, values, strict=True))

    def fill(self, record: Mapping[str, Any], unknown: str = "refuse") -> dict:
        """Outputs that set the named fields (a handler returns this with the form's components as outputs).

        A name the form lacks is refused (a preset's typo), or with ``unknown="skip"`` left out (a saved state
        or a link from an older version of the form).
        """
        extra = set(record) - set(self.fields)
        if extra and unknown != "skip":
            raise KeyError(f"No field {', '.join(sorted(extra))} in this form ({', '.join(self.names)}).")
        return {self.fields[name]: value for name, value in record.items() if name in self.fields}

    def defaults(self) -> dict[str, Any]:
        """Each field's value as the page starts."""
        return {name: component.value for name, component in self.fields.items()}

    def portable(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a record a link or a saved state may hold: plain JSON values of the form's fields, less
        uploaded files (their paths are the server's, and the files do not outlive the session)."""
        return {name: value for name, value in record.items()
                if name in self.fields and not isinstance(self.fields[name], FILES) and _plain(value)}


FILES = (gr.File, gr.UploadButton)


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


class Tab:
    """What a tab builder returns: its form, its other parts by name, and the part its actions report in.

    ``tab.prompt`` reads a form field or a part by name. ``connect(ctx)``, when given, is
    called once every tab exists (to wire events into later tabs).
    """

    def __init__(self, form: Form, message: str, connect: Optional[Callable] = None, **parts) -> None:
        shared = sorted(set(parts) & set(form.names))
        if shared:  # a part would hide behind the field of its name (``tab.name`` finds the field first)
            raise ValueError(f"Parts {shared} share their names with form fields: name them apart.")
        self.form, self.message, self.parts = form, message, parts
        self.connect = connect

    def __getattr__(self, name: str):
        for group in ("form", "parts"):
            found = self.__dict__.get(group)
            if found is not None and name in (found.fields if group == "form" else found):
                return found[name]
        raise AttributeError(f"This tab has no field or part called '{name}'.")

    def outputs(self, *names: str, **shared) -> dict[str, Any]:
        """Named outputs: this tab's parts (or fields) by name, then shared components (``template=ctx.template``)."""
        return {**{name: getattr(self, name) for name in names}, **shared}


# ---- wiring ---------------------------------------------------------------------------------


def on(trigger: Callable, handler: Callable, inputs: Iterable, outputs: Optional[Mapping[str, Any]] = None,
       **event):
    """Wire ``handler`` to ``trigger`` (e.g. ``button.click``); see the module docstring.

    ``inputs``: components and forms, one handler parameter each (a form's is a dict).
    ``outputs``: name -> component. The handler yields or returns a dict keyed by those
    names (missing ones are left unchanged), or plain values in the outputs' order.
    """
    inputs, outputs = list(inputs), dict(outputs or {})
    if not hasattr(handler, "message"):
        handler = action()(handler)
    if handler.message is not None and handler.message not in outputs:
        raise ValueError(f"{handler.__name__} reports in '{handler.message}', which is not one of its outputs.")
    components = [c for item in inputs for c in (item.components if isinstance(item, Form) else [item])]
    event.setdefault("show_progress", "hidden")
    return trigger(_positional(handler, inputs, list(outputs)), components, list(outputs.values()) or None,
                   **event)


def _positional(handler: Callable, inputs: list, names: list[str]) -> Callable:
    """A Gradio function of the flat component values that calls ``handler`` with forms as dicts."""
    def regroup(args: tuple) -> list:
        grouped, at = [], 0
        for item in inputs:
            if isinstance(item, Form):
                grouped.append(item.read(args[at:at + len(item)]))
                at += len(item)
            else:
                grouped.append(args[at])
                at += 1
        return grouped + list(args[at:])  # special parameters Gradio fills (an OAuth token, event data)

    if inspect.isgeneratorfunction(handler):
        def fn(*args):
            for out in handler(*regroup(args)):
                yield _outputs(out, names)
    else:
        def fn(*args):
            return _outputs(handler(*regroup(args)), names)
    fn.__name__, fn.__qualname__, fn.__doc__ = handler.__name__, handler.__qualname__, handler.__doc__
    fn.__signature__, fn.__annotations__ = _signature(handler, inputs)
    return fn


def _signature(handler: Callable, inputs: list) -> tuple[inspect.Signature, dict]:
    """Parameters named after the inputs (a form's fields), then the handler's special ones, with their types.

    A form's fields are optional for an API client (a field it leaves out gets the component's value as the page
    starts, or None), so every parameter from the first form on has a default.
    """
    params = list(inspect.signature(handler).parameters.values())
    hints = typing.get_type_hints(handler)
    kind, empty = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty
    named: list[inspect.Parameter] = []
    for param, item in zip(params, inputs, strict=False):  # the handler's special parameters come after
        if isinstance(item, Form):
            named += [inspect.Parameter(name, kind, default=None) for name in item.names]
        else:
            named.append(inspect.Parameter(param.name, kind, default=None if named and
                                           named[-1].default is not empty else empty))
    special = [p.replace(kind=kind, default=None if p.default is empty and named and named[-1].default is not empty
                         else p.default) for p in params[len(inputs):]]
    annotations = {p.name: hints[p.name] for p in special if p.name in hints}
    return inspect.Signature(named + special), annotations


def _outputs(out, names: list[str]):
    """A handler's outputs in the outputs' order: a dict by name (missing: unchanged) or plain values."""
    if not isinstance(out, Mapping) or "__type__" in out:
        return out
    unknown = set(out) - set(names)
    if unknown:
        raise KeyError(f"Outputs {sorted(unknown)} are not among this event's outputs {names}.")
    values = tuple(out[name] if name in out else gr.skip() for name in names)
    return values[0] if len(values) == 1 else values
