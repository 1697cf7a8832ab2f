"""Uploaded files: how large they may be, checked before any work is done with them.

Gradio refuses a larger upload at the door (``max_file_size``, set by ``fnweb.ui.launch_options``
to ``max_upload_bytes()``); handlers check the files they get again (``checked``), with
the tighter bound of their kind where there is one (a template file:
``fnweb.templates.MAX_TEMPLATE_BYTES``), so that no handler reads more than its bound
whatever reached it. The default, 50 MB (``FNWEB_MAX_UPLOAD_MB``), is tens of thousands
of long prompt/response examples: more than a template build (samples per dataset) or a
fine-tune on a Space uses, and its parsing stays within a few hundred MB of memory.

It knows nothing about what the files hold.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import FnwebError

DEFAULT_MAX_UPLOAD_MB = 50


def max_upload_bytes() -> int:
    """The largest file a visitor may upload (FNWEB_MAX_UPLOAD_MB, default 50 MB)."""
    return int(float(os.environ.get("FNWEB_MAX_UPLOAD_MB") or DEFAULT_MAX_UPLOAD_MB) * 2**20)


def checked(paths: list[Path], limit: Optional[int] = None, what: str = "file") -> list[Path]:
    """The paths, each refused if larger than ``limit`` (default ``max_upload_bytes()``)."""
    limit = max_upload_bytes() if limit is None else limit
    for path in paths:
        try:
            size = Path(path).stat().st_size
        except OSError:
            continue  # a missing file is said by whoever reads it
        if size > limit:
            raise FnwebError(f"The {what} {Path(path).name} is {size / 2**20:,.1f} MB; uploads may be at most "
                             f"{limit / 2**20:,.3g} MB here. Use a smaller file (fewer examples are enough).")
    return paths
