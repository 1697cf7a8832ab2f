"""The Share tab end to end: the launched app, driven through gradio_client, against a Hub stand-in.

The app runs in this process (``live_app``); ``tests/hubstub.py`` serves the Hub on
loopback and the real ``huggingface_hub`` client is pointed at it as ``HF_ENDPOINT``
does, with HF_TOKEN set to a token the stand-in accepts. The Hugging Face button is
on (FNWEB_HF_SIGN_IN=1, as on a Space), so the app starts as it would there, with
Gradio's local sign-in stand-in. Templates are made directly in the embedded model's
shape (30 layers x 1536 neurons) and uploaded, so no model has to run; each client
is its own visitor. The browser test at the end signs in, pushes from the page and
saves the README's screenshot of the tab.
"""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from hubstub import Account, HubStub
from live_app import running_app
from shots import screenshot_dir, upload_template

from fnweb.hubcard import HEATMAP_FILENAME, coverage_png
from fnweb.models import EMBEDDED_ID
from fnweb.templates import TEMPLATE_FILENAME, Template, TemplateMeta

ALICE, READER, BOGUS = "hf_alice_share_token", "hf_bob_read_token", "hf_not_a_real_token"
DEFAULT_REPO = "SmolLM2-135M-Instruct-fnweb-factual"  # from the test template's model and prompt set
ROOT = Path(__file__).resolve().parent.parent


def _point_client_at(patch: pytest.MonkeyPatch, endpoint: str) -> None:
    """What HF_ENDPOINT does, for a client that was imported already (it reads the variable at import)."""
    from huggingface_hub import constants, hf_api

    patch.setenv("HF_ENDPOINT", endpoint)
    patch.setattr(constants, "ENDPOINT", endpoint)
    patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    patch.setattr(hf_api.api, "endpoint", endpoint)  # the module-level client behind huggingface_hub.whoami()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from huggingface_hub import constants

    home = tmp_path_factory.mktemp("hf")
    accounts = {ALICE: Account("alice", orgs=("lab",)), READER: Account("bob", role="read")}
    with HubStub(accounts, lfs_suffixes=(".safetensors", ".png")) as stub, pytest.MonkeyPatch.context() as patch:
        _point_client_at(patch, stub.endpoint)
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "HF_HUB_CACHE", str(home / "cache"))
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "no-saved-login"))
        patch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        patch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        patch.setenv("HF_TOKEN", ALICE)
        patch.setenv("FNWEB_PRELOAD", "0")  # no model runs here
        patch.setenv("FNWEB_HF_SIGN_IN", "1")  # the button, as on a Space
        yield stub


@pytest.fixture(scope="module")
def url(hub):
    with running_app() as address:
        yield address


@pytest.fixture(scope="module")
def template_file(tmp_path_factory) -> Path:
    """A template in the embedded model's shape, as the Templates tab would save it."""
    rng = np.random.default_rng(0)
    layers, width = list(range(30)), 1536
    components = {c: {layer: sorted(rng.choice(width, size=5 + c, replace=False).tolist())
                      for layer in layers if (layer + c) % 3} for c in range(3)}
    meta = TemplateMeta(model_id=EMBEDDED_ID, site="neurons", n_layers=30, width=width, k=3, threshold="percentile",
                        threshold_value=98.0, architecture="llama", samples_per_dataset=20, max_tokens=64,
                        datasets=[{"name": "builtin:factual", "config": None, "split": "train", "samples": 20}])
    return Template(layers=layers, width=width, components=components, meta=meta).save(
        tmp_path_factory.mktemp("template") / "factual.json")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A fine-tuning run folder in fnweb.finetune's layout, with a real tiny PEFT adapter."""
    import tiny
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("run") / "20250101-120000-lesion"
    model = tiny.make_model("llama", seed=1)
    model.config.name_or_path = "fnweb-tests/tiny-llama"
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj"])).save_pretrained(folder)
    meta = TemplateMeta(model_id="tiny-llama", site="neurons", n_layers=3, width=64, k=3, threshold="percentile",
                        threshold_value=98.0)
    Template([0, 1, 2], 64, {0: {0: [1, 5]}, 1: {1: [2, 3]}, 2: {2: [7, 8, 9]}}, meta=meta).save(
        folder / "template.json")
    (folder / "mask.json").write_text(json.dumps({"components": [0, 2], "mode": "lesion", "random_seed": None,
                                                  "layers": None}))
    (folder / "train_config.json").write_text(json.dumps({"dataset": "builtin:arithmetic", "model_id": "tiny-llama",
                                                          "lora_r": 4, "mask_mode": "lesion", "seed": 0}))
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n')
    (folder / "summary.json").write_text(json.dumps({"learning": {"task_loss_before": 2.6, "task_loss_after": 1.9},
                                                     "forgetting": {"kl_after": 0.031}}))
    (folder / "state.json").write_text(json.dumps({"state": "finished"}))
    return folder


