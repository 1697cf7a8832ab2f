"""What a name in a model, dataset or repo field stands for: the embedded model, a built-in set, a path, a Hub id.

Every front end and engine module asks these questions here, so they are answered the
same way everywhere:

- **the embedded model**: ``EMBEDDED_ID`` (``embedded`` on a command line), a copy of
  ``EMBEDDED_HUB_ID``; outside this machine (a model card, an adapter's base) it goes by that Hub id;
- **a built-in prompt set**: ``builtin:NAME``;
- **a local path**: a name that exists on disk, or that can only be a path (it starts
  with ``/``, ``.``, ``~`` or ``\\``, holds more than one ``/``, or ``..``, which no Hub id does);
- **a dataset file**: a name ending in one of ``LOCAL_SUFFIXES``;
- **a Hub id**: ``namespace/name`` that is none of the above and that ``huggingface_hub`` accepts.

This module knows nothing about loading any of them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .errors import FnwebError

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_ID = EMBEDDED_PREFIX + "SmolLM2-135M-Instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded file is a copy of
EMBEDDED_ALIASES = ("embedded", EMBEDDED_ID)  # what a command line may say for it
BUILTIN_PREFIX = "builtin:"
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")  # dataset files fnweb reads
PATH_STARTS = ("/", ".", "~", "\\")  # no Hub id starts so


def is_embedded(model_id: Optional[str]) -> bool:
    return model_id == EMBEDDED_ID


def model_alias(text: str) -> str:
    """A command line's model argument: ``embedded`` (or the embedded id) means the embedded model."""
    return EMBEDDED_ID if text in EMBEDDED_ALIASES else text


def hub_base_id(model_id: str) -> str:
    """What a model is called outside this machine (the embedded copy by its original's Hub id)."""
    return EMBEDDED_HUB_ID if is_embedded(model_id) else model_id


def is_builtin(name: str) -> bool:
    return name.strip().startswith(BUILTIN_PREFIX)


def builtin_name(name: str) -> str:
    """``builtin:code`` -> ``code`` (other names unchanged)."""
    return name.strip().removeprefix(BUILTIN_PREFIX)


def looks_like_path(text: str) -> bool:
    """Whether a name can only be a path on disk (never a Hub id), whether or not it exists."""
    return text.startswith(PATH_STARTS) or text.count("/") > 1 or ".." in text


def is_local(name: str) -> bool:
    """Whether a name is, or can only be, a path on this machine."""
    return looks_like_path(name) or Path(name).expanduser().exists()


def is_dataset_file(name: str) -> bool:
    return Path(name).suffix.lower() in LOCAL_SUFFIXES


def short_name(name: str) -> str:
    """A short name for a prompt set: ``builtin:code`` -> code, a file -> its stem, a Hub id -> its last part."""
    if is_builtin(name):
        return builtin_name(name)
    return Path(name).stem if Path(name).suffix else name.split("/")[-1]


def model_short_name(model_id: str) -> str:
    """A model's last name part: ``org/model`` -> model, the embedded model -> its own name."""
    return Path(str(model_id).removeprefix(EMBEDDED_PREFIX)).name


def hub_model_id(model_id: Optional[str]) -> Optional[str]:
    """The Hub id a model id stands for (the embedded copy's original), or None (a local folder, no namespace)."""
    if not model_id:
        return None
    if is_embedded(model_id):
        return EMBEDDED_HUB_ID
    if "/" not in model_id or is_local(model_id):
        return None
    return model_id if _valid_repo_id(model_id) else None


def is_hub_dataset(name: str) -> bool:
    """Whether a prompt source names a Hub dataset (not a built-in set, not a dataset file)."""
    return bool(name) and not is_builtin(name) and not is_dataset_file(name)


def _valid_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def check_repo_id(repo_id: Optional[str]) -> str:
    """A Hub repo id ('name' or 'namespace/name', or a Hub URL), checked without any network call."""
    text = (repo_id or "").strip()
    text = re.sub(r"^https?://[^/]+/", "", text).strip("/")  # a pasted repo URL
    if not text:
        raise FnwebError("No repo id given: enter one like 'your-name/my-template'.")
    if not _valid_repo_id(text):
        raise FnwebError(
            f"'{repo_id}' is not a valid Hub repo id: use 'name' or 'namespace/name' with letters, digits, '-', "
            "'_' or '.', at most 96 characters, no '--' or '..', not starting or ending with '-' or '.'."
        )
    return text
