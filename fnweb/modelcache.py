"""The shared cache of loaded models: bounded in count and bytes; the least recently used idle model goes first.

Visitors who ask for the same model share one copy (``fnweb.models.load_model``). The
cache keeps at most ``max_models()`` models (``FNWEB_MAX_MODELS``, default 3) and at most
``max_bytes()`` of weights (``FNWEB_MAX_MODEL_GB``; default half the memory models go to:
the first GPU's, else the machine's; the other half is for activations, captures,
fine-tuning copies and everything else). Before a load it makes room for the model's
estimated size, after it for the measured one, by evicting the least recently used
model that no job holds: a job wraps its work in ``hold(model)`` and a held model is
never evicted (a cache full of held models lets a load go over, for as long as they
are held, rather than fail a visitor's job). A model larger than the whole budget is
refused. An evicted model is loaded again at its next use; ``note(key)`` says what
happened to it, for the page.

Only one load runs at a time; cache hits never wait for it. This module knows nothing
about transformers: it stores what a loader returns and measures it with a given function.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Hashable, Iterator, Optional

from .errors import FnwebError

DEFAULT_MAX_MODELS = 3


def max_models() -> int:
    """Models kept at once (FNWEB_MAX_MODELS, default 3: the default model and two others)."""
    return max(1, int(os.environ.get("FNWEB_MAX_MODELS") or DEFAULT_MAX_MODELS))


def _device_memory() -> int:
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # no usable GPU: the machine's memory is what models use
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # a system without sysconf: assume a 16 GB machine
        return 16 * 2**30


def max_bytes() -> int:
    """Bytes of weights kept at once (FNWEB_MAX_MODEL_GB, default half the memory models go to)."""
    value = os.environ.get("FNWEB_MAX_MODEL_GB")
    return int(float(value) * 2**30) if value else _device_memory() // 2


def gigabytes(size: int) -> str:
    return f"{size / 2**30:,.2f} GB"


def limits_text() -> str:
    return f"this server keeps at most {max_models()} models and {gigabytes(max_bytes())} of weights"


@dataclass
class _Entry:
    value: Any
    size: int
    used: float  # time.monotonic() of the last use


class ModelCache:
    """Loaded models by request, within ``max_models()`` and ``max_bytes()`` (read at each load)."""

    def __init__(self, release: Callable[[], None] = lambda: None):
        self._entries: dict[Hashable, _Entry] = {}
        self._holds: dict[int, int] = {}  # id(held object) -> jobs holding it
        self._notes: dict[Hashable, str] = {}  # what happened to a model that was evicted (then reloaded)
        self._evicted: set[Hashable] = set()
        self._lock = threading.Lock()  # the state above
        self._loading = threading.Lock()  # one load at a time
        self._release = release  # frees memory after an eviction (e.g. the GPU allocator's cache)

    def get(self, key: Hashable, load: Callable[[], Any], size: Callable[[Any], int],
            estimate: Callable[[], Optional[int]] = lambda: None, held: Callable[[Any], object] = lambda v: v) -> Any:
        """The cached value for ``key``, or ``load()``'s, after making room for it."""
        found = self._hit(key)
        if found is not None:
            return found
        with self._loading:
            found = self._hit(key)
            if found is not None:
                return found
            expected = estimate()
            self._refuse_if_too_big(key, expected, "its files")
            self._make_room(1, expected or 0, held)
            value = load()
            measured = size(value)
            self._refuse_if_too_big(key, measured, "its loaded weights")
            with self._lock:
                self._entries[key] = _Entry(value, measured, time.monotonic())
                if key in self._evicted:
                    self._evicted.discard(key)
                    self._notes[key] = f"{self._notes.get(key, 'It was unloaded')}; loaded again at {_clock()}"
            self._make_room(0, 0, held, keep=key)
            return value

    def _hit(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry.used = time.monotonic()
            return entry.value

    @staticmethod
    def _refuse_if_too_big(key: Hashable, size: Optional[int], what: str) -> None:
        if size is not None and size > max_bytes():
            name = getattr(key, "model_id", key)
            raise FnwebError(
                f"{name} is too large for this server: {gigabytes(size)} by {what}, and {limits_text()} "
                "(FNWEB_MAX_MODEL_GB, FNWEB_MAX_MODELS). Choose a smaller model.")

    def _make_room(self, slots: int, incoming: int, held: Callable[[Any], object],
                   keep: Optional[Hashable] = None) -> None:
        """Evict least recently used idle models until ``slots`` more models and ``incoming`` bytes fit."""
        evicted = False
        with self._lock:
            while (len(self._entries) + slots > max_models()
                   or sum(e.size for e in self._entries.values()) + incoming > max_bytes()):
                idle = [(e.used, k) for k, e in self._entries.items()
                        if k != keep and not self._holds.get(id(held(e.value)))]
                if not idle:
                    break  # everything is in use: go over until jobs end, rather than fail them
                _, oldest = min(idle, key=lambda pair: pair[0])
                self._entries.pop(oldest)
                self._evicted.add(oldest)
                self._notes[oldest] = f"It was unloaded at {_clock()} to make room for another model ({limits_text()})"
                evicted = True
        if evicted:
            gc.collect()  # models hold reference cycles: free their memory now, not at some later collection
            self._release()

    @contextmanager
    def hold(self, obj: object) -> Iterator[None]:
        """While the block runs, the cached model ``obj`` is in use and never evicted."""
        with self._lock:
            self._holds[id(obj)] = self._holds.get(id(obj), 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._holds.pop(id(obj)) - 1
                if left:
                    self._holds[id(obj)] = left
                for entry in self._entries.values():
                    if entry.value is obj or getattr(entry.value, "model", None) is obj:
                        entry.used = time.monotonic()  # a job just ended on it: recently used

    def note(self, key: Hashable) -> Optional[str]:
        """What happened to ``key``'s model: unloaded (and when), or unloaded and loaded again; None if nothing."""
        with self._lock:
            return self._notes.get(key)

    def is_loaded(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._notes.clear()
            self._evicted.clear()
        gc.collect()
        self._release()


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")