# ---- calling the tab --------------------------------------------------------------------


def upload(client, path: Path) -> str:
    from gradio_client import handle_file

    *_, picker = client.predict(handle_file(str(path)), api_name="/upload_template")
    return picker["value"]


def push_template(client, name, repo, private=False, overwrite=False, heatmap=True, message=""):
    return client.predict(name, repo, private, overwrite, heatmap, message, api_name="/hub_push_template")


def push_run(client, run, repo, private=False, overwrite=False, message="", merged=False):
    return client.predict(run, repo, private, overwrite, message, merged, api_name="/hub_push_run")


def load(client, repo, kind="template", revision=""):
    return client.predict(kind, repo, revision, api_name="/hub_load")


def account(client, repo: str, run_repo: str = "") -> tuple[str, str]:
    """What Check account says about each repo field (HTML, its text unescaped)."""
    return tuple(htmllib.unescape(part) for part in client.predict(repo, run_repo, api_name="/hub_account"))


def link(html: str) -> str:
    found = re.findall(r'<a href="([^"]+)"', html)
    assert len(found) == 1, html
    return found[0]


def expect_error(match: str, call, *args, **kwargs):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=match) as caught:
        call(*args, **kwargs)
    for token in (ALICE, READER, BOGUS):
        assert token not in str(caught.value)


def hub_calls(hub) -> list[tuple[str, str]]:
    """The requests the Hub stand-in saw, less the usage pings that Gradio and the client send on their own."""
    return [r for r in hub.requests if not r[1].startswith(("/api/telemetry/", "/api/agent-harnesses"))]


def snapshot(*folders: Path) -> dict:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for f in folders for p in sorted(Path(f).rglob("*"))
            if p.is_file()}


# ---- the main paths ---------------------------------------------------------------------


def test_push_a_template_byte_exact_then_load_it_back_into_the_session(client, hub, template_file):
    name = upload(client, template_file)
    line, repo, image = client.predict(name, api_name="/hub_template_defaults")
    assert repo == DEFAULT_REPO and f"**{name}**: 3 components" in line
    assert Path(image).read_bytes() == coverage_png(Template.load(template_file))  # the image that is pushed

    target, _ = account(client, repo)
    assert f"Pushes to alice/{repo} as alice (token from HF_TOKEN)." in target and "fn-msg-ok" in target

    html = push_template(client, name, repo, message="First share")
    assert link(html) == f"{hub.endpoint}/alice/{repo}" and "as alice" in html
    assert hub.read(f"alice/{repo}", TEMPLATE_FILENAME) == template_file.read_bytes()  # byte for byte
    assert hub.read(f"alice/{repo}", HEATMAP_FILENAME) == Path(image).read_bytes()
    assert hub.listing(f"alice/{repo}")[HEATMAP_FILENAME].lfs
    assert b"fnweb" in hub.read(f"alice/{repo}", "README.md")
    assert not hub.repos[f"alice/{repo}"].private
    assert hub.auth_headers and all(h == f"Bearer {ALICE}" for h in hub.auth_headers)

    message, picker, _ = load(client, f"alice/{repo}")
    assert "Loaded the template" in message and "Template list" in message
    loaded = picker["value"]
    assert loaded == f"alice/{repo} (Hub)" and [c[0] for c in picker["choices"]] == [name, loaded]
    summary, coverage, download = client.predict(loaded, api_name="/show_template")  # usable like any template
    assert "(from the Hub)" in summary and len(coverage["data"]) == 3
    assert Path(download).read_bytes() == template_file.read_bytes()

    first = hub.repos[f"alice/{repo}"].commits[-1][0]
    other = template_file.parent / "two.json"
    changed = Template.load(template_file)
    del changed.components[2]
    changed.save(other)
    second = upload(client, other)
    push_template(client, second, f"alice/{repo}", heatmap=False)  # the same repo gets a new commit
    assert len(Template.load(Path(client.predict(load(client, f"alice/{repo}")[1]["value"],
                                                 api_name="/show_template")[2])).components) == 2
    _, picker, _ = load(client, f"alice/{repo}", revision=first)  # an earlier revision
    assert picker["value"] == f"alice/{repo}@{first[:12]} (Hub)"
    assert Path(client.predict(picker["value"], api_name="/show_template")[2]).read_bytes() == \
        template_file.read_bytes()


