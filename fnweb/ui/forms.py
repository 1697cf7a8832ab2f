"""Reading form values: numbers from fields that may be empty, fractional or text (through the API).

Each helper names the field in its error, so the message says which setting to fix.
"""

from __future__ import annotations

import math

from ..errors import FnwebError


def real(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise FnwebError(f"{what} is {'empty' if value in (None, '') else repr(value)}: enter a number.") from exc
    if not math.isfinite(number):
        raise FnwebError(f"{what} must be a finite number (got {value}).")
    return number


def whole(value, what: str) -> int:
    number = real(value, what)
    if number != int(number):
        raise FnwebError(f"{what} must be a whole number (got {value}).")
    return int(number)
