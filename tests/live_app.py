"""The app launched in this process for end-to-end tests (gradio_client and the browser)."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
