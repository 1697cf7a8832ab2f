"""Turning failures into one message where the visitor acted, without locking anything in the page.

Gradio marks every output of an event that raised with a red "Error" overlay (in
Gradio 6 the page sets the status of each of the event's progress targets, its
``show_progress_on`` or else all its outputs, to "error"), and the overlay takes the
clicks meant for the component beneath, the template picker included. So a failed
action here never shows a ``gr.Error``. ``action`` wraps a handler (plain or
generator) so that a failure

- shows its message in place: the handler's message part gets ``render.message_html``
  of it (``action("progress")``; a handler without one shows only the toast),
- pops up as a toast (``gr.Warning``, not ``gr.Error``),
- and then ends the event with an *invisible* ``gr.Error`` carrying the same message:
  an API client (``gradio_client``, MCP) still gets an error, and chained
  ``.success`` events do not run. Every event is wired with ``show_progress="hidden"``
  (``fnweb.ui.forms.on``), and Gradio draws no status over any component of such an
  event, "error" included: nothing is marked or covered.

``explain`` words the message: a ``FnwebError`` keeps its text (it says what was wrong
and what to do); anything else is a bug, so its traceback goes to the log and the page
gets a short sentence. Either way the page never shows a server temp path (only the
file's name) or an exception's class name.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import tempfile
from typing import Callable, Optional

import gradio as gr

from ..errors import FnwebError, Stopped
from . import render

log = logging.getLogger("fnweb.ui")

UNEXPECTED = ("Something went wrong on the server (the details are in its log). The app is still running: try "
              "again, or report the steps that led here.")
STOPPED = "Stopped."
# An exception class named in a message, e.g. "(JSONDecodeError: Expecting value)" or "OSError: ...".
CLASS_NAME = re.compile(r"\b(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)\b(?::\s*|\s*(?=\)))")


def _temp_roots() -> list[str]:
    roots = {tempfile.gettempdir(), os.environ.get("GRADIO_TEMP_DIR", "")}
    return sorted((r.rstrip("/") for r in roots if r and r != "/"), key=len, reverse=True)


def scrub(text: str) -> str:
    """The text without server temp paths (each becomes its file's name) or exception class names."""
    for root in _temp_roots():
        text = re.sub(re.escape(root) + r"/[^\s'\"<>()]*", lambda m: _file_name(m.group(0)), text)
    text = CLASS_NAME.sub("", text)
    return re.sub(r"\(\s*\)", "", re.sub(r"  +", " ", text)).strip()


def _file_name(path: str) -> str:
    tail = len(path) - len(path.rstrip(".,:;"))  # a full stop after a path is not part of it
    return os.path.basename(path[: len(path) - tail].rstrip("/")) + path[len(path) - tail:]


def explain(exc: BaseException) -> str:
    """What the page says about a failure (see the module docstring)."""
    if isinstance(exc, Stopped):
        return STOPPED
    if isinstance(exc, (FnwebError, gr.Error)):
        return scrub(exc.message if isinstance(exc, gr.Error) else str(exc))
    log.error("Unexpected error in a handler", exc_info=exc)
    return UNEXPECTED


def failure(exc: BaseException, translate: Optional[Callable[[BaseException], BaseException]] = None) -> tuple:
    """(the message, its kind: "error" or "stopped") of a failure, its toast shown."""
    exc = translate(exc) if translate is not None else exc
    text = explain(exc)
    if isinstance(exc, Stopped):
        return text, "stopped"
    gr.Warning(text)
    return text, "error"


def _ending(text: str) -> gr.Error:
    """The error that ends the event for API clients and chained events; the page shows nothing of it."""
    return gr.Error(text, visible=False, print_exception=False, title="Cannot do that")


def action(message: Optional[str] = None, *, translate: Optional[Callable] = None,
           render_message: Callable[[str, str], str] = lambda kind, text: render.message_html(kind, text)):
    """Decorate a handler so that its failures show in its ``message`` part and a toast (see the module).

    The handler yields (or returns) its outputs as usual: a dict keyed by output names
    (see ``fnweb.ui.forms.on``) or plain values. With a ``message`` part the wrapped
    handler is a generator (it shows the message, then ends the event); without one it
    keeps its kind. ``translate`` may reword an exception first (e.g. out of memory:
    what to lower); ``render_message(kind, text)`` draws the message.
    """
    def wrap(fn):
        if message is None and not inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def plain(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    raise _ending(failure(exc, translate)[0]) from exc
            plain.message = None
            return plain

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                if inspect.isgeneratorfunction(fn):
                    yield from fn(*args, **kwargs)
                else:
                    yield fn(*args, **kwargs)
            except Exception as exc:
                text, kind = failure(exc, translate)
                if message is not None:
                    yield {message: render_message(kind, text)}
                raise _ending(text) from exc
        generator.message = message
        return generator
    return wrap
