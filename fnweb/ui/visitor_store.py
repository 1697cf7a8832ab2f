"""What the app keeps for one browser on disk: its templates, last comparisons and experiment results, as JSON.

A visitor is known by the random key their browser keeps (``fnweb.ui.saved`` holds it
in a ``gr.BrowserState``, the same key as their fine-tuning runs). Their items live in
``state_root() / <hash of the key>``: the folder name does not give the key away, and
without the key no visitor can read another's items. Each item is one JSON file
(``templates/``, ``comparisons/``, ``experiments/``), listed with its plain metadata
in ``index.json``; every write is atomic (temp file and rename), nothing is pickled,
and a malformed index or item is read as absent, never trusted.

Bounds per visitor: at most ``LIMITS[kind]`` items of each kind (the oldest go first)
and at most ``max_visitor_bytes()`` in all (``FNWEB_VISITOR_MB``, default 64 MB: two
large templates, or hundreds of small-model ones); when a new item would pass the
bound, the oldest items go first, and an item larger than the bound on its own is not
kept. ``clear`` deletes everything the visitor has here.

It knows nothing about Gradio, sessions or what the items mean.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from ..errors import FnwebError
from ..io import read_text, write_atomic
from .state import MAX_TEMPLATES

KINDS = ("templates", "comparisons", "experiments")
LIMITS = {"templates": MAX_TEMPLATES, "comparisons": 10, "experiments": 5}
DEFAULT_MAX_VISITOR_MB = 64
_ID_CHARS = set("0123456789abcdef")
_LOCKS: dict[Path, threading.Lock] = {}  # one per visitor folder: two pages of one browser write in turn
_LOCKS_GUARD = threading.Lock()


def state_root() -> Path:
    """The folder that holds every visitor's saved items (FNWEB_STATE_DIR, else the temp folder)."""
    return Path(os.environ.get("FNWEB_STATE_DIR") or Path(tempfile.gettempdir()) / "fnweb-visitors")


def max_visitor_bytes() -> int:
    """The most one visitor may keep here (FNWEB_VISITOR_MB, default 64 MB)."""
    return int(float(os.environ.get("FNWEB_VISITOR_MB") or DEFAULT_MAX_VISITOR_MB) * 2**20)


def valid_id(item_id) -> bool:
    return isinstance(item_id, str) and len(item_id) == 16 and set(item_id) <= _ID_CHARS


class VisitorStore:
    """One visitor's saved items (see the module docstring)."""

    def __init__(self, folder: Path, limit: Optional[int] = None) -> None:
        self.folder = Path(folder)
        self.limit = max_visitor_bytes() if limit is None else limit
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(self.folder, threading.Lock())

    @classmethod
    def for_key(cls, key: str) -> "VisitorStore":
        return cls(state_root() / hashlib.sha256(f"fnweb-state|{key}".encode()).hexdigest()[:32])

    # ---- reading ----

    def items(self, kind: str) -> list[dict]:
        """The metadata of the kept items of ``kind``, oldest first (each has ``id``, ``bytes``, ``saved``)."""
        return list(self._index()[_checked(kind)])

    def read(self, kind: str, item_id: str) -> str:
        """An item's JSON text; a clear error when it is not (or no longer) kept."""
        return read_text(self.file(kind, item_id), f"the saved {kind[:-1]}")

    def file(self, kind: str, item_id: str) -> Path:
        """An item's file (for readers that check files themselves); a clear error when it is not kept."""
        if not valid_id(item_id) or not any(i["id"] == item_id for i in self.items(kind)):
            raise FnwebError(f"No saved {kind[:-1]} '{item_id}' in this browser: it was deleted, pushed out by "
                             "newer ones, or saved in another browser.")
        return self._path(kind, item_id)

    def size(self) -> int:
        return sum(i["bytes"] for kind in KINDS for i in self._index()[kind])

    def counts(self) -> dict[str, int]:
        index = self._index()
        return {kind: len(index[kind]) for kind in KINDS}

    # ---- writing ----

    def add(self, kind: str, text: str, meta: Optional[dict] = None) -> str:
        """Keep ``text`` (JSON) as a new item with plain ``meta``; its id. The oldest items go to stay in bounds."""
        size = len(text.encode("utf-8"))
        if size > self.limit:
            raise FnwebError(f"This {kind[:-1]} is {size / 2**20:.1f} MB, more than the {self.limit / 2**20:.0f} MB "
                             "this app keeps per browser: it stays in this page only (download it to keep it).")
        item_id = uuid.uuid4().hex[:16]
        with self._lock:
            write_atomic(self._path(_checked(kind), item_id), text)
            index = self._index()
            index[kind].append({**(meta or {}), "id": item_id, "bytes": size, "saved": time.time()})
            dropped = _over_bounds(index, self.limit)
            self._write_index(index)
        for old_kind, old_id in dropped:
            self._path(old_kind, old_id).unlink(missing_ok=True)
        return item_id

    def remove(self, kind: str, item_id: str) -> None:
        with self._lock:
            index = self._index()
            index[_checked(kind)] = [i for i in index[kind] if i["id"] != item_id]
            self._write_index(index)
        if valid_id(item_id):
            self._path(kind, item_id).unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete everything this visitor keeps here."""
        with self._lock:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ---- files ----

    def _path(self, kind: str, item_id: str) -> Path:
        return self.folder / kind / f"{item_id}.json"

    def _index(self) -> dict[str, list[dict]]:
        path = self.folder / "index.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}  # none yet, or unreadable: nothing is trusted from it
        data = data if isinstance(data, dict) else {}
        return {kind: [i for i in data.get(kind, []) if _entry_ok(i)] for kind in KINDS}

    def _write_index(self, index: dict) -> None:
        write_atomic(self.folder / "index.json", json.dumps(index, ensure_ascii=False))


def _checked(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"No kind '{kind}' (one of {', '.join(KINDS)}).")
    return kind


def _entry_ok(entry) -> bool:
    return isinstance(entry, dict) and valid_id(entry.get("id")) and isinstance(entry.get("bytes"), int)


def _over_bounds(index: dict[str, list[dict]], limit: int) -> list[tuple[str, str]]:
    """Drop (in place) the oldest items past each kind's count and then past the byte bound; what was dropped."""
    dropped = []
    for kind in KINDS:
        while len(index[kind]) > LIMITS[kind]:
            dropped.append((kind, index[kind].pop(0)["id"]))
    while sum(i["bytes"] for kind in KINDS for i in index[kind]) > limit:
        kind = min((k for k in KINDS if index[k]), key=lambda k: index[k][0]["saved"])
        dropped.append((kind, index[kind].pop(0)["id"]))
    return dropped
