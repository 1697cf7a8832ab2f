"""One visitor's session: the model they chose, the templates they built or uploaded, their jobs and runs.

A ``Session`` lives in a ``gr.State``, so every browser tab (and every API client)
gets its own; nothing here is a module global. Loaded models are not stored here:
the session keeps the ``ModelRequest`` and asks ``fnweb.models.load_model``, whose
cache shares models read-only between visitors. Templates are kept by display name,
newest last, at most ``MAX_TEMPLATES`` of them; their files for download live in a
per-session temporary folder, each under a name of its own (``unique_name``: a short
readable slug plus a random id), so that two templates never share a file whatever
their labels; labels are for display only.

When the page has given the session its browser's store (``store``: a
``fnweb.ui.visitor_store.VisitorStore``, set by ``fnweb.ui.saved``), every template
added is also kept there (``saved_id``), so that it comes back after a reload or a
server restart; ``restore`` adds a kept one without keeping it twice.

It knows nothing about Gradio components.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from ..errors import FnwebError
from ..models import LoadedModel, ModelRequest, load_model
from ..templates import Template
from .jobs import Job

MAX_TEMPLATES = 20
log = logging.getLogger("fnweb.ui")


@dataclass
class SessionTemplate:
    """A template this visitor has, with where it came from."""

    name: str  # display name, unique in the session
    template: Template
    origin: str  # "built" | "uploaded" | "preset"
    path: Path  # its JSON file, for download
    key: Optional[str] = None  # settings signature of a build (lets a preset reuse it)
    experiment: Optional[object] = None  # the visitor's last experiment on it (an ExperimentResult), for its cards
    source: Optional[str] = None  # how a link finds it again: "hub:<repo>[@<revision>]" or "preset"
    saved_id: Optional[str] = None  # its id in the browser's store, when kept there


@dataclass
class Session:
    model: Optional[ModelRequest] = None
    templates: dict[str, SessionTemplate] = field(default_factory=dict)
    selected: Optional[str] = None
    job: Optional[Job] = None  # the running (or last) job: Stop acts on it
    runs: dict[str, Path] = field(default_factory=dict)  # fine-tuning runs of this visitor: run id -> folder
    runs_folder: Optional[Path] = None  # where this visitor's runs live (set by the Fine-tune tab)
    visitor_key: Optional[str] = None  # the browser's key (runs and saved items), once the page has sent it
    store: Optional[Any] = None  # the browser's saved items (a VisitorStore), once the page has sent its key
    last_comparison: Optional[dict] = None  # the last finished comparison (``fnweb.compare_record.record``)
    _folder: Optional[Path] = None

    def __deepcopy__(self, memo) -> "Session":
        # gr.State deep-copies its initial value for each visitor: each one starts afresh.
        return Session()

    def finish(self, job: Optional[Job]) -> None:
        """Clean up a job that has ended; forget it unless a newer one has taken its place."""
        if job is None:
            return
        job.cleanup()
        if self.job is job:
            self.job = None

    # ---- model ----

    def require_model(self) -> LoadedModel:
        if self.model is None:
            raise FnwebError("No model loaded: choose a model in the bar at the top and press Load.")
        return load_model(self.model)

    # ---- templates ----

    @property
    def folder(self) -> Path:
        if self._folder is None or not self._folder.exists():
            self._folder = Path(tempfile.mkdtemp(prefix="fnweb-session-"))
        return self._folder

    def add(self, template: Template, origin: str, label: str, key: Optional[str] = None,
            source: Optional[str] = None) -> SessionTemplate:
        """Keep a template under a new unique name (and in the browser's store) and select it."""
        entry = self.restore(template, origin, label, key, source)
        if self.store is not None:
            meta = {"name": entry.name, "origin": origin, "key": key, "source": source}
            try:
                entry.saved_id = self.store.add("templates", template.to_json(), meta)
            except FnwebError as exc:  # too large to keep: it stays in this page only
                log.warning("Template not kept for the browser: %s", exc)
        return entry

    def restore(self, template: Template, origin: str, label: str, key: Optional[str] = None,
                source: Optional[str] = None, saved_id: Optional[str] = None) -> SessionTemplate:
        """Add a template (one already kept in the store: ``saved_id``) under a new unique name and select it."""
        name = self._unique(label)
        path = template.save(self.folder / unique_name(name, ".json"))
        source = source or ("preset" if origin == "preset" else None)  # a preset's is rebuilt from its recipe
        entry = SessionTemplate(name=name, template=template, origin=origin, path=path, key=key, source=source,
                                saved_id=saved_id)
        self.templates[name] = entry
        self.selected = name
        while len(self.templates) > MAX_TEMPLATES:  # drop the oldest (never the one just added)
            oldest = next(iter(self.templates))
            self.templates.pop(oldest).path.unlink(missing_ok=True)
        return entry

    def _unique(self, label: str) -> str:
        label = label.strip() or "template"
        if label not in self.templates:
            return label
        n = 2
        while f"{label} ({n})" in self.templates:
            n += 1
        return f"{label} ({n})"

    def find_key(self, key: str) -> Optional[SessionTemplate]:
        return next((t for t in reversed(self.templates.values()) if t.key == key), None)

    def get(self, name: Optional[str]) -> SessionTemplate:
        """The template called ``name`` (or the selected one), or a clear error."""
        name = name or self.selected
        if not isinstance(name, (str, type(None))):
            raise FnwebError(f"A template name must be text (got {type(name).__name__}).")
        if not self.templates:
            raise FnwebError("No template yet: build one in the Templates tab or upload a template file.")
        if name not in self.templates:
            raise FnwebError(f"No template called '{name}' in this session; pick one from the list.")
        return self.templates[name]

    def select(self, name: Optional[str]) -> None:
        if name:
            self.get(name)
            self.selected = name

    def has(self, name) -> bool:
        return isinstance(name, str) and name in self.templates

    def names(self) -> list[str]:
        return list(self.templates)

    def find_saved(self, saved_id: str) -> Optional[SessionTemplate]:
        return next((t for t in self.templates.values() if t.saved_id == saved_id), None)

    def keep(self, kind: str, text: str, meta: Optional[dict] = None) -> Optional[str]:
        """Keep an item (JSON) in the browser's store, when the page has given one; its id, or None."""
        if self.store is None:
            return None
        try:
            return self.store.add(kind, text, meta)
        except FnwebError as exc:
            log.warning("Not kept for the browser: %s", exc)
            return None

    def keep_experiment(self, entry: Optional["SessionTemplate"], result) -> None:
        """A finished experiment on its template (the component cards show its lesion effects) when the session has
        the template, and in the browser's store."""
        if entry is not None:
            entry.experiment = result
        self.keep("experiments", result.to_json(), {"template": entry.saved_id if entry else None,
                                                    "name": entry.name if entry else None})

    def forget(self) -> None:
        """Drop every template and the last comparison (the browser's store is cleared by its owner)."""
        for entry in self.templates.values():
            entry.path.unlink(missing_ok=True)
        self.templates.clear()
        self.selected = None
        self.last_comparison = None

    def close(self) -> None:
        """Delete this session's files (called when Gradio drops the state)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def unique_name(label: str, suffix: str = "") -> str:
    """A file name no other file of the session has: a readable slug of ``label`` and a random id."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_")[:40] or "file"
    return f"{slug}-{uuid.uuid4().hex}{suffix}"


def delete_session(session) -> None:
    if isinstance(session, Session):
        session.close()


def stamp() -> str:
    return datetime.now().strftime("%H:%M:%S")
