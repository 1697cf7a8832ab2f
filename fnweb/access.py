"""Whom this process serves: one user (whose own credentials it may use) or many visitors (who bring their own).

- **Many visitors** (``multi_user()``): on a Hugging Face Space (the ``SYSTEM=spaces`` /
  ``SPACE_ID`` environment a Space sets), with ``FNWEB_MULTI_USER=1``, or when the app is
  served beyond this machine (``GRADIO_SERVER_NAME`` not a loopback address, or
  ``GRADIO_SHARE``). Then the ``HF_TOKEN`` environment variable and the saved login
  belong to whoever runs the server, never to a visitor: ``fnweb.hub`` uses only the
  token a visitor signs in with, and ``forbid_implicit_token`` stops every library
  (transformers, datasets, huggingface_hub itself) from picking those up on its own.
- **One user**: a local app on loopback, or any app started with ``FNWEB_SINGLE_USER=1``
  (off a Space: on a Space the switch is ignored, since anyone may open a Space), and
  the CLIs. Then ``HF_TOKEN`` and the saved login act for that user.

``FNWEB_MULTI_USER=1`` wins over ``FNWEB_SINGLE_USER=1`` (the safer reading of two
contradictory switches). The mode is read from the environment at each call, so it
follows the process it runs in. This module knows nothing about Gradio or the Hub's API.
"""

from __future__ import annotations

import logging
import os

LOOPBACK = ("127.0.0.1", "localhost", "::1", "")


def _on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def on_space() -> bool:
    """Whether this process runs on a Hugging Face Space (as Gradio tells it: SYSTEM=spaces)."""
    return os.environ.get("SYSTEM") == "spaces" or bool(os.environ.get("SPACE_ID"))


def _served_beyond_loopback() -> bool:
    return os.environ.get("GRADIO_SERVER_NAME", "").strip() not in LOOPBACK or _on("GRADIO_SHARE")


def multi_user() -> bool:
    """True when visitors other than whoever started the process may use it (see the module docstring)."""
    if _on("FNWEB_MULTI_USER") or on_space():
        return True
    if _on("FNWEB_SINGLE_USER"):
        return False
    return _served_beyond_loopback()


def mode_reason() -> str:
    """Why the process is in its mode, in words for the page and the logs."""
    if _on("FNWEB_MULTI_USER"):
        return "FNWEB_MULTI_USER=1"
    if on_space():
        return "a Hugging Face Space"
    if _on("FNWEB_SINGLE_USER"):
        return "FNWEB_SINGLE_USER=1"
    if _served_beyond_loopback():
        return "served beyond this machine (GRADIO_SERVER_NAME or GRADIO_SHARE)"
    return "a local app on loopback"


def forbid_implicit_token() -> None:
    """Stop huggingface_hub (and every library over it) from sending HF_TOKEN or the saved login on its own.

    Called by the app when it serves many visitors. A call that passes a token explicitly
    (a visitor's sign-in) still sends it; a call that passes none goes out anonymous. The
    variable is set too, so that processes the app starts inherit the rule.
    """
    from huggingface_hub import constants

    os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    constants.HF_HUB_DISABLE_IMPLICIT_TOKEN = True
    if on_space() and _on("FNWEB_SINGLE_USER"):
        logging.getLogger("fnweb").warning(
            "FNWEB_SINGLE_USER=1 is ignored on a Space: anyone may open a Space, so each visitor acts only with "
            "their own sign-in.")


def check_hub_id(name: str, what: str) -> str:
    """``name`` if it may be used; serving many visitors, only a Hub id, never a path on the server.

    A visitor's model or dataset field is read as a local path first when one exists (a
    convenience for one user), which on a shared server would let a visitor read files
    of the server or of other visitors (uploads, sessions, runs).
    """
    from .errors import FnwebError
    from .ids import is_local

    text = (name or "").strip()
    if not multi_user() or not text:
        return text
    if is_local(text):
        raise FnwebError(f"'{text}' is not a Hub id: on this shared app {what} must be a Hub id like "
                         "'namespace/name', never a path on the server.")
    return text