def test_push_a_run_then_load_it_and_push_the_loaded_copy(client, hub, run_dir):
    before = snapshot(run_dir)
    line, repo = client.predict(str(run_dir), api_name="/hub_run_defaults")
    assert repo == "tiny-llama-fnweb-arithmetic-lora"
    assert "LoRA r 4 on tiny-llama" in line and "lesion components 0,2" in line and "1.9" in line

    html = push_run(client, str(run_dir), f"lab/{repo}", private=True, message="Run 1")
    assert link(html) == f"{hub.endpoint}/lab/{repo}" and "privately" in html
    assert hub.repos[f"lab/{repo}"].private
    for path in run_dir.iterdir():
        if path.name != "README.md":
            assert hub.read(f"lab/{repo}", path.name) == path.read_bytes(), path.name
    assert hub.listing(f"lab/{repo}")["adapter_model.safetensors"].lfs
    assert snapshot(run_dir) == before

    message, picker, runs = load(client, f"lab/{repo}", kind="run")
    assert "Loaded the run lab/" in message and "lesion components 0,2" in message
    assert picker["value"] == f"lab/{repo} (Hub) run template"
    downloaded = runs["value"]
    assert [tuple(c) for c in runs["choices"]] == [(f"lab/{repo} (Hub)", downloaded)]
    assert (Path(downloaded) / "adapter_model.safetensors").read_bytes() == \
        (run_dir / "adapter_model.safetensors").read_bytes()
    assert client.predict(None, api_name="/hub_runs")["choices"] == runs["choices"]  # kept in the session

    push_run(client, downloaded, "alice/copied-run")  # a loaded run, picked from the list
    assert hub.read("alice/copied-run", "adapter_model.safetensors") == \
        (run_dir / "adapter_model.safetensors").read_bytes()


def test_push_a_run_with_its_merged_model(client, hub, tiny_model_dir, tmp_path):
    from ftkit import save_planted, small_config

    from fnweb.finetune import finetune
    from fnweb.models import ModelRequest, load_model

    lm = load_model(ModelRequest(str(tiny_model_dir)))
    planted = save_planted(lm.model, tmp_path)
    folder = finetune(small_config(tmp_path / "run", model_id=str(tiny_model_dir), mask_mode="lesion",
                                   template_path=planted, component_ids=[2], max_steps=2), lm).folder
    html = push_run(client, str(folder), "alice/merged-from-tab", merged=True)
    assert "with a merged model" in html and link(html).endswith("/alice/merged-from-tab")
    assert {"adapter_model.safetensors", "merged/model.safetensors", "merged/config.json"} <= \
        set(hub.listing("alice/merged-from-tab"))

    qlora = tmp_path / "qlora"
    shutil.copytree(folder, qlora)
    config = json.loads((qlora / "train_config.json").read_text())
    (qlora / "train_config.json").write_text(json.dumps({**config, "quantization": "4bit"}))
    requests = len(hub_calls(hub))
    expect_error("trained on a 4bit base model", push_run, client, str(qlora), "alice/q", merged=True)
    assert len(hub_calls(hub)) == requests


# ---- faults: a message in the page, local files untouched, the app stays up -------------------


def test_token_faults(client, hub, template_file, monkeypatch):
    name = upload(client, template_file)
    requests = len(hub_calls(hub))
    monkeypatch.delenv("HF_TOKEN")
    expect_error("No Hugging Face token: sign in with the Hugging Face button.*HF_TOKEN.*hf auth login",
                 push_template, client, name, "alice/t")
    target, _ = account(client, "alice/t")
    assert "No Hugging Face token" in target and "fn-msg-error" in target
    assert len(hub_calls(hub)) == requests  # nothing was asked of the Hub

    monkeypatch.setenv("HF_TOKEN", BOGUS)
    expect_error(r"token from HF_TOKEN was rejected \(401", push_template, client, name, "alice/t")
    monkeypatch.setenv("HF_TOKEN", READER)
    target, _ = account(client, "bob/t")
    assert "read-only" in target
    expect_error(r"No write access to 'bob' \(403", push_template, client, name, "bob/t")
    monkeypatch.setenv("HF_TOKEN", ALICE)
    target, _ = account(client, "someone-else/t")
    assert "alice cannot write to 'someone-else'" in target
    expect_error(r"No write access to 'someone-else' \(403.*alice may write to alice, lab", push_template, client,
                 name, "someone-else/t")
    assert not {"alice/t", "bob/t", "someone-else/t"} & set(hub.repos)


