"""The app started as a Space with its owner's HF_TOKEN set: no visitor acts as the owner.

The app runs in this process (``live_app``) with the environment a Space sets
(``SYSTEM=spaces``, ``SPACE_ID``) and the owner's token in ``HF_TOKEN``, against the Hub
stand-in of ``tests/hubstub.py`` on loopback, which records every Authorization header.
The owner has a private template, a private model and a public template and run. A
visitor who has not signed in is a plain ``gradio_client``; a signed-in one passes their
token as ``oauth_token``, which Gradio hands to the handlers' ``gr.OAuthToken`` exactly
as a browser sign-in does. (Gradio's Space sign-in routes talk to huggingface.co, so
they are left out here; nothing of fnweb's depends on them.) Uploads are capped at 1 MB
for this app (FNWEB_MAX_UPLOAD_MB).
"""

from __future__ import annotations

import html as htmllib
import json
from pathlib import Path

import pytest
from hubstub import Account, HubStub
from live_app import running_app

from fnweb.templates import TEMPLATE_FILENAME, Template, TemplateMeta

OWNER, VISITOR = "hf_spaceowner_secret_token", "hf_visitor_own_token"


def _template(width: int = 64) -> Template:
    meta = TemplateMeta(model_id="owner/secret-model", site="neurons", n_layers=3, width=width, k=2,
                        threshold="percentile", threshold_value=98.0)
    return Template([0, 1, 2], width, {0: {0: [1, 2]}, 1: {2: [5]}}, meta=meta)


def _run_files(folder: Path) -> dict[str, bytes]:
    import tiny
    from peft import LoraConfig, get_peft_model

    get_peft_model(tiny.make_model("llama", seed=1), LoraConfig(r=2, target_modules=["down_proj"])).save_pretrained(
        folder)
    _template().save(folder / "template.json")
    (folder / "mask.json").write_text(json.dumps({"components": [0], "mode": "lesion"}))
    (folder / "train_config.json").write_text(json.dumps({"model_id": "owner/secret-model", "dataset": "x"}))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    import gradio.oauth
    from huggingface_hub import constants, hf_api

    home = tmp_path_factory.mktemp("hf")
    with HubStub({OWNER: Account("spaceowner"), VISITOR: Account("visitor")},
                 lfs_suffixes=(".safetensors", ".png")) as stub, pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", stub.endpoint)
        patch.setattr(constants, "ENDPOINT", stub.endpoint)
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                      stub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        patch.setattr(hf_api.api, "endpoint", stub.endpoint)
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "HF_HUB_CACHE", str(home / "cache"))
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "no-saved-login"))
        patch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        # The app switches implicit tokens off for the whole process: undone when these tests end.
        patch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
        patch.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", raising=False)
        for name in ("HUGGING_FACE_HUB_TOKEN", "FNWEB_HF_SIGN_IN", "FNWEB_SINGLE_USER", "FNWEB_MULTI_USER"):
            patch.delenv(name, raising=False)
        patch.setenv("SYSTEM", "spaces")  # what a Space sets
        patch.setenv("SPACE_ID", "spaceowner/fnweb")
        patch.setenv("HF_TOKEN", OWNER)  # the owner's secret, set to reach their gated and private repos
        patch.setenv("FNWEB_PRELOAD", "0")
        patch.setenv("FNWEB_MAX_UPLOAD_MB", "1")
        patch.setattr(gradio.oauth, "_add_oauth_routes", lambda app: None)  # they would call huggingface.co
        template = _template().to_json().encode()
        stub.put_files("spaceowner/private-template", {TEMPLATE_FILENAME: template}, private=True)
        stub.put_files("spaceowner/public-template", {TEMPLATE_FILENAME: template})
        stub.put_files("spaceowner/private-model", {"config.json": b'{"model_type": "llama"}'}, private=True)
        stub.put_files("spaceowner/public-run", _run_files(tmp_path_factory.mktemp("run")))
        yield stub


@pytest.fixture(scope="module")
def url(hub):
    with running_app() as address:
        yield address


def client(url, token=None):
    from gradio_client import Client

    return Client(url, verbose=False, oauth_token=token)


def text(output) -> str:
    return htmllib.unescape(output if isinstance(output, str) else json.dumps(output))


def refused(call, *args, **kwargs) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def hub_calls(hub, since: int = 0) -> list[tuple[str, str]]:
    """Requests the stand-in saw, less the usage pings gradio_client sends on its own (from this test process)."""
    return [r for r in hub.requests[since:] if not r[1].startswith(("/api/telemetry/", "/api/agent-harnesses"))]


def upload(visitor, path: Path) -> str:
    from gradio_client import handle_file

    *_, picker = visitor.predict(handle_file(str(path)), api_name="/upload_template")
    return picker["value"]


