"""The Templates tab's "will it fit?" line: the memory a build with the form's settings needs, beside Build.

It is worked out for the loaded model with the most tokens the settings can give (every
sample at its max tokens), by ``fnweb.build.estimate_build``, and follows the settings and
the model as they change. It never loads a model itself; settings the build would refuse
leave it empty (the build says why).
"""

from __future__ import annotations

import gradio as gr

from ..archs import SITES
from ..build import estimate_build
from ..errors import FnwebError
from ..models import is_loaded, load_model

WAITING = "Load a model to see the memory a build needs."


def fit_note() -> gr.Markdown:
    return gr.Markdown(WAITING, elem_id="fn-build-fit", elem_classes="fn-note")


def wire_fit_note(ctx, form, note: gr.Markdown) -> None:
    """Refresh ``note`` when any field of the Templates tab's ``form`` or the loaded model changes."""
    names, fields = form.names, form.components
    inputs = [ctx.session, *fields]
    for source in [*fields, ctx.model.status]:
        source.change(lambda session, *values: fit_text(session, dict(zip(names, values))), inputs, note,
                      queue=False, api_visibility="private")


def fit_text(session, form: dict) -> str:
    """The line for the form's record (the Templates tab's field names) and the session's model."""
    from .templates_tab import config_from_form  # the tab imports this module

    if session is None or session.model is None or not is_loaded(session.model):
        return WAITING
    try:
        config = config_from_form(form)
        estimate = estimate_build(load_model(session.model), config)
    except (FnwebError, ValueError, TypeError):
        return ""
    line = f"At most {estimate.total_tokens:,} tokens. {estimate.line()}"
    if estimate.fits:
        return line
    return (f"**Will not fit.** {line} Use fewer samples or max tokens"
            + (f", or the site {SITES[config.site].narrower}." if SITES[config.site].narrower else "."))
