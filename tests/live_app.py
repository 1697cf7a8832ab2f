"""The app launched in this process for end-to-end tests, and the gradio_client calls tests share.

``running_app`` launches the app as app.py builds it; ``new_client`` opens a client on it
(a page of its own: its own session); ``load``, ``figure``, ``picked`` and ``expect_error``
are the calls and readings several test files make. The ``url`` and ``client`` fixtures
(tests/conftest.py) are built on these. It knows nothing about any one tab's form.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

EMBEDDED = "embedded:SmolLM2-135M-Instruct"


@contextlib.contextmanager
def running_app():
    """Build the app as app.py does, launch it on a free port, yield its URL, then close it."""
    import app
    from fnweb.ui import launch_options

    demo = app.make_demo()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=None,
                            **launch_options())
    try:
        yield url
    finally:
        demo.close()


def new_client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def load(client, model=EMBEDDED):
    return client.predict(model, "auto", api_name="/load_model")


def figure(plot) -> list[dict]:
    """The traces of a gr.Plot value as the client returns it, with Plotly's typed arrays decoded."""
    return [{key: array(value) for key, value in trace.items()} for trace in json.loads(plot["plot"])["data"]]


def array(value):
    """Plotly writes numpy arrays as {'bdata': base64, 'dtype', 'shape'}: read them back."""
    if not (isinstance(value, dict) and "bdata" in value):
        return value
    data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    shape = value.get("shape")
    return data.reshape([int(n) for n in str(shape).split(",")]) if shape else data


def picked(update) -> tuple[str, list[str]]:
    """(selected name, all names) from the template picker's update."""
    return update["value"], [choice[0] for choice in update["choices"]]


def expect_error(match: str, call, *args, **kwargs):
    """The app answers ``call(*args, **kwargs)`` with an error shown in place, matching ``match``."""
    import pytest
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=match):
        call(*args, **kwargs)
