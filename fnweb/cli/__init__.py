"""Command-line tools: thin argument parsers over the engine.

Each ``main`` prints a ``FnwebError`` as one line and exits with code 2.
"""

from __future__ import annotations

import sys
from typing import Callable

from ..errors import FnwebError


def run_cli(body: Callable[[], int], show_errors: bool = True) -> int:
    """Run a CLI body; a user-facing error becomes one line on stderr and exit code 2.

    ``show_errors`` False (a launched process other than the main one, whose errors the
    main process says): the exit code alone.
    """
    try:
        return body() or 0
    except FnwebError as exc:
        if show_errors:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if show_errors:
            print("error: interrupted; nothing was written.", file=sys.stderr)
        return 130
