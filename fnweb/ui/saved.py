"""State that survives a reload: the browser's key, restoring its saved items on page load, and deleting them.

The browser keeps one random key (``visitor_state()``: a ``gr.BrowserState``, the one
the Fine-tune tab uses for runs). Its value in the browser is encrypted with a secret
the server keeps in its cache folder (``server_secret``), so that the key still reads
after a server restart (Gradio's default secret is new at each start). On page load,
after the model bar's own load, ``restore`` gives the session its store
(``fnweb.ui.visitor_store``) and brings back what the visitor kept: their templates
(the picker lists them again), the experiment results on them (the component cards
and the Experiments tab show the last one), and the last comparison (the Compare tab
shows its form, columns and metrics). The "Saved in this browser" panel at the foot of
the page says what is kept and deletes all of it.

Saving happens where the things are made: ``Session.add`` keeps templates, Compare
keeps its finished comparisons (``fnweb.ui.links.remember``), Experiments its results,
and the typed API (``fnweb.ui.api``) what its calls make in a session that has a store.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Optional

import gradio as gr

from ..cards import component_labels
from ..compare import CONTROL_OF, DEFAULT_ALPHA
from ..compare_record import from_record
from ..controls import DEFAULT_CONTROL
from ..errors import FnwebError
from ..experiment_results import ExperimentResult
from ..io import write_atomic
from ..masks import DEFAULT_PRESERVE_SCOPE
from ..models import cache_dir
from ..templates import Template
from . import render
from .compare_tab import component_choices
from .experiments_tab import OUTPUTS, final_html, result_views
from .feedback import action
from .finetune_runs import attach
from .forms import on
from .model_bar import template_choices
from .state import Session
from .visitor_store import VisitorStore

log = logging.getLogger("fnweb.ui")
STORAGE_KEY = "fnweb-visitor"


def server_secret() -> str:
    """The secret the browser's key is encrypted with: made once, kept in the cache folder (atomically)."""
    path = cache_dir() / "browser-secret"
    try:
        text = path.read_text(encoding="utf-8").strip()
        if len(text) >= 32:
            return text
    except OSError:
        pass
    text = secrets.token_urlsafe(32)
    try:
        write_atomic(path, text)
        path.chmod(0o600)
    except (FnwebError, OSError) as exc:  # a read-only cache: keys then last until the server restarts
        log.warning("The browser secret could not be kept (%s): saved items last until a restart.", exc)
    return text


def visitor_state() -> gr.BrowserState:
    return gr.BrowserState(None, storage_key=STORAGE_KEY, secret=server_secret())


def wire_saved(ctx, loaded) -> dict:
    """The panel at the foot of the page, and the restore that follows the page's own load (``loaded``)."""
    with gr.Accordion("Saved in this browser", open=False, elem_id="fn-saved"):
        summary = gr.Markdown("", elem_id="fn-saved-summary")
        delete = gr.Button("Delete everything saved here", variant="stop", size="sm", elem_id="fn-saved-delete")
    outputs = {"visitor": ctx.visitor, "template": ctx.template, "summary": summary}
    outputs.update(_compare_outputs(ctx))
    outputs.update(_experiment_outputs(ctx))
    restored = on(loaded.then, restore, [ctx.session, ctx.visitor], outputs, api_visibility="private")
    on(delete.click, delete_saved, [ctx.session], {"template": ctx.template, "summary": summary},
       api_visibility="private")
    return {"restored": restored, "summary": summary}


def _compare_outputs(ctx) -> dict:
    tab = ctx.tabs.get("Compare")
    if tab is None:
        return {}
    return {**{f"compare.{name}": tab.form[name] for name in tab.form.names if name != "template"},
            "compare.output": tab.output, "compare.metrics": tab.metrics}


def _experiment_outputs(ctx) -> dict:
    tab = ctx.tabs.get("Experiments")
    if tab is None:
        return {}
    return {f"experiments.{name}": getattr(tab, name) for name in OUTPUTS if name != "downloads"}


@action()
def restore(session: Session, key):
    """Page load: give the session its browser's store, and show again what the visitor kept there."""
    key, store_key = attach(session, key, None)
    session.store = VisitorStore.for_key(key)
    out = {"visitor": key} if store_key else {}
    _restore_templates(session)
    out.update(_restore_experiments(session))
    out.update(_restore_comparison(session))
    return {**out, "template": template_choices(session), "summary": summary_text(session)}


