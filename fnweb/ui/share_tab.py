"""The Share tab: push a template or a fine-tuning run to the Hugging Face Hub, and load them back.

Sign-in: on a Space, the Hugging Face button (``gr.LoginButton``). Every Hub handler
takes a ``gr.OAuthToken | None`` parameter, which Gradio fills from the visitor's
sign-in (or an API client's ``oauth_token``); only its text is passed on, to
``fnweb.hub``. An app serving many visitors (a Space: ``fnweb.access``) uses that token
and nothing else: without it, Check account and pushes say "sign in first" and loads
go out anonymous (public repos only); HF_TOKEN and the saved login, which belong to the
server's owner, are never used for a visitor. An app for one user (local) falls back
to them, and never uses the placeholder of a local sign-in. A token is never shown,
logged or kept in a ``gr.State``. Off a Space the button is left out
unless FNWEB_HF_SIGN_IN=1: Gradio's local stand-in for it needs a saved login and a
Hub call when the app starts (without them the app would not start) and only ever
yields that placeholder.

Before a push, "Check account" (or leaving a repo field) says whose account will
receive it (as ``hub.describe_target`` words it); each push says it again as it
starts, then shows the repo's address as a link. A template loaded from the Hub
joins the visitor's templates (so every tab can use it); a run loaded from the Hub
joins this tab's run list. The runs listed are the visitor's own: those the session
records (``session.runs``, when the Fine-tune tab keeps one) and those loaded here;
off a Space a run folder's path may also be typed. Faults become messages in the
page; a failed push changes nothing local and can simply be retried.

This module builds and wires; what it says about accounts is ``share_account``'s, the
visitor's run list ``share_runs``'s, and the Hub work ``fnweb.hub``'s.
"""

from __future__ import annotations

from typing import Optional

import gradio as gr

from .. import hub
from ..access import multi_user
from ..archs import layout_of
from ..errors import FnwebError
from ..finetune.merge import check_mergeable
from ..finetune.runs import read_run
from ..hubcard import HEATMAP_FILENAME, coverage_png
from ..io import write_atomic
from ..templates import Template
from .feedback import action, explain
from .forms import Form, Tab, on
from .model_bar import template_choices
from .share_account import CHECK_HINT, sign_in_available, sign_in_help
from .share_account import note as _note  # the handlers' own names for these helpers
from .share_account import push_target_note as _target
from .share_account import safe_target_note as _safe_target
from .share_runs import chosen_run_folder as _run_folder
from .share_runs import describe_run, visitor_runs
from .state import Session, SessionTemplate

HUB_QUEUE = "hub"
HUB_JOBS = 4  # Hub calls wait on the network, not the CPU: a few at once
KINDS = ("template", "run")


def build_share_tab(ctx) -> Tab:
    loaded_runs = gr.State([])
    with gr.Row(equal_height=False):
        with gr.Column(scale=6, min_width=380):
            parts = {**_account_section(), **_template_section(ctx), **_run_section()}
        with gr.Column(scale=5, min_width=360):
            parts.update(**_result_section(), **_load_section())
    tab = Tab(parts.pop("form"), "result", **parts, loaded_runs=loaded_runs)
    _wire(ctx, tab)
    return tab


# Each section builds its components in page order and returns its form and parts by name.

def _account_section() -> dict:
    signed = sign_in_available()
    gr.Markdown("#### 1 · Account", elem_classes="fn-step")
    gr.Markdown(sign_in_help(signed), elem_classes="fn-note")
    with gr.Row():
        sign_in = gr.LoginButton(size="md", scale=2, min_width=220) if signed else None
        check = gr.Button("Check account", size="md", scale=1, min_width=140, elem_id="fn-share-check")
    return {"sign_in": sign_in, "check": check}