def test_bad_input_faults(client, hub, template_file, run_dir, tmp_path):
    expect_error("No template yet", push_template, client, None, "alice/t")
    name = upload(client, template_file)
    target, _ = account(client, "bad--name")
    assert "not a valid Hub repo id" in target
    requests = len(hub_calls(hub))
    for bad in ("bad--name", "a/b/c", "-start", ""):
        expect_error("not a valid Hub repo id|No repo id given", push_template, client, name, bad)
        expect_error("not a valid Hub repo id|No repo id given", push_run, client, str(run_dir), bad)
        expect_error("not a valid Hub repo id|No repo id given", load, client, bad)
    expect_error("No run chosen", push_run, client, "", "alice/r")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    expect_error("lacks adapter_model.safetensors", push_run, client, str(partial), "alice/r")
    assert len(hub_calls(hub)) == requests  # all refused before any Hub call

    expect_error("No repo alice/missing on the Hub", load, client, "alice/missing")
    expect_error("No repo alice/missing on the Hub", load, client, "alice/missing", kind="run")
    push_template(client, name, "alice/only-template")
    expect_error("lacks adapter_config.json", load, client, "alice/only-template", kind="run")
    expect_error("has no such revision", load, client, "alice/only-template", revision="v9")


def test_a_repo_holding_something_else_is_refused_unless_overwrite(client, hub, template_file):
    name = upload(client, template_file)
    theirs = {"README.md": b"# Someone's model\n", "config.json": b'{"model_type": "bert"}'}
    hub.put_files("alice/theirs", theirs)
    commits = len(hub.repos["alice/theirs"].commits)
    expect_error("already exists and holds files that fnweb did not write.*choose another repo name|"
                 "already exists and holds files that fnweb did not write.*Choose another repo name",
                 push_template, client, name, "alice/theirs")
    assert len(hub.repos["alice/theirs"].commits) == commits
    expect_error("has no global_templates.json .*not an fnweb template", load, client, "alice/theirs")
    html = push_template(client, name, "alice/theirs", overwrite=True)
    assert link(html).endswith("/alice/theirs")
    assert hub.read("alice/theirs", "config.json") == theirs["config.json"]  # their other files are kept
    assert hub.read("alice/theirs", TEMPLATE_FILENAME) == template_file.read_bytes()


def test_hub_failing_mid_upload_then_a_retry_works(client, hub, template_file, run_dir):
    name = upload(client, template_file)
    _, _, session_file = client.predict(name, api_name="/show_template")
    before = snapshot(template_file.parent, Path(session_file).parent, run_dir)

    hub.fail("POST", r"/commit/", status=500)
    expect_error(r"Hub answered an error \(500.*did not complete.*try again", push_template, client, name,
                 "alice/flaky")
    assert ("POST", "/api/models/alice/flaky/preupload/main") in hub.requests  # it failed part-way
    assert hub.listing("alice/flaky").keys() == {".gitattributes"}  # nothing half-committed
    hub.fail("POST", r"/commit/", drop=True)  # the connection drops after the adapter's upload
    expect_error("Cannot reach the Hugging Face Hub", push_run, client, str(run_dir), "alice/flaky-run")
    assert snapshot(template_file.parent, Path(session_file).parent, run_dir) == before

    assert link(push_template(client, name, "alice/flaky")).endswith("/alice/flaky")  # a retry works
    assert hub.read("alice/flaky", TEMPLATE_FILENAME) == template_file.read_bytes()
    push_run(client, str(run_dir), "alice/flaky-run")
    assert hub.read("alice/flaky-run", "adapter_model.safetensors") == \
        (run_dir / "adapter_model.safetensors").read_bytes()


def test_network_unreachable(client, hub, template_file, monkeypatch):
    name = upload(client, template_file)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _point_client_at(monkeypatch, dead)
    expect_error(f"Cannot reach the Hugging Face Hub at {dead}", push_template, client, name, "alice/x")
    expect_error("Cannot reach the Hugging Face Hub", load, client, "alice/x")
    target, _ = account(client, "x")
    assert "Cannot reach the Hugging Face Hub" in target


