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
say what to do. The Hub address is ``huggingface_hub``'s (``HF_ENDPOINT``). This
module knows nothing about Gradio or how the files were made.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from . import __version__
from .access import mode_reason, multi_user
from .errors import FnwebError
from .hubcard import HEATMAP_FILENAME, run_card, template_card
from .io import read_json
from .masks import MaskSpec
from .templates import MAX_TEMPLATE_BYTES, TEMPLATE_FILENAME, Template

# What a local Gradio sign-in puts where the OAuth token would be (gradio/oauth.py).
PLACEHOLDER_TOKENS = frozenset({"mock-oauth-token-for-local-dev"})

TEMPLATE_KIND, RUN_KIND = "template", "run"
RUN_REQUIRED = ("adapter_config.json", "adapter_model.safetensors", "template.json", "mask.json", "train_config.json")
RUN_OPTIONAL = ("metrics.jsonl", "summary.json", "README.md")
# Never published from a run folder: pickles (fnweb loads none) and resumable-training leftovers.
RUN_SKIP = re.compile(r"(^|/)(\.|checkpoint[^/]*/)|\.(bin|pt|pth|pkl|pickle|ckpt|tmp)$")
NO_CHANGE = "Nothing was pushed and the local files are unchanged"
ANONYMOUS = "no sign-in (anonymous)"
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
    with _hub_errors("checking the token", None, source):
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

def check_repo_id(repo_id: Optional[str]) -> str:
    """A repo id ('name' or 'namespace/name', or a Hub URL) checked without any network call."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = (repo_id or "").strip()
    text = re.sub(r"^https?://[^/]+/", "", text).strip("/")  # a pasted repo URL
    if not text:
        raise FnwebError("No repo id given: enter one like 'your-name/my-template'.")
    try:
        validate_repo_id(text)
    except HFValidationError as exc:
        raise FnwebError(
            f"'{repo_id}' is not a valid Hub repo id: use 'name' or 'namespace/name' with letters, digits, '-', "
            "'_' or '.', at most 96 characters, no '--' or '..', not starting or ending with '-' or '.'."
        ) from exc
    return text


def default_repo_name(model_id: str, datasets: list[str], kind: str = TEMPLATE_KIND) -> str:
    """A repo name from the model and datasets, e.g. 'SmolLM2-135M-Instruct-fnweb-factual-code'."""
    model = Path(str(model_id).replace("embedded:", "")).name or "model"

    def short(name: str) -> str:
        name = name.replace("builtin:", "")
        return Path(name).stem if Path(name).suffix else name.split("/")[-1]

    parts = [model, "fnweb", *[short(d) for d in datasets]] + (["lora"] if kind == RUN_KIND else [])
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
        if rel != "README.md" and not RUN_SKIP.search(rel):
            files[rel] = path
    existing = (run.folder / "README.md").read_text(encoding="utf-8") if (run.folder / "README.md").exists() else None

    def card(full_id: str) -> bytes:
        return run_card(full_id, run.adapter_config, run.train_config, run.mask_dict, run.template, run.summary,
                        existing, merged=merged).encode("utf-8")

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

    saved = save_merged(merged_run(folder, trust_remote_code=trust_remote_code), scratch)  # merged_run refuses a 4/8-bit run before loading anything
    return {f"{MERGED_FOLDER}/{p.relative_to(saved).as_posix()}": p for p in sorted(saved.rglob("*")) if p.is_file()}


def _push(kind, name, files, card, token, private, message, overwrite) -> str:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import RepositoryNotFoundError

    token, source = resolve_token(token)
    who = _whoami(token, source)
    repo_id = name if "/" in name else f"{who.name}/{name}"
    api = _api(token)
    with _hub_errors("pushing to", repo_id, source, who):
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
            _check_owner(api, repo_id, _names(info), kind, overwrite, [*files, "README.md"])
        operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card(repo_id))]
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
    found = _repo_kind(api, repo_id) if "README.md" in others else None
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
        path = api.hf_hub_download(repo_id, "README.md", cache_dir=folder)
        try:
            data = ModelCard(Path(path).read_text(encoding="utf-8"), ignore_metadata_errors=True).data.to_dict()
        except Exception:  # an unparsable card is simply not ours
            return None
    block = data.get("fnweb")
    return block.get("kind") if isinstance(block, dict) and "fnweb" in (data.get("tags") or []) else None


# ---- runs on disk ----

@dataclass
class RunFiles:
    """A fine-tuning run folder, read and checked (local or downloaded)."""

    folder: Path
    template: Optional[Template]  # None only for a run trained without a mask
    mask: Optional[MaskSpec]  # None: trained without a mask
    mask_dict: Optional[dict]
    adapter_config: dict
    train_config: dict
    summary: dict = field(default_factory=dict)


def _read_json(path: Path, what: str):
    return read_json(path, f"{what}: {path.name}")


def mask_from_dict(data: Optional[dict], source: str = "mask.json") -> Optional[MaskSpec]:
    """A ``MaskSpec`` from its JSON form (its fields); None for no mask (null or mode 'none')."""
    if data is None or (isinstance(data, dict) and "none" in (data.get("mode"), data.get("mask_mode"))):
        return None
    if not isinstance(data, dict) or "components" not in data:
        raise FnwebError(
            f"{source} must be null or an object with 'components' (and 'mode', 'random_seed', 'layers')."
        )
    try:
        return MaskSpec.from_dict(data)  # its fields by name; those it lacks take their defaults
    except (TypeError, ValueError) as exc:
        raise FnwebError(f"{source} is malformed ({exc}).") from exc


def read_run(run_dir: str | os.PathLike, what: str = "The run folder") -> RunFiles:
    """Check a run folder has its files and that they parse; the template and mask must agree."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise FnwebError(f"{what} {folder} does not exist or is not a folder.")
    missing = [name for name in RUN_REQUIRED if not (folder / name).is_file()]
    mask_dict = _read_json(folder / "mask.json", what) if "mask.json" not in missing else None
    mask = mask_from_dict(mask_dict) if "mask.json" not in missing else None
    if "mask.json" not in missing and mask is None and "template.json" in missing:
        missing.remove("template.json")  # a run without a mask needs no template
    if missing:
        raise FnwebError(
            f"{what} {folder} lacks {', '.join(missing)}: it is not a complete fnweb fine-tuning run "
            "(expected the adapter, template.json, mask.json and train_config.json)."
        )
    _check_not_running(folder, what)
    adapter = _read_json(folder / "adapter_config.json", what)
    if not isinstance(adapter, dict) or "peft_type" not in adapter:
        raise FnwebError(f"{what}: adapter_config.json is not a PEFT adapter config (no peft_type).")
    template = Template.load(folder / "template.json") if (folder / "template.json").exists() else None
    if mask is not None:
        template.check_components(mask.components)
    summary_path = folder / "summary.json"
    summary = _read_json(summary_path, what) if summary_path.exists() else {}
    train = _read_json(folder / "train_config.json", what)
    return RunFiles(folder, template, mask, mask_dict, adapter, train if isinstance(train, dict) else {},
                    summary if isinstance(summary, dict) else {})