def _template_section(ctx) -> dict:
    """Section 2: the template push's form (the tab's own), the line naming the template, the button."""
    gr.Markdown("#### 2 · Push a template", elem_classes="fn-step")
    template_line = gr.Markdown(_template_line(None), elem_id="fn-share-template")
    repo = gr.Textbox(label="Repo", placeholder="name, or namespace/name", elem_id="fn-share-repo",
                      info="Prefilled from the model and prompt sets; a bare name goes to your account")
    with gr.Row():
        private = gr.Checkbox(False, label="Private", min_width=100, elem_id="fn-share-private")
        heatmap = gr.Checkbox(True, label=f"Include the coverage image ({HEATMAP_FILENAME})", min_width=200)
        overwrite = gr.Checkbox(False, label="Overwrite a repo holding other files", min_width=200,
                                elem_id="fn-share-overwrite")
    message = gr.Textbox(label="Commit message", placeholder="blank: 'Upload fnweb template (…)'",
                         elem_id="fn-share-message")
    target = gr.HTML(_note("info", CHECK_HINT), elem_id="fn-share-target")
    push = gr.Button("Push template", variant="primary", elem_id="fn-share-push")
    form = Form(template=ctx.template, repo=repo, private=private, overwrite=overwrite, heatmap=heatmap,
                message=message)
    return {"form": form, "template_line": template_line, "target": target, "push": push}


def _run_section() -> dict:
    """Section 3: the run push's form, the run list's refresh, the line describing the run, the button."""
    gr.Markdown("#### 3 · Push a fine-tuning run", elem_classes="fn-step")
    with gr.Row(equal_height=False, elem_classes="fn-bar-row"):
        run = gr.Dropdown([], value=None, label="Run", allow_custom_value=not multi_user(), scale=5,
                          elem_id="fn-share-run",
                          info="Your runs (Fine-tune tab, or loaded below)"
                          + ("" if multi_user() else "; or type a run folder's path"))
        refresh_runs = gr.Button("↻ Refresh", size="md", scale=1, min_width=100, elem_id="fn-share-refresh")
    run_line = gr.Markdown("", elem_id="fn-share-run-line")
    run_repo = gr.Textbox(label="Repo", placeholder="name, or namespace/name", elem_id="fn-share-run-repo")
    with gr.Row():
        run_private = gr.Checkbox(False, label="Private", min_width=100)
        run_overwrite = gr.Checkbox(False, label="Overwrite a repo holding other files", min_width=200)
    run_merged = gr.Checkbox(False, label="Also push a merged model", elem_id="fn-share-run-merged",
                             info="merged/: the adapter folded into the base weights, the mask baked in; "
                                  "loads with plain transformers (not for 4/8-bit runs)")
    run_message = gr.Textbox(label="Commit message", placeholder="blank: 'Upload fnweb LoRA run (…)'")
    run_target = gr.HTML("", elem_id="fn-share-run-target")
    push_run = gr.Button("Push run", variant="primary", elem_id="fn-share-push-run")
    run_form = Form(run=run, repo=run_repo, private=run_private, overwrite=run_overwrite, message=run_message,
                    merged=run_merged)
    return {"run_form": run_form, "refresh_runs": refresh_runs, "run_line": run_line, "run_target": run_target,
            "push_run": push_run}


def _result_section() -> dict:
    gr.Markdown("#### Result", elem_classes="fn-step")
    result = gr.HTML(_note("info", "The pushed repo's address appears here."), elem_id="fn-share-result")
    preview = gr.Image(None, type="filepath", label=f"{HEATMAP_FILENAME}: components (rows) x layers",
                       interactive=False, height=180,
                       buttons=["download"], elem_id="fn-share-heatmap")
    return {"result": result, "preview": preview}


def _load_section() -> dict:
    """Section 4: what to load from the Hub (its form), the button and the line that says what happened."""
    gr.Markdown("#### 4 · Load from the Hub", elem_classes="fn-step")
    kind = gr.Radio(list(KINDS), value="template", label="What", elem_id="fn-share-load-kind",
                    info="template: joins your templates · run: an adapter with its template and mask")
    repo = gr.Textbox(label="Repo id", placeholder="namespace/name", elem_id="fn-share-load-repo")
    revision = gr.Textbox(label="Revision", placeholder="blank: main; or a branch, tag or commit",
                          elem_id="fn-share-load-revision")
    load = gr.Button("Load from the Hub", variant="primary", elem_id="fn-share-load")
    load_result = gr.HTML("", elem_id="fn-share-load-result")
    return dict(load_form=Form(kind=kind, repo=repo, revision=revision), load=load, load_result=load_result)


