"""Share templates and fine-tuning runs on the Hugging Face Hub, and load them back.

- **Token**: an explicit token (the visitor's ``gr.OAuthToken.token`` on a Space) comes
  first. Only a process serving one user (the CLIs, a local app: ``fnweb.access``) falls
  back to ``HF_TOKEN``, then the saved login (``hf auth login``); an app serving many
  visitors never does: without a sign-in, pushes and account checks are refused ("sign
  in first") and loads go out anonymous (``token=False``: huggingface_hub would
  otherwise pick up the server's token itself). The placeholder a local Gradio sign-in
  yields is never used. A token is passed to ``huggingface_hub`` and nowhere else:
  never logged, shown, stored in an object's fields or written.
- **Account**: ``account(token)`` asks the Hub (``whoami``) whose account a push will
  go to, so the UI and CLI can say it before pushing.
- **Push**: ``push_template`` and ``push_run`` create the repo if needed and upload
  everything in one commit (``create_commit``), so a failure part-way leaves the repo
  at its previous commit and a retry starts afresh. Local files are only read. A repo
  that exists and holds something other than an fnweb repo of the same kind is
  refused unless ``overwrite`` is given; even then only the files of this push are
  written and the others are kept.
- **Load**: ``load_template_from_hub`` and ``download_run`` fetch through the Hub cache
  and validate like local files. Sizes are checked from the repo's file listing before
  anything is downloaded: a template file at most ``MAX_TEMPLATE_BYTES``, a run's files
  at most ``max_run_bytes()`` (``FNWEB_MAX_DOWNLOAD_MB``); a run download fetches the run's
  own files only (never ``merged/`` or anything else the repo holds).

Faults (no token, a rejected token, no write access, the network or the Hub failing,
a bad repo id, a repo holding something else) become ``FnwebError`` messages that
say what to do (``fnweb.huberrors``). The Hub address is ``huggingface_hub``'s
(``HF_ENDPOINT``). This module is transport and cards only: what a run folder holds
and how it is checked is ``fnweb.finetune.runs``'s, the cards' text ``fnweb.hubcard``'s
and ``fnweb.finetune.card``'s, what a repo id is ``fnweb.ids``'s. It knows nothing
about Gradio or how the files were made.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import __version__
from .access import mode_reason, multi_user
from .errors import FnwebError
from .finetune.card import run_card
from .finetune.runs import CARD_FILE, RUN_OPTIONAL, RUN_REQUIRED, STATE_FILE, RunFiles, read_run
from .hubcard import HEATMAP_FILENAME, template_card
from .huberrors import ANONYMOUS, NO_CHANGE, hub_errors
from .ids import check_repo_id, model_short_name, short_name
from .io import read_text
from .templates import MAX_TEMPLATE_BYTES, TEMPLATE_FILENAME, Template

# What a local Gradio sign-in puts where the OAuth token would be (gradio/oauth.py).
PLACEHOLDER_TOKENS = frozenset({"mock-oauth-token-for-local-dev"})

TEMPLATE_KIND, RUN_KIND = "template", "run"
# Never published from a run folder: pickles (fnweb loads none) and resumable-training leftovers.
RUN_SKIP = re.compile(r"(^|/)(\.|checkpoint[^/]*/)|\.(bin|pt|pth|pkl|pickle|ckpt|tmp)$")
# A run's adapter is small next to its model (LoRA r 16 on a 7B model: ~40 MB); 2 GB covers r 256 on a 70B model.
DEFAULT_MAX_RUN_MB = 2048


def max_run_bytes() -> int:
    """The most a run download may fetch (FNWEB_MAX_DOWNLOAD_MB, default 2048 MB)."""
    return int(float(os.environ.get("FNWEB_MAX_DOWNLOAD_MB") or DEFAULT_MAX_RUN_MB) * 2**20)


def sign_in_first() -> str:
    """The refusal an app serving many visitors gives a Hub action without the visitor's own sign-in."""
    return (f"Sign in first: this app is shared ({mode_reason()}), so Hub actions use only your own Hugging Face "
            "sign-in ('Sign in with Hugging Face' in the Share tab), never the server's token. Nothing reached the "
            "Hub. Public repos load without signing in.")


# ---- tokens and accounts ----

def is_placeholder(token: Optional[str]) -> bool:
    """True for the stand-in token of a local Gradio sign-in (or an empty string)."""
    return not token or token.strip() in PLACEHOLDER_TOKENS