def _check_not_running(folder: Path, what: str) -> None:
    """A run still training has no final adapter yet: refuse to push or load it."""
    if not (folder / "state.json").exists():
        return
    from .finetune.runs import read_state  # the run folders' own reading (a dead process is not running)

    if read_state(folder).get("state") == "running":
        raise FnwebError(f"{what} {folder} is still training: push it once it has finished or been stopped.")


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
    wanted = (*RUN_REQUIRED, *RUN_OPTIONAL, "state.json")
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


def _cause(exc: BaseException, kinds) -> Optional[BaseException]:
    """The first exception of ``kinds`` in ``exc``'s chain (upload errors wrap the HTTP one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def _loading(repo_id: str, token: Optional[str]):
    """A client for reading ``repo_id`` (a token only if one is at hand), Hub errors made plain."""
    token, source = resolve_token(token, required=False)
    api = _api(token)
    with _hub_errors("loading", repo_id, source, action_kind="load"):
        yield api


@contextmanager
def _hub_errors(action: str, repo_id: Optional[str], source: str, who: Optional[Account] = None,
                action_kind: str = "push") -> Iterator[None]:
    """Turn the client's exceptions into messages that say what happened and what to do."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f" {repo_id}" if repo_id else ""
    unchanged = NO_CHANGE if action_kind == "push" else "Nothing was loaded"
    try:
        yield
    except FnwebError:
        raise
    except Exception as exc:
        if _cause(exc, OfflineModeIsEnabled):
            raise FnwebError(
                f"Hub access is switched off here (HF_HUB_OFFLINE is set): unset it to reach the Hub. {unchanged}."
            ) from None
        http = _cause(exc, HfHubHTTPError)
        status = http.response.status_code if http is not None and http.response is not None else None
        detail = _server_detail(http)
        if isinstance(http, RevisionNotFoundError):
            raise FnwebError(f"The repo{where} has no such revision: check the branch, tag or commit.") from None
        if isinstance(http, RepositoryNotFoundError) and action_kind == "load":
            raise FnwebError(
                f"No repo{where} on the Hub, or it is private and " + (
                    "you are not signed in: sign in first to load your private repos. " if source == ANONYMOUS else
                    f"the token from {source} cannot read it. Check the repo id and your sign-in.")
            ) from None
        if status == 401:
            raise FnwebError(
                f"The Hugging Face token from {source} was rejected (401: invalid, expired or revoked). Sign in "
                f"again, or set a valid HF_TOKEN, or run `hf auth login`. {unchanged}."
            ) from None
        if status == 403:
            namespace = repo_id.split("/")[0] if repo_id else "this namespace"
            yours = f"{who.name} may write to {', '.join(who.namespaces)}" if who else "check the token's rights"
            raise FnwebError(
                f"No write access to '{namespace}' (403{detail}): {yours}. Push to a namespace you can write to, "
                f"with a token that has write permission. {unchanged}."
            ) from None
        if status is not None and status >= 500:
            raise FnwebError(
                f"The Hub answered an error ({status}{detail}) while {action}{where}; the push did not complete and "
                f"the repo keeps its previous state. {unchanged}: try again."
                if action_kind == "push" else
                f"The Hub answered an error ({status}{detail}) while {action}{where}. {unchanged}: try again."
            ) from None
        if status is not None:
            raise FnwebError(f"The Hub refused {action}{where} ({status}{detail}). {unchanged}.") from None
        if _cause(exc, (httpx2.TransportError, ConnectionError, TimeoutError, LocalEntryNotFoundError)):
            raise FnwebError(
                f"Cannot reach the Hugging Face Hub at {constants.ENDPOINT} while {action}{where}: check the network "
                f"(and HF_ENDPOINT), then try again. {unchanged}."
            ) from None
        raise


def _server_detail(http) -> str:
    """The Hub's own short reason, if it gave one (never request headers)."""
    message = getattr(http, "server_message", None) if http is not None else None
    if not message:
        return ""
    first = str(message).strip().splitlines()[0][:200]
    return f": {first}"