def _wire(ctx, tab: Tab) -> None:
    hub_queue = dict(concurrency_id=HUB_QUEUE, concurrency_limit=HUB_JOBS)
    run, run_repo = tab.run_form["run"], tab.run_form["repo"]
    on(ctx.template.change, template_defaults, [ctx.session, ctx.template],
       tab.outputs("template_line", "repo", "preview"), api_name="hub_template_defaults")
    on(tab.check.click, check_account, [tab.repo, run_repo], tab.outputs("target", "run_target"),
       api_name="hub_account", **hub_queue)
    for box, line in ((tab.repo, tab.target), (run_repo, tab.run_target)):
        # A changed name makes the line stale (no Hub call per keystroke); leaving the field checks it again.
        box.change(lambda _: _note("info", CHECK_HINT), box, line, queue=False, api_visibility="private")
        for event in (box.submit, box.blur):
            on(event, target_line, [box], {"line": line}, api_visibility="private", **hub_queue)
    on(tab.push.click, push_template, [ctx.session, tab.form], tab.outputs("result"), api_name="hub_push_template",
       **hub_queue)
    on(tab.refresh_runs.click, run_choices, [ctx.session, tab.loaded_runs, run], {"run": run}, api_name="hub_runs")
    on(run.change, run_defaults, [ctx.session, tab.loaded_runs, run], {"run_line": tab.run_line, "repo": run_repo},
       api_name="hub_run_defaults")
    on(tab.push_run.click, push_run, [ctx.session, tab.loaded_runs, tab.run_form], tab.outputs("result"),
       api_name="hub_push_run", **hub_queue)
    on(tab.load.click, load_from_hub, [ctx.session, tab.loaded_runs, tab.load_form],
       {"load_result": tab.load_result, "template": ctx.template, "run": run, "loaded_runs": tab.loaded_runs},
       api_name="hub_load", **hub_queue)


# ---- showing --------------------------------------------------------------------------


def _template_line(entry: Optional[SessionTemplate]) -> str:
    if entry is None:
        return ("No template yet: build one in the Templates tab, upload one there, or load one from the Hub "
                "(section 4).")
    t = entry.template
    model = f" of `{t.meta.model_id}`" if t.meta else ""
    return (f"Pushes **{entry.name}**: {len(t.components)} components{model} over {len(t.layers)} layers. "
            "Pick another in the Template list at the top.")


def template_defaults(session: Session, name: Optional[str]):
    """The picked template: its line, a repo name from its model and prompt sets, its coverage image."""
    if not session.has(name):
        return _template_line(None), gr.skip(), None
    entry = session.get(name)
    image = entry.path.with_suffix(".coverage.png")
    if not image.exists():
        write_atomic(image, coverage_png(entry.template))
    return _template_line(entry), hub.default_template_repo_name(entry.template), str(image)


# ---- whose account -------------------------------------------------------------------


def _token(oauth: Optional[gr.OAuthToken]) -> Optional[str]:
    """The sign-in's token text, handed straight to fnweb.hub (which ignores a local placeholder)."""
    return oauth.token if oauth is not None else None


def check_account(repo: str, run_repo: str, oauth: gr.OAuthToken | None):
    """Ask the Hub whose account the token acts for; say where each push would go."""
    try:
        who = hub.account(_token(oauth))
    except Exception as exc:  # shown in the page: the check is there to find these faults
        note = _note("error", explain(exc))
        return note, note
    return _safe_target(repo, who), _safe_target(run_repo, who) if (run_repo or "").strip() else ""


def target_line(repo: str, oauth: gr.OAuthToken | None):
    """A repo field was left: say where its push would go."""
    if not (repo or "").strip():
        return gr.skip()
    try:
        hub.check_repo_id(repo)  # a bad name is said without asking the Hub
        return _target(repo, hub.account(_token(oauth)))
    except Exception as exc:
        return _note("error", explain(exc))


# ---- pushing --------------------------------------------------------------------------


def _commit_message(text: Optional[str]) -> Optional[str]:
    return (text or "").strip() or None


@action("result", render_message=lambda kind, text: _note(kind, text))
def push_template(session: Session, form: dict, oauth: gr.OAuthToken | None):
    """Push the picked template (file, card, coverage image) and show the repo's address."""
    entry = session.get(form["template"])
    token = _token(oauth)
    full, who = hub.push_target(form["repo"], token)
    yield _note("info", f"Pushing '{entry.name}' to {full} as {who.describe()} …")
    png = coverage_png(entry.template) if form["heatmap"] else None
    private = bool(form["private"])
    url = hub.push_template(entry.template, full, token=token, private=private,
                            commit_message=_commit_message(form["message"]), heatmap_png=png,
                            overwrite=bool(form["overwrite"]))
    what = "privately " if private else ""
    yield _note("ok", f"Pushed the template '{entry.name}' {what}to {full} as {who.name}:", link=url)