def resolve_token(explicit: Optional[str] = None, required: bool = True) -> tuple[Optional[str], str]:
    """(token, where it came from): explicit; else, for one user only, HF_TOKEN, else the saved login.

    Serving many visitors (``fnweb.access.multi_user``), nothing stands in for a missing
    sign-in: a required token is refused with ``sign_in_first()``, an optional one is None.
    """
    if not is_placeholder(explicit):
        return explicit.strip(), "your Hugging Face sign-in"
    if multi_user():
        if required:
            raise FnwebError(sign_in_first())
        return None, ANONYMOUS
    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not is_placeholder(env):
        return env.strip(), "HF_TOKEN"
    from huggingface_hub import get_token

    saved = get_token()
    if not is_placeholder(saved):
        return saved.strip(), "the saved login"
    if required:
        raise FnwebError(
            "No Hugging Face token: sign in with the Hugging Face button (on a Space), or set HF_TOKEN, or run "
            f"`hf auth login`, then push again. {NO_CHANGE}."
        )
    return None, "no token"


@dataclass(frozen=True)
class Account:
    """Whose account a token acts for (never the token itself)."""

    name: str
    fullname: str = ""
    orgs: tuple[str, ...] = ()
    role: Optional[str] = None  # the token's role: read | write | fineGrained
    source: str = ""  # where the token came from

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.name, *self.orgs)

    def describe(self) -> str:
        return f"{self.name} (token from {self.source})"


def account(token: Optional[str] = None) -> Account:
    """Ask the Hub whose account the token (resolved as ``resolve_token``) belongs to."""
    return _whoami(*resolve_token(token))


def _whoami(token: str, source: str) -> Account:
    with hub_errors("checking the token", None, source):
        info = _api(token).whoami(token=token)
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    orgs = tuple(o.get("name") for o in info.get("orgs") or [] if o.get("name"))
    return Account(info.get("name", "?"), info.get("fullname") or "", orgs, role, source)


def push_target(repo_id: str, token: Optional[str] = None) -> tuple[str, Account]:
    """The full repo id a push would write to and the account it acts as (one whoami call)."""
    name = check_repo_id(repo_id)
    who = account(token)
    return (name if "/" in name else f"{who.name}/{name}"), who


def describe_target(repo_id: str, token: Optional[str] = None) -> str:
    """'Pushes to alice/x as alice (token from HF_TOKEN).' for the UI and CLI, before a push."""
    full, who = push_target(repo_id, token)
    return f"Pushes to {full} as {who.describe()}."


# ---- repo ids ----

def default_repo_name(model_id: str, datasets: list[str], kind: str = TEMPLATE_KIND) -> str:
    """A repo name from the model and datasets, e.g. 'SmolLM2-135M-Instruct-fnweb-factual-code'."""
    model = model_short_name(model_id) or "model"
    parts = [model, "fnweb", *[short_name(d) for d in datasets]] + (["lora"] if kind == RUN_KIND else [])
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts))
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", name))
    return name[:96].strip("-.") or "fnweb-template"


def default_template_repo_name(template: Template) -> str:
    meta = template.meta
    if meta is None:
        return "fnweb-template"
    return default_repo_name(meta.model_id, [d.get("name", "") for d in meta.datasets])


# ---- pushing ----

