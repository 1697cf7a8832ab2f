"""Turning failures into messages in the page.

``page_error`` makes a ``gr.Error`` from any exception: a ``FnwebError`` keeps its
message (it already says what was wrong and what to do); anything else is a bug, so
its traceback goes to the log and the page names its type and message. Either way the
app stays up. ``handled`` wraps a handler (plain or generator) to do this for it.
"""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from ..errors import FnwebError

log = logging.getLogger("fnweb.ui")


def page_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, FnwebError):
        return gr.Error(str(exc), title="Cannot do that", print_exception=False)
    log.exception("Unexpected error in a handler", exc_info=exc)
    return gr.Error(f"Unexpected error ({type(exc).__name__}): {exc}. The app is still running; "
                    "please report this with the steps that led to it.", title="Unexpected error")


def handled(fn):
    """Re-raise any exception from ``fn`` as a readable ``gr.Error``."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise page_error(exc) from exc
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise page_error(exc) from exc
    return plain