def test_an_anonymous_visitor_cannot_reach_the_hub_as_the_owner(url, hub, tmp_path):
    anonymous = client(url)
    seen = len(hub.auth_headers)
    calls = len(hub.requests)

    check = anonymous.predict("pwned-by-anonymous", "", api_name="/hub_account")
    assert "Sign in first" in text(check[0]) and "spaceowner" not in text(check)
    name = upload(anonymous, _template().save(tmp_path / "mine.json"))
    message = refused(anonymous.predict, name, "pwned-by-anonymous", False, False, True, "",
                      api_name="/hub_push_template")
    assert "Sign in first" in message
    assert hub_calls(hub, calls) == []  # nothing reached the Hub: not with the owner's token, not at all

    message = refused(anonymous.predict, "template", "spaceowner/private-template", "", api_name="/hub_load")
    assert "private" in message and "sign in first" in message
    # A public repo still loads, with no token at all; a loaded run cannot then be pushed anonymously.
    loaded = anonymous.predict("template", "spaceowner/public-template", "", api_name="/hub_load")
    assert "Loaded the template" in text(loaded[0])
    loaded = anonymous.predict("run", "spaceowner/public-run", "", api_name="/hub_load")
    run_folder = loaded[2]["value"]
    message = refused(anonymous.predict, run_folder, "pwned-run", False, False, "", False, api_name="/hub_push_run")
    assert "Sign in first" in message

    assert hub.auth_headers[seen:] == []  # every request of this visitor went out anonymous
    assert f"Bearer {OWNER}" not in hub.auth_headers
    assert not any(repo.endswith(("pwned-by-anonymous", "pwned-run")) for repo in hub.repos)


def test_a_signed_in_visitor_acts_with_their_own_token_only(url, hub, tmp_path):
    visitor = client(url, VISITOR)
    seen = len(hub.auth_headers)

    check = visitor.predict("shared-template", "", api_name="/hub_account")
    assert "Pushes to visitor/shared-template as visitor (token from your Hugging Face sign-in)" in text(check[0])
    name = upload(visitor, _template().save(tmp_path / "theirs.json"))
    pushed = visitor.predict(name, "shared-template", False, False, False, "", api_name="/hub_push_template")
    assert "visitor/shared-template" in text(pushed)
    assert Template.from_dict(json.loads(hub.read("visitor/shared-template", TEMPLATE_FILENAME))).components == \
        _template().components
    message = refused(visitor.predict, "template", "spaceowner/private-template", "", api_name="/hub_load")
    assert "cannot read it" in message  # the owner's private repo stays theirs

    sent = hub.auth_headers[seen:]
    assert sent and set(sent) == {f"Bearer {VISITOR}"}
    assert f"Bearer {OWNER}" not in hub.auth_headers


def test_no_model_loads_with_the_owners_token_or_from_a_server_path(url, hub, tiny_model_dir):
    anonymous = client(url)
    seen = len(hub.auth_headers)
    message = refused(anonymous.predict, "spaceowner/private-model", "auto", api_name="/load_model")
    assert "Could not load model 'spaceowner/private-model'" in message
    assert any("private-model" in path for _, path in hub.requests)  # it was asked for, anonymously
    assert hub.auth_headers[seen:] == [] and f"Bearer {OWNER}" not in hub.auth_headers
    message = refused(anonymous.predict, str(tiny_model_dir), "auto", api_name="/load_model")
    assert "not a Hub id" in message and "never a path on the server" in message


def test_oversized_uploads_and_claims_are_refused_before_any_work(url, tmp_path):
    import httpx
    from gradio_client import handle_file

    anonymous = client(url)
    huge = tmp_path / "huge.json"
    huge.write_text(" " * (2 * 2**20))  # 2 MB: over this app's 1 MB
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):  # the page says so
        anonymous.predict(handle_file(str(huge)), api_name="/upload_template")
    answer = httpx.post(f"{url}gradio_api/upload", files={"files": ("huge.json", huge.read_bytes())}, timeout=60)
    assert answer.status_code == 413  # and the server refuses it whoever sends it
    claim = {"layout": {"captured_layers_sorted": list(range(20_000)), "hidden_size": 1536},
             "templates": {"0": {"0": [1, 2, 3]}}}
    small = tmp_path / "claims-20000-layers.json"
    small.write_text(json.dumps(claim))  # ~130 KB: within the upload bound, far over the layers bound
    message = refused(anonymous.predict, handle_file(str(small)), api_name="/upload_template")
    assert "claims 20,000 layers" in message
    assert anonymous.predict(None, api_name="/draw_networks")[1].startswith("Build or upload")  # nothing kept