def push_template(
    template: Template,
    repo_id: str,
    token: Optional[str] = None,
    private: bool = False,
    commit_message: Optional[str] = None,
    heatmap_png: Optional[bytes] = None,
    overwrite: bool = False,
) -> str:
    """Upload a template, its model card and (if given) its heatmap; return the repo URL."""
    name = check_repo_id(repo_id)
    text = template.to_json()
    Template.from_dict(json.loads(text), source="the template")  # what is pushed must load back
    files: dict[str, bytes | Path] = {TEMPLATE_FILENAME: text.encode("utf-8")}
    if heatmap_png:
        if not heatmap_png.startswith(b"\x89PNG"):
            raise FnwebError("The heatmap image must be a PNG.")
        files[HEATMAP_FILENAME] = heatmap_png

    def card(full_id: str) -> bytes:
        return template_card(template, full_id, HEATMAP_FILENAME if heatmap_png else None).encode("utf-8")

    components = len(template.components)
    model = template.meta.model_id if template.meta else "a model"
    message = commit_message or f"Upload fnweb template ({components} components of {model})"
    return _push(TEMPLATE_KIND, name, files, card, token, private, message, overwrite)


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    token: Optional[str] = None,
    private: bool = False,
    commit_message: Optional[str] = None,
    overwrite: bool = False,
    merged: bool = False,
    trust_remote_code: bool = False,
) -> str:
    """Upload a fine-tuning run folder (adapter, template, mask, configs, metrics) with a refreshed card.

    ``merged`` adds ``merged/``: the adapter folded into the base weights with the run's
    mask baked in, a model that loads with plain transformers (not for 4/8-bit runs).
    Merging loads the base model with the caller's ``trust_remote_code`` (never the run's own).
    """
    name = check_repo_id(repo_id)
    run = read_run(run_dir)
    files: dict[str, bytes | Path] = {}
    for path in sorted(p for p in run.folder.rglob("*") if p.is_file()):
        rel = path.relative_to(run.folder).as_posix()
        if rel != CARD_FILE and not RUN_SKIP.search(rel):
            files[rel] = path

    def card(full_id: str) -> bytes:
        return run_card(run.train_config, run.summary, run.mask_file, run.template, run.adapter_config,
                        repo_id=full_id, existing=run.card, merged=merged).encode("utf-8")

    what = run.mask.label() if run.mask else "no mask"
    message = commit_message or f"Upload fnweb LoRA run ({what}{', merged model' if merged else ''})"
    with tempfile.TemporaryDirectory(prefix="fnweb-merged-") as scratch:
        if merged:
            resolve_token(token)  # no token: say so before the minutes a merge can take
            files.update(_merged_files(run.folder, Path(scratch), trust_remote_code))
        return _push(RUN_KIND, name, files, card, token, private, message, overwrite)


def _merged_files(folder: Path, scratch: Path, trust_remote_code: bool = False) -> dict[str, Path]:
    """The run's merged model, written to ``scratch``, as repo paths under ``merged/``."""
    from .finetune.merge import MERGED_FOLDER, merged_run, save_merged

    # merged_run refuses a 4/8-bit run before loading anything
    saved = save_merged(merged_run(folder, trust_remote_code=trust_remote_code), scratch)
    return {f"{MERGED_FOLDER}/{p.relative_to(saved).as_posix()}": p for p in sorted(saved.rglob("*")) if p.is_file()}


def _push(kind, name, files, card, token, private, message, overwrite) -> str:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import RepositoryNotFoundError

    token, source = resolve_token(token)
    who = _whoami(token, source)
    repo_id = name if "/" in name else f"{who.name}/{name}"
    api = _api(token)
    with hub_errors("pushing to", repo_id, source, who):
        try:
            info = api.model_info(repo_id)
        except RepositoryNotFoundError:
            info = None
        if info is None:
            api.create_repo(repo_id, private=private, exist_ok=True)
        else:
            if private and not info.private:  # never publish what was meant to stay private
                raise FnwebError(
                    f"The repo {repo_id} exists and is public, but a private push was asked for. {NO_CHANGE}. "
                    "Make the repo private on the Hub first, or choose another repo name."
                )
            _check_owner(api, repo_id, _names(info), kind, overwrite, [*files, CARD_FILE])
        operations = [CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card(repo_id))]
        operations += [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=data if isinstance(data, bytes) else str(data))
            for path, data in files.items()
        ]
        api.create_commit(repo_id, operations, commit_message=message)
    return f"{api.endpoint}/{repo_id}"


def _check_owner(api, repo_id: str, present: list[str], kind: str, overwrite: bool, writes: list[str]) -> None:
    """Refuse a repo that holds something other than an fnweb repo of this kind (unless overwrite)."""
    others = [f for f in present if f != ".gitattributes"]
    if not others or overwrite:
        return
    found = _repo_kind(api, repo_id) if CARD_FILE in others else None
    if found == kind:
        return
    what = f"an fnweb {found}, not a {kind}" if found else "files that fnweb did not write"
    clash = sorted(set(writes) & set(others))
    listed = ", ".join(others[:8]) + (", ..." if len(others) > 8 else "")
    raise FnwebError(
        f"The repo {repo_id} already exists and holds {what} ({listed}). {NO_CHANGE}. Choose another repo name, "
        "or push with overwrite (CLI: --hub_overwrite) to replace "
        + (f"{', '.join(clash)}" if clash else "nothing of theirs") + " and add this push's files; "
        "the repo's other files are kept."
    )


