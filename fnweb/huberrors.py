"""What a failed Hub call means, in words: the Hugging Face client's exceptions made into ``FnwebError``.

``hub_errors(...)`` wraps the calls of one push or load: an offline switch, a rejected
or read-only token, a missing repo or revision, the Hub failing (5xx) or refusing, and an
unreachable network each become one message that says what happened and what to do, and
that nothing changed (a push is one commit, so a failed one leaves the repo as it was).
Anything else is raised as it is. The Hub's own short reason is quoted; request headers
(which hold the token) never are. This module knows nothing about what is pushed or loaded.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from .errors import FnwebError

NO_CHANGE = "Nothing was pushed and the local files are unchanged"
ANONYMOUS = "no sign-in (anonymous)"


def cause(exc: BaseException, kinds) -> Optional[BaseException]:
    """The first exception of ``kinds`` in ``exc``'s chain (upload errors wrap the HTTP one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def hub_errors(action: str, repo_id: Optional[str], source: str, who=None,
               action_kind: str = "push") -> Iterator[None]:
    """Turn the client's exceptions into messages; ``who`` (an account) names where the token may write."""
    try:
        yield
    except FnwebError:
        raise
    except Exception as exc:
        message = explain(exc, action, f" {repo_id}" if repo_id else "", source, who, action_kind)
        if message is None:
            raise
        raise FnwebError(message) from None


def explain(exc: Exception, action: str, where: str, source: str, who, action_kind: str) -> Optional[str]:
    """The message for a failed Hub call (None: not a Hub fault fnweb knows)."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    unchanged = NO_CHANGE if action_kind == "push" else "Nothing was loaded"
    if cause(exc, OfflineModeIsEnabled):
        return f"Hub access is switched off here (HF_HUB_OFFLINE is set): unset it to reach the Hub. {unchanged}."
    http = cause(exc, HfHubHTTPError)
    if http is not None:
        message = _http_message(http, action, where, source, who, action_kind, unchanged)
        if message is not None:
            return message
    if cause(exc, (httpx2.TransportError, ConnectionError, TimeoutError, LocalEntryNotFoundError)):
        return (f"Cannot reach the Hugging Face Hub at {constants.ENDPOINT} while {action}{where}: check the network "
                f"(and HF_ENDPOINT), then try again. {unchanged}.")
    return None


def _http_message(http, action: str, where: str, source: str, who, action_kind: str,
                  unchanged: str) -> Optional[str]:
    """What an HTTP answer of the Hub means (None: an answer without a status)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    status = http.response.status_code if http.response is not None else None
    detail = _server_detail(http)
    if isinstance(http, RevisionNotFoundError):
        return f"The repo{where} has no such revision: check the branch, tag or commit."
    if isinstance(http, RepositoryNotFoundError) and action_kind == "load":
        return f"No repo{where} on the Hub, or it is private and " + (
            "you are not signed in: sign in first to load your private repos. " if source == ANONYMOUS else
            f"the token from {source} cannot read it. Check the repo id and your sign-in.")
    if status == 401:
        return (f"The Hugging Face token from {source} was rejected (401: invalid, expired or revoked). Sign in "
                f"again, or set a valid HF_TOKEN, or run `hf auth login`. {unchanged}.")
    if status == 403:
        namespace = where.strip().split("/")[0] if where else "this namespace"
        yours = f"{who.name} may write to {', '.join(who.namespaces)}" if who else "check the token's rights"
        return (f"No write access to '{namespace}' (403{detail}): {yours}. Push to a namespace you can write to, "
                f"with a token that has write permission. {unchanged}.")
    if status is not None and status >= 500:
        if action_kind == "push":
            return (f"The Hub answered an error ({status}{detail}) while {action}{where}; the push did not complete "
                    f"and the repo keeps its previous state. {unchanged}: try again.")
        return f"The Hub answered an error ({status}{detail}) while {action}{where}. {unchanged}: try again."
    if status is not None:
        return f"The Hub refused {action}{where} ({status}{detail}). {unchanged}."
    return None


def _server_detail(http) -> str:
    """The Hub's own short reason, if it gave one (never request headers)."""
    message = getattr(http, "server_message", None) if http is not None else None
    if not message:
        return ""
    first = str(message).strip().splitlines()[0][:200]
    return f": {first}"
