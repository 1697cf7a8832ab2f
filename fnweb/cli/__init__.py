"""Command-line tools: thin argument parsers over the engine.

Each ``main`` prints a ``FnwebError`` as one line and exits with code 2.
"""

from __future__ import annotations

import sys
from typing import Callable

from ..errors import FnwebError


def run_cli(body: Callable[[], int]) -> int:
    """Run a CLI body; a user-facing error becomes one line on stderr and exit code 2."""
    try:
        return body() or 0
    except FnwebError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written.", file=sys.stderr)
        return 130
