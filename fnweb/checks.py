"""Numbers people give fnweb: finite, whole where a count or an id is meant, and within range.

Command lines, forms and files hand over numbers as ints, floats or text. These helpers
turn them into ``int`` or ``float`` or raise a ``FnwebError`` that names the setting and
what it must be: ``nan`` and ``inf`` are never a setting, ``2.5`` is never an id or a
count (``int(2.5)`` would quietly make it 2), and ``True`` is not the number 1. A seed
must lie in ``0..MAX_SEED``, the range every seeded library here accepts (numpy refuses
negative seeds, scikit-learn's FastICA anything above 2**32 - 1).

It knows nothing about what the numbers are for.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

from .errors import FnwebError

MAX_SEED = 2**32 - 1
_WHOLE_TEXT = re.compile(r"[+-]?\d+")


def finite(value, what: str) -> float:
    """``value`` as a finite float, or an error naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise FnwebError(f"{what} must be a number (got {value!r}).") from exc
    if isinstance(value, bool) or not math.isfinite(number):
        raise FnwebError(f"{what} must be a finite number (got {value!r}).")
    return number


def whole_number(value, what: str) -> int:
    """``value`` as an int: an int, a float with nothing after the point, or digits as text."""
    if isinstance(value, bool):
        raise FnwebError(f"{what} must be a whole number (got {value!r}).")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _WHOLE_TEXT.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise FnwebError(f"{what} must be a whole number (got {value!r}).")


def whole_numbers(values: Iterable, what: str) -> list[int]:
    """Each of ``values`` as an int (see ``whole_number``); the error names the first that is not."""
    return [whole_number(v, what) for v in values]


def check_range(what: str, value, low: float, high: float, hint: str = ""):
    """``value`` itself when ``low <= value <= high`` (NaN never is), else an error naming the range."""
    if not (low <= value <= high):
        raise FnwebError(f"{what} must lie between {low:g} and {high:g} (got {value:g}).{hint}")
    return value


def check_seed(value, what: str = "Seed") -> int:
    """A seed every seeded library here accepts: a whole number in 0..MAX_SEED."""
    seed = whole_number(value, what)
    if not 0 <= seed <= MAX_SEED:
        raise FnwebError(f"{what} must lie between 0 and {MAX_SEED} (got {seed}).")
    return seed
