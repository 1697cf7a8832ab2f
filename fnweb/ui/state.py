"""One visitor's session: the model they chose, the templates they built or uploaded, their jobs and runs.

A ``Session`` lives in a ``gr.State``, so every browser tab (and every API client)
gets its own; nothing here is a module global. Loaded models are not stored here:
the session keeps the ``ModelRequest`` and asks ``fnweb.models.load_model``, whose
cache shares models read-only between visitors. Templates are kept by display name,
newest last, at most ``MAX_TEMPLATES`` of them; their files for download live in a
per-session temporary folder, each under a name of its own (``unique_name``: a short
readable slug plus a random id), so that two templates never share a file whatever
their labels; labels are for display only.

It knows nothing about Gradio components.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from ..errors import FnwebError
from ..models import LoadedModel, ModelRequest, load_model
from ..templates import Template
from .jobs import Job

MAX_TEMPLATES = 20


@dataclass
class SessionTemplate:
    """A template this visitor has, with where it came from."""

    name: str  # display name, unique in the session
    template: Template
    origin: str  # "built" | "uploaded" | "preset"
    path: Path  # its JSON file, for download
    key: Optional[str] = None  # settings signature of a build (lets a preset reuse it)
    experiment: Optional[object] = None  # the visitor's last experiment on it (an ExperimentResult), for its cards


@dataclass
class Session:
    model: Optional[ModelRequest] = None
    templates: dict[str, SessionTemplate] = field(default_factory=dict)
    selected: Optional[str] = None
    job: Optional[Job] = None  # the running (or last) job: Stop acts on it
    runs: dict[str, Path] = field(default_factory=dict)  # fine-tuning runs of this visitor: run id -> folder
    runs_folder: Optional[Path] = None  # where this visitor's runs live (set by the Fine-tune tab)
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

    def add(self, template: Template, origin: str, label: str, key: Optional[str] = None) -> SessionTemplate:
        """Keep a template under a new unique name and select it."""
        name = self._unique(label)
        path = template.save(self.folder / unique_name(name, ".json"))
        entry = SessionTemplate(name=name, template=template, origin=origin, path=path, key=key)
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