def run_choices(session: Session, loaded: Optional[list], current: Optional[str]):
    """The run list, refreshed (keeps the current choice)."""
    choices = visitor_runs(session, loaded)
    return gr.update(choices=choices, value=current or (choices[0][1] if choices else None))


def run_defaults(session: Session, loaded: Optional[list], choice: Optional[str]):
    """The chosen run: what it holds, and a repo name from its model and training set."""
    if not (choice or "").strip():
        return "", gr.skip()
    try:
        files = read_run(_run_folder(session, loaded, choice))
    except FnwebError as exc:
        return f"⚠ {exc}", gr.skip()
    config = files.train_config
    name = hub.default_repo_name(config.get("model_id") or files.adapter_config.get("base_model_name_or_path", ""),
                                 [config["dataset"]] if config.get("dataset") else [], kind=hub.RUN_KIND)
    return describe_run(files), name


@action("result", render_message=lambda kind, text: _note(kind, text))
def push_run(session: Session, loaded: Optional[list], form: dict, oauth: gr.OAuthToken | None):
    """Push the chosen run folder (adapter, template, mask, configs, metrics, card); show the address."""
    folder = _run_folder(session, loaded, form["run"])
    read_run(folder)  # a folder that is not a finished run is said before any Hub call
    merged, private = bool(form["merged"]), bool(form["private"])
    if merged:
        check_mergeable(folder)
    token = _token(oauth)
    full, who = hub.push_target(form["repo"], token)
    with_merged = " with a merged model" if merged else ""
    first = "Merging, then pushing" if merged else "Pushing"
    yield _note("info", f"{first} the run {folder.name}{with_merged} to {full} as {who.describe()} …")
    url = hub.push_run(folder, full, token=token, private=private, commit_message=_commit_message(form["message"]),
                       overwrite=bool(form["overwrite"]), merged=merged)
    what = "privately " if private else ""
    yield _note("ok", f"Pushed the run {folder.name}{with_merged} {what}to {full} as {who.name}:", link=url)


# ---- loading --------------------------------------------------------------------------


def _fit_note(session: Session, template: Template) -> str:
    """Check a template against the visitor's model, as an uploaded file is checked."""
    if session.model is None:
        return ""
    lm = session.require_model()
    return template.check_fits(layout_of(lm.model), lm.model_id) or ""


def _label(repo_id: str, revision: Optional[str]) -> str:
    return repo_id + (f"@{revision[:12]}" if revision else "") + " (Hub)"


@action("load_result", render_message=lambda kind, text: _note(kind, text))
def load_from_hub(session: Session, loaded: Optional[list], form: dict, oauth: gr.OAuthToken | None):
    """Download a template (into the visitor's templates) or a run (into the run list), checked like a file."""
    loaded = list(loaded or [])
    kind = form["kind"]
    if kind not in KINDS:
        raise FnwebError(f"Choose what to load: {' or '.join(KINDS)} (got '{kind}').")
    repo_id = hub.check_repo_id(form["repo"])
    revision = (form["revision"] or "").strip() or None
    token = _token(oauth)
    yield {"load_result": _note("info", f"Loading the {kind} {repo_id}{' at ' + revision if revision else ''} …")}
    if kind == "template":
        template = hub.load_template_from_hub(repo_id, revision=revision, token=token)
        note = _fit_note(session, template)
        entry = session.add(template, "from the Hub", _label(repo_id, revision))
        text = f"Loaded the template '{entry.name}': {len(template.components)} components; it is now in " \
               "your Template list." + (f" {note}" if note else "")
        yield {"load_result": _note("ok", text), "template": template_choices(session)}
        return
    files = hub.download_run(repo_id, revision=revision, token=token)
    note, added = "", None
    if files.template is not None:
        note = _fit_note(session, files.template)
        added = session.add(files.template, "from the Hub", _label(repo_id, revision) + " run template")
    loaded = [item for item in loaded if item["folder"] != str(files.folder)]
    loaded.append({"label": _label(repo_id, revision), "folder": str(files.folder)})
    text = f"Loaded the run {repo_id}: {describe_run(files)}." + \
        (f" Its template is in your Template list as '{added.name}'." if added else "") + \
        (f" {note}" if note else "")
    runs = gr.update(choices=visitor_runs(session, loaded), value=str(files.folder))
    yield {"load_result": _note("ok", text), "run": runs, "loaded_runs": loaded,
           **({"template": template_choices(session)} if added else {})}
