"""fnweb's web app: `python app.py` locally, or the entry point of a Hugging Face Space.

Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT as usual (a Space sets them).
FNWEB_MODEL_JOBS bounds how many model jobs run at once (default 2; jobs on one model
take turns); FNWEB_QUEUE_SIZE bounds the queue.
"""

from __future__ import annotations

import os

from fnweb.ui import build_app, launch_options


def make_demo():
    """The app with its queue on: bounded concurrency, model work in one shared queue."""
    demo = build_app()
    demo.queue(default_concurrency_limit=int(os.environ.get("FNWEB_CONCURRENCY", "4")),
               max_size=int(os.environ.get("FNWEB_QUEUE_SIZE", "64")))
    return demo


demo = make_demo()

if __name__ == "__main__":
    demo.launch(**launch_options())