def _repo_kind(api, repo_id: str) -> Optional[str]:
    """The ``fnweb.kind`` of a repo's card, or None when it is not an fnweb card."""
    from huggingface_hub import ModelCard

    with tempfile.TemporaryDirectory(prefix="fnweb-card-") as folder:
        path = api.hf_hub_download(repo_id, CARD_FILE, cache_dir=folder)
        try:
            data = ModelCard(read_text(path), ignore_metadata_errors=True).data.to_dict()
        except Exception:  # an unreadable or unparsable card is simply not ours
            return None
    block = data.get("fnweb")
    return block.get("kind") if isinstance(block, dict) and "fnweb" in (data.get("tags") or []) else None


# ---- loading ----

def load_template_from_hub(
    repo_id: str, revision: Optional[str] = None, token: Optional[str] = None, cache_dir: Optional[str] = None,
) -> Template:
    """Download a repo's template (a template repo's file, or a run's template.json) and validate it."""
    repo_id = check_repo_id(repo_id)
    with _loading(repo_id, token) as api:
        # The repo's info first: one call, not retried, so a dead network fails fast; it gives the sizes too.
        sizes = _sizes(api.model_info(repo_id, revision=revision, files_metadata=True))
        present = list(sizes)
        filename = next((f for f in (TEMPLATE_FILENAME, "template.json") if f in present), None)
        if filename is None:
            raise FnwebError(
                f"The repo {repo_id}{_at(revision)} has no {TEMPLATE_FILENAME} (nor a run's template.json): it is "
                f"not an fnweb template (it holds {', '.join(present[:8]) or 'nothing'}). Check the repo id."
            )
        _check_size(repo_id, revision, {filename: sizes[filename]}, MAX_TEMPLATE_BYTES, "a template file")
        path = api.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)
    return Template.load(path)


def download_run(
    repo_id: str, revision: Optional[str] = None, token: Optional[str] = None, cache_dir: Optional[str] = None,
) -> RunFiles:
    """Download a run repo's own files (not ``merged/`` nor anything else) and check them like a local run folder."""
    repo_id = check_repo_id(repo_id)
    wanted = (*RUN_REQUIRED, *RUN_OPTIONAL, STATE_FILE)
    with _loading(repo_id, token) as api:
        sizes = _sizes(api.model_info(repo_id, revision=revision, files_metadata=True))
        _check_size(repo_id, revision, {f: n for f, n in sizes.items() if f in wanted}, max_run_bytes(),
                    "a run's files", "FNWEB_MAX_DOWNLOAD_MB")
        folder = api.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=list(wanted))
    return read_run(folder, what=f"The repo {repo_id}{_at(revision)}")


def _names(info) -> list[str]:
    """The file names of a repo, from its info."""
    return [s.rfilename for s in info.siblings or []]


def _sizes(info) -> dict[str, Optional[int]]:
    """File name -> size in bytes (None where the Hub did not say), from info asked with files_metadata."""
    return {s.rfilename: s.size for s in info.siblings or []}


def _check_size(repo_id: str, revision: Optional[str], sizes: dict[str, Optional[int]], limit: int, what: str,
                knob: Optional[str] = None) -> None:
    """Refuse, before downloading, files larger in all than ``limit`` (or whose size the Hub does not give)."""
    unknown = sorted(f for f, n in sizes.items() if n is None)
    if unknown:
        raise FnwebError(f"The Hub did not give the size of {', '.join(unknown)} in {repo_id}{_at(revision)}, so "
                         "it is not downloaded (fnweb caps what it downloads). Nothing was loaded.")
    total = sum(n for n in sizes.values() if n is not None)
    if total > limit:
        raise FnwebError(
            f"The repo {repo_id}{_at(revision)} holds {total / 2**20:,.1f} MB of {what}, over the limit of "
            f"{limit / 2**20:,.0f} MB: it is not downloaded. Nothing was loaded."
            + (f" (The server's owner can raise the limit with {knob}.)" if knob else ""))


def _at(revision: Optional[str]) -> str:
    return f" at revision {revision}" if revision else ""


# ---- the Hub client and its errors ----

def _api(token: Optional[str]):
    """A client that sends ``token`` and nothing else: without one, ``False`` (huggingface_hub reads
    ``None`` as "find one yourself", which would pick up HF_TOKEN or the saved login)."""
    from huggingface_hub import HfApi

    return HfApi(token=token if token else False, library_name="fnweb", library_version=__version__)


@contextmanager
def _loading(repo_id: str, token: Optional[str]):
    """A client for reading ``repo_id`` (a token only if one is at hand), Hub errors made plain."""
    token, source = resolve_token(token, required=False)
    api = _api(token)
    with hub_errors("loading", repo_id, source, action_kind="load"):
        yield api
