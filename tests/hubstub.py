"""A stand-in for the Hugging Face Hub, served on loopback, for tests of fnweb.hub.

It implements only what the real ``huggingface_hub`` client calls when fnweb pushes
and loads templates and runs: ``whoami-v2``, repo creation, repo info by revision,
the tree listing, repo info with file sizes (``blobs``), ``preupload`` and the ndjson
``commit``, the LFS batch API with the "basic" transfer (a PUT of the bytes), and
``resolve`` (HEAD and GET) for downloads.
Answers copy the Hub's shapes and its error conventions (``X-Error-Code`` headers,
``{"error": ...}`` bodies, 401 "Invalid credentials in Authorization header").

Accounts are given as ``{token: Account}``; a token may write to its user's
namespace and to its organisations, unless its role is "read". Files live in a temp
folder, one blob per content hash; a commit maps paths to blobs, and ``main`` is the
latest commit. ``fail(...)`` makes the next matching requests answer an error (for
fault tests). Nothing here knows about fnweb's files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

BAD_CREDENTIALS = "Invalid credentials in Authorization header"


@dataclass
class Account:
    name: str
    orgs: tuple[str, ...] = ()
    role: str = "write"  # write | read
    fullname: str = ""


@dataclass
class Entry:
    blob: str  # key of the stored bytes: sha256 hex
    size: int
    git_sha1: str
    lfs: bool


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[tuple[str, dict[str, Entry]]] = field(default_factory=list)  # (oid, files)

    def files(self, revision: str = "main") -> Optional[tuple[str, dict[str, Entry]]]:
        if revision == "main":
            return self.commits[-1]
        for oid, files in self.commits:
            if oid == revision:
                return oid, files
        return None


@dataclass
class Fault:
    method: str
    pattern: str  # regex searched in the request path
    status: int
    times: int
    drop: bool = False  # close the connection without an answer


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStub:
    """``with HubStub(accounts) as hub:`` serves on ``hub.endpoint`` until the block ends."""

    def __init__(self, accounts: dict[str, Account], lfs_suffixes: tuple[str, ...] = ()):
        self.accounts = accounts
        self.lfs_suffixes = lfs_suffixes  # files the preupload answer sends through LFS
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) seen, in order
        self.auth_headers: list[str] = []  # Authorization headers seen (to check what was sent)
        self.faults: list[Fault] = []
        self.lfs_objects: set[str] = set()
        self.lock = threading.Lock()
        self.root = Path(tempfile.mkdtemp(prefix="hubstub-"))
        self._commit_count = 0
        self.server: Optional[ThreadingHTTPServer] = None

    # ---- lifecycle ----

    def __enter__(self) -> "HubStub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- test helpers ----

    def fail(self, method: str, pattern: str, status: int = 500, times: int = 1, drop: bool = False) -> None:
        """Answer the next ``times`` requests whose path matches ``pattern`` with ``status``."""
        with self.lock:
            self.faults.append(Fault(method.upper(), pattern, status, times, drop))

    def put_files(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> None:
        """Create a repo holding ``files`` (as if someone else had pushed them)."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo(repo_id, private))
            self._commit(repo, {p: self._store(b, lfs=False) for p, b in files.items()}, [])

    def read(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        oid_files = self.repos[repo_id].files(revision)
        return self._blob(oid_files[1][path].blob)

    def listing(self, repo_id: str, revision: str = "main") -> dict[str, Entry]:
        return dict(self.repos[repo_id].files(revision)[1])

    # ---- storage ----

    def _store(self, data: bytes, lfs: bool) -> Entry:
        key = hashlib.sha256(data).hexdigest()
        path = self.root / key
        if not path.exists():
            path.write_bytes(data)
        return Entry(blob=key, size=len(data), git_sha1=git_blob_sha1(data), lfs=lfs)

    def _blob(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def _commit(self, repo: Repo, added: dict[str, Entry], deleted: list[str]) -> str:
        self._commit_count += 1
        files = dict(repo.commits[-1][1]) if repo.commits else {}
        files.update(added)
        for path in deleted:
            files = {p: e for p, e in files.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
        oid = hashlib.sha1(f"{repo.repo_id}:{self._commit_count}".encode()).hexdigest()
        repo.commits.append((oid, files))
        return oid

    def _take_fault(self, method: str, path: str) -> Optional[Fault]:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and re.search(fault.pattern, path):
                    fault.times -= 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # ---- plumbing ----

    def _send(self, status: int, body: bytes = b"", headers: Optional[dict] = None, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data, headers: Optional[dict] = None):
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, message: str, code: Optional[str] = None):
        self._json(status, {"error": message}, {"X-Error-Code": code} if code else None)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _account(self) -> tuple[Optional[Account], bool]:
        """(the caller's account or None, whether a token was sent and rejected)."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None, False
        self.hub.auth_headers.append(auth)
        token = auth.removeprefix("Bearer ").strip()
        account = self.hub.accounts.get(token)
        return account, account is None

    def _can_write(self, account: Optional[Account], namespace: str) -> bool:
        return bool(account) and account.role == "write" and namespace in (account.name, *account.orgs)

    def _can_read(self, account: Optional[Account], repo: Repo) -> bool:
        namespace = repo.repo_id.split("/")[0]
        return not repo.private or (bool(account) and namespace in (account.name, *account.orgs))

    def _route(self):
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.requests.append((self.command, path))
        fault = self.hub._take_fault(self.command, path)
        if fault is not None:
            self._body()
            if fault.drop:
                self.close_connection = True
                self.connection.close()
                return
            return self._error(fault.status, f"Stand-in fault {fault.status}")
        account, rejected = self._account()
        if rejected:
            return self._error(401, BAD_CREDENTIALS)
        query = parse_qs(url.query)
        routes = [
            ("GET", r"^/api/whoami-v2$", self._whoami),
            ("POST", r"^/api/repos/create$", self._create),
            ("POST", r"^/api/validate-yaml$", self._validate_yaml),
            ("GET", r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$", self._info),
            ("GET", r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$", self._tree),
            ("POST", r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$", self._preupload),
            ("POST", r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$", self._commit),
            ("POST", r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$", self._lfs_batch),
            ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", self._lfs_put),
            ("GET", r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", self._resolve),
            ("HEAD", r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", self._resolve),
        ]
        for method, pattern, handler in routes:
            match = re.match(pattern, path)
            if method == self.command and match:
                return handler(account, query, **match.groupdict())
        self._body()
        self._error(404, f"Stand-in has no endpoint {self.command} {path}")

    do_GET = do_POST = do_PUT = do_HEAD = _route

    def _repo_or_404(self, account, repo_id) -> Optional[Repo]:
        repo = self.hub.repos.get(repo_id)
        if repo is None or not self._can_read(account, repo):
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        return repo

    def _revision_or_404(self, repo: Repo, rev: str):
        found = repo.files(unquote(rev))
        if found is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return found

    # ---- endpoints ----

    def _whoami(self, account, query):
        if account is None:
            return self._error(401, BAD_CREDENTIALS)
        self._json(200, {
            "type": "user", "name": account.name, "fullname": account.fullname or account.name,
            "avatarUrl": "",  # Gradio's local sign-in stand-in reads it
            "orgs": [{"name": org, "type": "org"} for org in account.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": account.role}},
        })

    def _create(self, account, query):
        payload = json.loads(self._body() or b"{}")
        namespace = payload.get("organization") or (account.name if account else None)
        if account is None:
            return self._error(401, BAD_CREDENTIALS)
        if not self._can_write(account, namespace):
            return self._error(403, f"You don't have the rights to create a model under the namespace \"{namespace}\"")
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.hub.endpoint}/{repo_id}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                return self._json(409, {"error": "You already created this model repo", "url": url})
            repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
            self.hub.repos[repo_id] = repo
            gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
            self.hub._commit(repo, {".gitattributes": self.hub._store(gitattributes, lfs=False)}, [])
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, account, query):
        """Check a README's front matter as the Hub does for the keys fnweb writes."""
        import yaml

        content = json.loads(self._body() or b"{}").get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        errors = []
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            data, errors = {}, [f"YAML does not parse: {exc}"]
        if not isinstance(data, dict):
            data, errors = {}, errors + ["metadata must be a mapping"]
        for key in ("tags", "datasets"):
            if key in data and not (isinstance(data[key], list) and all(isinstance(x, str) for x in data[key])):
                errors.append(f'"{key}" must be a list of strings')
        for key in ("base_model", "library_name", "license"):
            if key in data and not isinstance(data[key], (str, list)):
                errors.append(f'"{key}" must be a string')
        if errors:
            return self._json(400, {"errors": [{"message": e} for e in errors]})
        self._json(200, {"errors": [], "warnings": []})

    def _info(self, account, query, repo, rev=None):
        found = self._repo_or_404(account, repo)
        if found is None:
            return
        revision = self._revision_or_404(found, rev or "main")
        if revision is None:
            return
        oid, files = revision
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")  # files_metadata=True: sizes too
        siblings = []
        for path, entry in sorted(files.items()):
            item = {"rfilename": path}
            if blobs:
                item.update(size=entry.size, blobId=entry.git_sha1)
                if entry.lfs:
                    item["lfs"] = {"sha256": entry.blob, "size": entry.size, "pointerSize": 134}
            siblings.append(item)
        self._json(200, {"id": repo, "modelId": repo, "sha": oid, "private": found.private, "siblings": siblings})

    def _tree(self, account, query, repo, rev, sub=None):
        found = self._repo_or_404(account, repo)
        if found is None:
            return
        revision = self._revision_or_404(found, rev)
        if revision is None:
            return
        prefix = (sub or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, folders = [], set()
        for path, entry in sorted(revision[1].items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            if "/" in rest and not recursive:
                folders.add((prefix + "/" if prefix else "") + rest.split("/")[0])
                continue
            item = {"type": "file", "oid": entry.git_sha1, "size": entry.size, "path": path}
            if entry.lfs:
                item["lfs"] = {"oid": entry.blob, "size": entry.size, "pointerSize": 134}
            entries.append(item)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)]
        self._json(200, entries)

    def _writable_repo(self, account, repo_id) -> Optional[Repo]:
        repo = self._repo_or_404(account, repo_id)
        if repo is None:
            return None
        if account is None:
            self._error(401, BAD_CREDENTIALS)
            return None
        if not self._can_write(account, repo_id.split("/")[0]):
            self._error(403, f"You don't have the rights to write to {repo_id}")
            return None
        return repo

    def _preupload(self, account, query, repo, rev):
        payload = json.loads(self._body() or b"{}")
        found = self._writable_repo(account, repo)
        if found is None:
            return
        current = found.files(unquote(rev))
        existing = current[1] if current else {}
        files = []
        for item in payload.get("files", []):
            path = item["path"]
            lfs = path.endswith(self.hub.lfs_suffixes) if self.hub.lfs_suffixes else False
            old = existing.get(path)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": old.git_sha1 if old else None})
        self._json(200, {"files": files, "commitOid": current[0] if current else None})

    def _commit(self, account, query, repo, rev):
        body = self._body()
        found = self._writable_repo(account, repo)
        if found is None:
            return
        if self.headers.get("Content-Type") != "application/x-ndjson":
            return self._error(400, "Expected an ndjson body")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "The first line must be the commit header")
        added, deleted = {}, []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, "Only base64 content is supported")
                added[value["path"]] = self.hub._store(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs_objects:
                    return self._error(422, f"LFS object {value['oid']} was never uploaded")
                entry = self.hub._store(self.hub._blob(value["oid"]), lfs=True)
                added[value["path"]] = entry
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                return self._error(400, f"Unknown commit operation {key}")
        with self.hub.lock:
            oid = self.hub._commit(found, added, deleted)
        self._json(200, {"commitUrl": f"{self.hub.endpoint}/{repo}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None, "success": True})

    def _lfs_batch(self, account, query, repo):
        payload = json.loads(self._body() or b"{}")
        found = self._writable_repo(account, repo)
        if found is None:
            return
        if "basic" not in payload.get("transfers", ["basic"]):
            return self._error(400, "The stand-in speaks only the basic LFS transfer")
        objects = []
        for obj in payload.get("objects", []):
            item = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_objects:
                item["actions"] = {"upload": {"href": f"{self.hub.endpoint}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(item)
        self._json(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, account, query, oid):
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "Content does not match its oid")
        self.hub._store(data, lfs=True)
        self.hub.lfs_objects.add(oid)
        self._send(200)

    def _resolve(self, account, query, repo, rev, file):
        found = self._repo_or_404(account, repo)
        if found is None:
            return
        revision = self._revision_or_404(found, rev)
        if revision is None:
            return
        oid, files = revision
        entry = files.get(file)
        if entry is None:
            return self._error(404, "Entry not found", "EntryNotFound")
        headers = {"X-Repo-Commit": oid, "ETag": f'"{entry.git_sha1}"'}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.blob}"', "X-Linked-Size": str(entry.size)})
        self._send(200, self.hub._blob(entry.blob), headers, ctype="application/octet-stream")
