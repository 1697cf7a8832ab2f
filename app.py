"""fnweb's web app: `python app.py` locally, or the entry point of a Hugging Face Space.

Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT as usual (a Space sets them). Knobs:
FNWEB_MODEL_JOBS: model jobs at once (default 2; jobs on one model take turns);
FNWEB_MODEL_WAITING: how many more model jobs may wait their turn, saying their place (default 8);
FNWEB_CONCURRENCY / FNWEB_QUEUE_SIZE: Gradio's default concurrency and queue bound;
FNWEB_PRELOAD=0: do not load the default model at start;
FNWEB_TORCH_THREADS: torch's CPU threads (on a machine shared with other work, 1 can be
much faster than the default).
"""

from __future__ import annotations

import logging
import os
import threading

from fnweb.ui import build_app, launch_options


def _preload() -> None:
    from fnweb.errors import FnwebError
    from fnweb.models import load_model
    from fnweb.ui.model_bar import default_model_id

    try:
        load_model(default_model_id())
    except FnwebError as exc:  # the page says so too, when a visitor arrives
        logging.getLogger("fnweb").warning("The default model did not load: %s", exc)


def make_demo():
    """The app with its queue on: bounded concurrency, model work in one shared queue."""
    if os.environ.get("FNWEB_TORCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["FNWEB_TORCH_THREADS"]))
    if os.environ.get("FNWEB_PRELOAD", "1") != "0":
        # Load the default model while the page is served, so the first visitor does not wait for it.
        threading.Thread(target=_preload, name="fnweb-preload", daemon=True).start()
    demo = build_app()
    demo.queue(default_concurrency_limit=int(os.environ.get("FNWEB_CONCURRENCY", "4")),
               max_size=int(os.environ.get("FNWEB_QUEUE_SIZE", "64")))
    return demo


demo = make_demo()

if __name__ == "__main__":
    demo.launch(**launch_options())