# ---- the run list (no app needed) -----------------------------------------------------------


def test_the_run_list_holds_the_visitors_runs_and_on_a_space_only_those(run_dir, tmp_path, monkeypatch):
    from fnweb.errors import FnwebError
    from fnweb.finetune.runs import run_info
    from fnweb.ui import share_tab
    from fnweb.ui.state import Session

    session = Session()
    loaded = [{"label": "lab/x (Hub)", "folder": str(tmp_path)}]
    assert share_tab.visitor_runs(session, loaded) == [("lab/x (Hub)", str(tmp_path))]
    for record in ([run_dir], {"a": run_info(run_dir)}, [str(run_dir)]):  # folders, or RunInfo by run id
        session.runs = record  # what the Fine-tune tab keeps
        assert share_tab.visitor_runs(session, loaded) == [
            ("20250101-120000-lesion · finished · lesion", str(run_dir)), ("lab/x (Hub)", str(tmp_path))]
    other = tmp_path / "someone-elses-run"
    assert share_tab._run_folder(session, loaded, str(other)) == other  # locally a path may be typed
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "fnweb/fnweb")
    assert share_tab._run_folder(session, loaded, str(run_dir)) == run_dir
    with pytest.raises(FnwebError, match="is not one of your runs"):
        share_tab._run_folder(session, loaded, str(other))


# ---- in the browser -------------------------------------------------------------------------


@pytest.mark.browser
def test_sign_in_push_and_see_the_link_in_the_page(url, hub, template_file, browser):
    """Sign in (Gradio's local stand-in: its placeholder token is never sent), push, read the link."""
    seen = len(hub.auth_headers)
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Share").click()
    with page.expect_navigation(url=url, timeout=30_000):  # the page comes back, signed in
        page.get_by_role("button", name="Sign in with Hugging Face").click()
    page.get_by_role("tab", name="Share").click()
    page.get_by_role("button", name="Logout (alice)").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Templates").click()
    upload_template(page, template_file, timeout=30_000)

    page.get_by_role("tab", name="Share").click()
    repo_box = page.locator("#fn-share-repo textarea, #fn-share-repo input").first
    page.wait_for_function("() => document.querySelector('#fn-share-repo textarea, #fn-share-repo input')"
                           ".value.length > 0", timeout=15_000)
    assert repo_box.input_value() == DEFAULT_REPO
    page.locator("#fn-share-heatmap img").wait_for(timeout=15_000)
    page.click("#fn-share-check")
    page.wait_for_selector("#fn-share-target .fn-msg-ok", timeout=15_000)
    assert f"Pushes to alice/{DEFAULT_REPO} as alice" in page.inner_text("#fn-share-target")
    page.click("#fn-share-push")
    page.wait_for_selector("#fn-share-result .fn-msg-ok a", timeout=30_000)
    href = page.get_attribute("#fn-share-result a", "href")
    assert href == f"{hub.endpoint}/alice/{DEFAULT_REPO}"
    page.fill("#fn-share-load-repo textarea, #fn-share-load-repo input", "alice/no-such-repo")
    page.click("#fn-share-load")
    page.wait_for_selector("#fn-share-load-result .fn-msg-error", timeout=15_000)
    assert "No repo alice/no-such-repo" in page.inner_text("#fn-share-load-result")
    page.fill("#fn-share-load-repo textarea, #fn-share-load-repo input", f"alice/{DEFAULT_REPO}")
    page.click("#fn-share-load")
    page.wait_for_selector("#fn-share-load-result .fn-msg-ok", timeout=15_000)
    assert page.input_value("#fn-template-picker input") == f"alice/{DEFAULT_REPO} (Hub)"
    for close in page.locator(".toast-close").all():  # the error's pop-up, so that it hides nothing
        close.click()
    page.locator(".toast-body").first.wait_for(state="detached", timeout=10_000)
    shots = screenshot_dir()  # artifacts/, or docs/screenshots/ when asked (tests/shots.py)
    page.screenshot(path=str(shots / "share.png"), full_page=True)
    page.close()
    sent = hub.auth_headers[seen:]
    assert sent and all(h == f"Bearer {ALICE}" for h in sent)  # HF_TOKEN, never the sign-in's placeholder
