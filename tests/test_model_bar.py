"""The model bar tells the truth: the model in use is always named, a failed load keeps (and names) it, fails in
seconds for a Hub id that cannot be fetched, and says why once."""

from __future__ import annotations

import time

import gradio as gr
import pytest

from fnweb.models import ModelRequest
from fnweb.ui import model_bar
from fnweb.ui.state import Session


def outputs(handler, *args) -> tuple[list[str], bool]:
    """Every status a load handler shows, and whether it ended the event with an error (as the page sees it)."""
    shown, failed = [], False
    try:
        for out in handler(*args):
            shown.append(out["status"] if isinstance(out, dict) else out)
    except gr.Error:
        failed = True
    return shown, failed


def test_a_failed_load_keeps_and_names_the_model_in_use(tiny_model_dir):
    session = Session()
    shown, failed = outputs(model_bar.load_selected, session, str(tiny_model_dir), "auto")
    assert not failed and "Loaded" in shown[-1] and session.model.model_id == str(tiny_model_dir)

    started = time.monotonic()
    shown, failed = outputs(model_bar.load_selected, session, "no-such-org/no-such-model", "auto")
    assert failed and time.monotonic() - started < 15  # offline: seconds, not the client's minute of retries
    assert "stays in use until it has loaded" in shown[0] and str(tiny_model_dir) in shown[0]
    message = shown[-1]
    assert "fn-status-error" in message
    assert message.count("Could not load model &#x27;no-such-org/no-such-model&#x27;") == 1
    assert f"Still using {tiny_model_dir.name}." in message  # (a server temp path is shown by its name only)
    assert session.model == ModelRequest(model_id=str(tiny_model_dir))  # the previous model is still the one used
    assert model_bar.shown_model(session) == (str(tiny_model_dir), "auto")  # and the Model box goes back to it


def test_with_no_model_before_a_failed_load_says_none_is_in_use():
    session = Session()
    shown, failed = outputs(model_bar.load_selected, session, "no-such-org/no-such-model", "auto")
    assert failed and session.model is None and "No model is in use" in shown[-1]
    assert model_bar.shown_model(session) == (gr.skip(), gr.skip())


@pytest.mark.parametrize("text, expected", [
    ("Could not load model 'a/b': Could not load model 'a/b': it is gone.", "Could not load model 'a/b': it is gone."),
    ("It failed. Check the id. It failed.", "It failed. Check the id."),
    ("Cannot reach the Hub; check the connection", "Cannot reach the Hub; check the connection."),
])
def test_a_message_never_repeats_itself(text, expected):
    assert model_bar.said_once(text) == expected
    failed = model_bar.failed_load_text(text, ModelRequest("m", dtype="float16"))
    assert failed == f"{expected} Still using m (float16)."