def _restore_templates(session: Session) -> None:
    for item in session.store.items("templates"):
        if session.find_saved(item["id"]) is not None:
            continue
        try:
            template = Template.load(session.store.file("templates", item["id"]))
        except FnwebError as exc:  # damaged: left out, said in the log
            log.warning("A saved template was left out: %s", exc)
            continue
        session.restore(template, str(item.get("origin") or "saved"), str(item.get("name") or "template"),
                        item.get("key"), item.get("source"), item["id"])


def _restore_experiments(session: Session) -> dict:
    """Each kept result back on its template (for the cards); the last one drawn in the Experiments tab."""
    last = None
    for item in session.store.items("experiments"):
        entry = session.find_saved(str(item.get("template")))
        try:
            result = ExperimentResult.from_json(session.store.read("experiments", item["id"]))
        except FnwebError as exc:
            log.warning("A saved experiment result was left out: %s", exc)
            continue
        if entry is not None:
            entry.experiment = result
        last = (result, entry)
    if last is None:
        return {}
    result, entry = last
    views = result_views(result, component_labels(entry.template) if entry is not None else None)
    return {"experiments.status": final_html(result), **{f"experiments.{k}": v for k, v in views.items()}}


def _restore_comparison(session: Session) -> dict:
    """The last comparison: its form, columns and metrics, with its template picked when it is here."""
    items = session.store.items("comparisons")
    if not items:
        return {}
    try:
        data = json.loads(session.store.read("comparisons", items[-1]["id"]))
        setup, comparison = from_record(data)
    except (FnwebError, ValueError) as exc:
        log.warning("The saved comparison was left out: %s", exc)
        return {}
    session.last_comparison = data
    ref = (setup.get("template") or {}).get("ref") or ""
    entry = session.find_saved(ref.removeprefix("saved:")) if ref.startswith("saved:") else None
    if entry is not None:
        session.select(entry.name)
    return {**form_outputs(setup, session), "compare.output": render.columns_html(comparison, "restored"),
            "compare.metrics": render.metrics_frame(comparison)}


def form_outputs(setup: dict, session: Optional[Session] = None) -> dict:
    """The Compare form's fields from a comparison's setup (``fnweb.ui.links.setup_of``); the components with the
    choices of the session's selected template, so that the picker shows them before its own change event."""
    s = setup.get("settings") or {}
    components = list(setup.get("components") or [])
    if session is not None and session.has(session.selected):
        components = gr.update(choices=component_choices(session, session.selected, [])["choices"], value=components)
    return {"compare.prompt": setup.get("prompt", ""), "compare.components": components,
            "compare.columns": list(setup.get("columns") or []), "compare.max_new_tokens": s.get("max_new_tokens"),
            "compare.decoding": "greedy" if s.get("greedy", True) else "sampled",
            "compare.temperature": s.get("temperature"), "compare.seed": s.get("seed"),
            "compare.draws": s.get("random_draws"),
            "compare.preserve_scope": s.get("preserve_scope") or DEFAULT_PRESERVE_SCOPE,
            "compare.alpha": s.get("alpha", DEFAULT_ALPHA), "compare.control_of": s.get("control_of") or CONTROL_OF,
            "compare.control": s.get("control") or DEFAULT_CONTROL}


def summary_text(session: Session) -> str:
    if session.store is None:
        return "Nothing is saved for this page yet."
    counts, size = session.store.counts(), session.store.size()
    if not any(counts.values()):
        return "Nothing saved here yet: templates, comparisons and experiment results you make are kept for " \
               "this browser, and come back after a reload."
    listed = ", ".join(f"{n} {kind if n != 1 else kind[:-1]}" for kind, n in counts.items() if n)
    return (f"Kept for this browser (and for no one else): {listed}, {size / 2**20:.1f} MB of at most "
            f"{session.store.limit / 2**20:.0f} MB; the oldest go first. Fine-tuning runs are kept apart "
            "(Fine-tune tab).")


@action()
def delete_saved(session: Session):
    """Delete everything this browser keeps here, and the templates of this page."""
    if session.store is not None:
        session.store.clear()
    session.forget()
    gr.Info("Deleted: templates, comparisons and experiment results saved for this browser.")
    return {"template": template_choices(session), "summary": summary_text(session)}

