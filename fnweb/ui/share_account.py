"""What the Share tab says about Hub accounts: the sign-in's help, where a push would go, and notes with links.

``sign_in_available`` says whether the Hugging Face button can work here (a Space, or
FNWEB_HF_SIGN_IN=1 locally) and ``sign_in_help`` what the Account step says, by whom the
app serves (``fnweb.access``). ``push_target_note`` says, before a push, where it would
go and whether the account may write there (no network call: the account is asked
once by the caller). ``note`` is a coloured message, with a repo's address as a link.
This module formats; it calls neither the Hub nor Gradio's events.
"""

from __future__ import annotations

import html
import os
from typing import Optional

from .. import hub
from ..access import mode_reason, multi_user
from ..errors import FnwebError
from . import render

CHECK_HINT = "Press Check account (or leave the repo field) to see where the push will go."


def on_space() -> bool:
    from gradio.utils import get_space

    return get_space() is not None


def sign_in_available() -> bool:
    """Whether the Hugging Face button can work here (a Space, or asked for locally)."""
    return on_space() or os.environ.get("FNWEB_HF_SIGN_IN", "") == "1"


def sign_in_help(signed: bool) -> str:
    """What the Account step says, by who this app serves and whether it has a sign-in button."""
    if not multi_user():
        return ("Running for one user: the token comes from **HF_TOKEN** or the saved login (`hf auth login`). "
                "It is used for the Hub calls only: never shown, logged or stored.")
    if signed:
        return ("Sign in with your Hugging Face account: pushes, account checks and loads of private repos use "
                "your sign-in and nothing else (the server's own token is never used for a visitor); pushes go to "
                "your account or an organisation of yours. Without signing in, public repos still load. The token "
                "is never shown, logged or stored.")
    return (f"This app is shared ({mode_reason()}) and has no sign-in here, so it only loads public repos; to "
            "push, use fnweb on a Space with sign-in, or run it locally for yourself.")


def note(kind: str, text: str, link: Optional[str] = None) -> str:
    """A coloured note (``render.message_html``), with the repo's address as a link when given."""
    shown = render.message_html(kind, text)
    if link is None:
        return shown
    anchor = f' <a href="{html.escape(link, quote=True)}" target="_blank" rel="noopener">{html.escape(link)}</a>'
    return shown[: -len("</div>")] + anchor + "</div>"


def push_target_note(repo: Optional[str], who: hub.Account) -> str:
    """Where a push of ``repo`` would go, said before it happens (no network call)."""
    if not (repo or "").strip():
        return note("info", f"Pushes go to {who.name}'s account ({who.describe()}); enter a repo name.")
    name = hub.check_repo_id(repo)
    full = name if "/" in name else f"{who.name}/{name}"
    line = f"Pushes to {full} as {who.describe()}."  # the words of hub.describe_target
    namespace = full.split("/")[0]
    if who.role == "read":
        return note("error", f"{line} This token is read-only: the push would be refused. Use a token with "
                             "write permission.")
    if namespace not in who.namespaces:
        return note("error", f"{line} {who.name} cannot write to '{namespace}' (may write to "
                             f"{', '.join(who.namespaces)}): the push would be refused.")
    return note("ok", line)


def safe_target_note(repo: str, who: hub.Account) -> str:
    """``push_target_note``, with a bad repo name said in the note."""
    try:
        return push_target_note(repo, who)
    except FnwebError as exc:
        return note("error", str(exc))
