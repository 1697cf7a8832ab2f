"""Hub sharing: the real huggingface_hub client against a Hub stand-in on loopback.

Each test serves ``tests/hubstub.py`` on 127.0.0.1 and points the client at it the way
``HF_ENDPOINT`` does (the client reads that variable at import, so the fixture also sets
the constants it was read into), with offline mode off for these tests only, a temp
Hub cache and no saved login. Binaries (``.safetensors``, ``.png``) go through the LFS
batch API as on the Hub; Xet is off because the stand-in speaks only basic LFS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hubstub import Account, HubStub

from fnweb import hub as fnhub
from fnweb.build import BuildConfig, build_template
from fnweb.errors import FnwebError
from fnweb.hubcard import HEATMAP_FILENAME, coverage_png
from fnweb.masks import MaskSpec, masked
from fnweb.models import EMBEDDED_HUB_ID, EMBEDDED_ID
from fnweb.prompts import PromptSource
from fnweb.templates import TEMPLATE_FILENAME, Template

ALICE, READER, BOGUS = "hf_alice_write_token", "hf_bob_read_token", "hf_not_a_real_token"
PLACEHOLDER = "mock-oauth-token-for-local-dev"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    accounts = {ALICE: Account("alice", orgs=("lab",)), READER: Account("bob", role="read")}
    with HubStub(accounts, lfs_suffixes=(".safetensors", ".png")) as stub:
        _point_client_at(monkeypatch, constants, stub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-login"))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setenv("HF_TOKEN", ALICE)
        yield stub


def _point_client_at(monkeypatch, constants, endpoint: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def built(tiny_lm, tmp_path_factory):
    """A real template built on the tiny model, saved as a file."""
    path = tmp_path_factory.mktemp("template") / TEMPLATE_FILENAME
    config = BuildConfig(sources=[PromptSource("builtin:factual"), PromptSource("builtin:code")],
                         samples_per_dataset=8, max_tokens=32, k=3, seed=0)
    return build_template(tiny_lm, config, output=path)


@pytest.fixture(scope="module")
def run_dir(built, tmp_path_factory):
    """A fine-tuning run folder in the documented layout, with a real tiny PEFT adapter."""
    import tiny
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("run")
    model = tiny.make_model("llama", seed=1)
    model.config.name_or_path = "fnweb-tests/tiny-llama"
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj", "up_proj"]))
    with torch.no_grad():  # a trained adapter is not zero: make B non-zero so it changes the output
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(folder)
    built.template.save(folder / "template.json")
    (folder / "mask.json").write_text(json.dumps({"components": [0, 2], "mode": "lesion", "random_seed": None,
                                                  "layers": None}))
    (folder / "train_config.json").write_text(json.dumps({"dataset": "builtin:arithmetic", "model_id": "tiny",
                                                          "lora_r": 4, "mask_mode": "lesion", "seed": 0}))
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.1}\n')
    (folder / "summary.json").write_text(json.dumps({"learning": {"task_loss_before": 2.6, "task_loss_after": 1.9},
                                                     "forgetting": {"general_kl": 0.031}}))
    return folder


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


# ---- templates ----

def test_pushed_template_arrives_byte_exact_loads_back_and_applies(hub, built, tiny_lm, tmp_path):
    path = built.path
    before = _snapshot(path.parent)
    url = fnhub.push_template(built.template, "alice/tiny-template", heatmap_png=coverage_png(built.template))

    assert url == f"{hub.endpoint}/alice/tiny-template"
    assert hub.read("alice/tiny-template", TEMPLATE_FILENAME) == path.read_bytes()  # the saved file, byte for byte
    assert hub.read("alice/tiny-template", HEATMAP_FILENAME).startswith(b"\x89PNG")
    assert hub.listing("alice/tiny-template")[HEATMAP_FILENAME].lfs  # binaries went through LFS
    assert _snapshot(path.parent) == before
    assert hub.auth_headers and all(h == f"Bearer {ALICE}" for h in hub.auth_headers)

    loaded = fnhub.load_template_from_hub("alice/tiny-template", cache_dir=str(tmp_path / "cache"))
    assert loaded.to_json() == built.template.to_json()

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    plain = _logits(tiny_lm.model, ids)
    with masked(tiny_lm.model, loaded, MaskSpec(components=(0, 1, 2), mode="preserve")):
        masked_out = _logits(tiny_lm.model, ids)
    assert not torch.allclose(plain, masked_out)
    assert torch.allclose(plain, _logits(tiny_lm.model, ids))  # hooks removed


def test_template_card_parses_with_its_metadata(hub, built):
    from huggingface_hub import ModelCard

    template = Template.from_dict(built.template.to_dict())
    template.meta.model_id = EMBEDDED_ID  # as if built on the embedded model: the card names its Hub original
    fnhub.push_template(template, "alice/card-check", heatmap_png=coverage_png(template))
    card = ModelCard(hub.read("alice/card-check", "README.md").decode())

    data = card.data.to_dict()
    assert data["base_model"] == EMBEDDED_HUB_ID
    assert "fnweb" in data["tags"]
    assert "datasets" not in data  # built-in sets are not Hub datasets; they are listed in the fnweb block
    block = data["fnweb"]
    assert (block["kind"], block["k"], block["site"], block["threshold"], block["seed"]) == (
        "template", 3, "neurons", "percentile", 0)
    assert block["datasets"] == ["builtin:factual", "builtin:code"] and block["fnweb_version"]
    assert "| component | channels | layers |" in card.text and f"]({HEATMAP_FILENAME})" in card.text
    assert "stability (map) | stability (mask) |" in card.text and "5 re-runs of the PCA and ICA" in card.text
    assert 'load_template_from_hub("alice/card-check")' in card.text


def test_a_bare_repo_name_goes_to_the_account_and_the_target_is_said_first(hub, built):
    assert fnhub.describe_target("my-template") == "Pushes to alice/my-template as alice (token from HF_TOKEN)."
    name = fnhub.default_template_repo_name(built.template)
    assert name == "tiny-llama-fnweb-factual-code"
    url = fnhub.push_template(built.template, name, private=True)
    assert url.endswith("/alice/tiny-llama-fnweb-factual-code")
    assert hub.repos["alice/tiny-llama-fnweb-factual-code"].private


def test_a_private_push_never_goes_to_a_public_repo(hub, built):
    fnhub.push_template(built.template, "alice/public")
    commits = len(hub.repos["alice/public"].commits)
    with pytest.raises(FnwebError, match="exists and is public, but a private push was asked for"):
        fnhub.push_template(built.template, "alice/public", private=True, heatmap_png=coverage_png(built.template))
    assert len(hub.repos["alice/public"].commits) == commits


def test_pushing_again_to_an_fnweb_template_repo_updates_it(hub, built):
    fnhub.push_template(built.template, "alice/again")
    commits = len(hub.repos["alice/again"].commits)
    fnhub.push_template(built.template, "alice/again")  # the same files: the client makes no empty commit
    assert len(hub.repos["alice/again"].commits) == commits
    changed = Template.from_dict(built.template.to_dict())
    del changed.components[2]
    fnhub.push_template(changed, "alice/again", commit_message="Drop component 2")
    assert len(hub.repos["alice/again"].commits) == commits + 1
    assert hub.read("alice/again", TEMPLATE_FILENAME) == changed.to_json().encode()


# ---- runs ----

def test_pushed_run_arrives_byte_exact_and_loads_with_its_mask(hub, run_dir, tmp_path):
    import tiny
    from huggingface_hub import ModelCard
    from peft import PeftModel

    before = _snapshot(run_dir)
    url = fnhub.push_run(run_dir, "alice/tiny-run")
    assert url.endswith("/alice/tiny-run")
    assert _snapshot(run_dir) == before
    listing = hub.listing("alice/tiny-run")
    for name in ("adapter_config.json", "adapter_model.safetensors", "template.json", "mask.json",
                 "train_config.json", "metrics.jsonl", "summary.json"):
        assert hub.read("alice/tiny-run", name) == (run_dir / name).read_bytes(), name
    assert listing["adapter_model.safetensors"].lfs

    card = ModelCard(hub.read("alice/tiny-run", "README.md").decode())
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["base_model"] == "fnweb-tests/tiny-llama"
    assert "fnweb" in data["tags"] and "lora" in data["tags"]
    assert data["fnweb"]["kind"] == "run" and data["fnweb"]["mask"]["components"] == [0, 2]
    assert data["fnweb"]["summary"]["forgetting.general_kl"] == 0.031
    assert "download_run(" in card.text  # how to load it with the mask

    run = fnhub.download_run("alice/tiny-run", cache_dir=str(tmp_path / "cache"))
    assert run.mask == MaskSpec(components=(0, 2), mode="lesion")
    adapter = (run_dir / "adapter_model.safetensors").read_bytes()
    assert (run.folder / "adapter_model.safetensors").read_bytes() == adapter

    base = tiny.make_model("llama", seed=1)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    plain = _logits(base, ids)
    model = PeftModel.from_pretrained(base, run.folder)
    adapted = _logits(model, ids)
    with masked(model, run.template, run.mask):
        adapted_masked = _logits(model, ids)
    assert not torch.allclose(plain, adapted)  # the adapter is applied
    assert not torch.allclose(adapted, adapted_masked)  # and so is the mask


def test_a_run_made_by_fnweb_finetune_round_trips_and_reloads_with_its_mask(hub, tiny_lm, tmp_path):
    """The fine-tuning engine's own run folder: pushed, downloaded, and re-loaded by load_run."""
    from ftkit import save_planted, small_config
    from huggingface_hub import ModelCard

    from fnweb.finetune import finetune, load_run

    planted = save_planted(tiny_lm.model, tmp_path)
    result = finetune(small_config(tmp_path / "ft", mask_mode="lesion", template_path=planted, component_ids=[2],
                                   max_steps=2), tiny_lm)
    local_readme = (result.folder / "README.md").read_text()
    fnhub.push_run(result.folder, "alice/ft-run")
    for path in result.folder.iterdir():
        if path.name != "README.md":
            assert hub.read("alice/ft-run", path.name) == path.read_bytes(), path.name
    card = ModelCard(hub.read("alice/ft-run", "README.md").decode())
    assert card.data.library_name == "peft" and "mask-lesion" in card.data.tags  # their tags kept
    assert card.text.startswith(ModelCard(local_readme).text.rstrip()[:200])  # their text kept
    assert "download_run(" in card.text

    files = fnhub.download_run("alice/ft-run", cache_dir=str(tmp_path / "cache"))
    assert files.mask == MaskSpec(components=(2,), mode="lesion")
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    local, remote = load_run(result.folder, lm=tiny_lm), load_run(files.folder, lm=tiny_lm)
    with local.masked():
        expected = _logits(local.model, ids)
    with remote.masked():
        got = _logits(remote.model, ids)
    assert torch.equal(expected, got)
    assert not torch.equal(got, _logits(remote.model, ids))  # the mask matters


def test_a_run_pushed_with_its_merged_model_loads_with_plain_transformers(hub, tiny_model_dir, tmp_path):
    """merged/ holds the adapter folded in with the mask baked in: the run's masked outputs, no fnweb."""
    from ftkit import save_planted, small_config
    from huggingface_hub import ModelCard, snapshot_download
    from transformers import AutoModelForCausalLM

    from fnweb.finetune import finetune, load_run
    from fnweb.models import ModelRequest, load_model

    lm = load_model(ModelRequest(str(tiny_model_dir)))
    planted = save_planted(lm.model, tmp_path)
    result = finetune(small_config(tmp_path / "ft", model_id=str(tiny_model_dir), mask_mode="lesion",
                                   template_path=planted, component_ids=[2], max_steps=2), lm)
    fnhub.push_run(result.folder, "alice/merged-run", merged=True)
    listing = hub.listing("alice/merged-run")
    assert {"adapter_model.safetensors", "merged/config.json", "merged/model.safetensors"} <= set(listing)
    assert listing["merged/model.safetensors"].lfs and not (result.folder / "merged").exists()
    card = ModelCard(hub.read("alice/merged-run", "README.md").decode())
    assert 'subfolder="merged"' in card.text and "baked into its down-projections" in card.text

    folder = Path(snapshot_download("alice/merged-run", cache_dir=str(tmp_path / "cache")))
    plain = AutoModelForCausalLM.from_pretrained(folder / "merged")
    run = load_run(result.folder, lm=lm)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with run.masked():
        expected = _logits(run.model, ids)
    assert torch.allclose(_logits(plain, ids), expected, atol=1e-4)


def test_a_quantized_run_is_refused_a_merged_model_before_any_network_call(hub, run_dir, tmp_path):
    import shutil

    qlora = tmp_path / "qlora"
    shutil.copytree(run_dir, qlora)
    config = json.loads((qlora / "train_config.json").read_text())
    (qlora / "train_config.json").write_text(json.dumps({**config, "quantization": "4bit"}))
    with pytest.raises(FnwebError, match="QLoRA"):
        fnhub.push_run(qlora, "alice/qlora-run", merged=True)
    assert hub.requests == []


def test_a_run_still_training_is_not_pushed(hub, run_dir, tmp_path):
    import os

    folder = tmp_path / "busy"
    folder.mkdir()
    for path in run_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "state.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    with pytest.raises(FnwebError, match="is still training"):
        fnhub.push_run(folder, "alice/busy")
    assert hub.requests == []


def test_run_card_keeps_an_existing_card_text_and_refreshes_its_metadata(hub, run_dir, tmp_path):
    from huggingface_hub import ModelCard

    folder = tmp_path / "run"
    folder.mkdir()
    for path in run_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- mine\n---\n# My run\n\nNotes kept.\n")
    fnhub.push_run(folder, "alice/carded-run")
    card = ModelCard(hub.read("alice/carded-run", "README.md").decode())
    assert card.data.license == "mit" and card.data.library_name == "peft"
    assert {"mine", "fnweb", "peft"} <= set(card.data.tags)
    assert "Notes kept." in card.text and "download_run(" in card.text
    assert (folder / "README.md").read_text().startswith("---\nlicense: mit")  # the local card is not touched


def test_an_incomplete_run_folder_is_refused_before_any_network_call(hub, run_dir, tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((run_dir / "adapter_config.json").read_bytes())
    with pytest.raises(FnwebError, match="lacks adapter_model.safetensors, template.json, mask.json"):
        fnhub.push_run(folder, "alice/partial")
    assert hub.requests == []


def test_a_template_repo_is_not_a_run(hub, built, tmp_path):
    fnhub.push_template(built.template, "alice/only-template")
    with pytest.raises(FnwebError, match="lacks adapter_config.json, adapter_model.safetensors"):
        fnhub.download_run("alice/only-template", cache_dir=str(tmp_path / "cache"))


# ---- faults: each gives its message and keeps local files ----

def test_no_token(hub, built, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    before = _snapshot(built.path.parent)
    with pytest.raises(FnwebError, match="No Hugging Face token: sign in .* HF_TOKEN.*hf auth login"):
        fnhub.push_template(built.template, "alice/x")
    assert hub.requests == [] and _snapshot(built.path.parent) == before


def test_the_local_sign_in_placeholder_is_never_used(hub, built, monkeypatch):
    url = fnhub.push_template(built.template, "alice/from-env", token=PLACEHOLDER)  # falls back to HF_TOKEN
    assert url.endswith("/alice/from-env")
    assert hub.auth_headers and all(PLACEHOLDER not in h for h in hub.auth_headers)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(FnwebError, match="No Hugging Face token"):
        fnhub.push_template(built.template, "alice/x", token=PLACEHOLDER)


def test_an_explicit_token_comes_before_hf_token(hub, built, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", READER)
    who = fnhub.account(ALICE)
    assert (who.name, who.source, who.orgs) == ("alice", "your Hugging Face sign-in", ("lab",))
    assert ALICE not in repr(who)


def test_a_saved_login_is_used_last(hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    Path(constants.HF_TOKEN_PATH).write_text(ALICE)
    assert fnhub.account().describe() == "alice (token from the saved login)"


def test_a_rejected_token(hub, built, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", BOGUS)
    before = _snapshot(built.path.parent)
    with pytest.raises(FnwebError, match=r"token from HF_TOKEN was rejected \(401") as caught:
        fnhub.push_template(built.template, "alice/x")
    assert BOGUS not in str(caught.value)
    assert "alice/x" not in hub.repos and _snapshot(built.path.parent) == before


def test_no_write_access_to_the_namespace(hub, built, monkeypatch):
    with pytest.raises(FnwebError, match=r"No write access to 'someone-else' \(403.*alice may write to alice, lab"):
        fnhub.push_template(built.template, "someone-else/x")
    fnhub.push_template(built.template, "lab/shared")  # an organisation of the account is fine
    monkeypatch.setenv("HF_TOKEN", READER)  # a read-only token cannot write even to its own namespace
    with pytest.raises(FnwebError, match=r"No write access to 'bob' \(403"):
        fnhub.push_template(built.template, "bob/x")
    assert set(hub.repos) == {"lab/shared"}


def test_network_unreachable(hub, built, monkeypatch):
    import socket

    from huggingface_hub import constants

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _point_client_at(monkeypatch, constants, dead)
    before = _snapshot(built.path.parent)
    with pytest.raises(FnwebError, match="Cannot reach the Hugging Face Hub at http://127.0.0.1"):
        fnhub.push_template(built.template, "alice/x")
    with pytest.raises(FnwebError, match="Cannot reach the Hugging Face Hub"):
        fnhub.load_template_from_hub("alice/x")
    assert _snapshot(built.path.parent) == before


def test_hub_error_mid_upload_then_a_retry_works(hub, built, run_dir):
    before = _snapshot(built.path.parent)
    hub.fail("POST", r"/commit/", status=500)
    with pytest.raises(FnwebError, match=r"Hub answered an error \(500.*did not complete.*try again"):
        fnhub.push_template(built.template, "alice/retry", heatmap_png=coverage_png(built.template))
    assert hub.listing("alice/retry").keys() == {".gitattributes"}  # created, but nothing half-committed
    assert ("POST", "/api/models/alice/retry/preupload/main") in hub.requests  # it failed part-way
    assert _snapshot(built.path.parent) == before
    fnhub.push_template(built.template, "alice/retry", heatmap_png=coverage_png(built.template))
    assert hub.read("alice/retry", TEMPLATE_FILENAME) == built.path.read_bytes()

    run_before = _snapshot(run_dir)
    hub.fail("POST", r"/commit/", drop=True)  # the connection drops after the adapter's LFS upload
    with pytest.raises(FnwebError, match="Cannot reach the Hugging Face Hub"):
        fnhub.push_run(run_dir, "alice/run-retry")
    assert any(method == "PUT" for method, _ in hub.requests)
    assert hub.listing("alice/run-retry").keys() == {".gitattributes"}
    assert _snapshot(run_dir) == run_before
    fnhub.push_run(run_dir, "alice/run-retry")
    adapter = (run_dir / "adapter_model.safetensors").read_bytes()
    assert hub.read("alice/run-retry", "adapter_model.safetensors") == adapter


@pytest.mark.parametrize("bad", ["", "a/b/c", "bad--name", "-start", "alice/name.git", "spaces in/name"])
def test_an_invalid_repo_id_is_refused_before_any_network_call(hub, built, run_dir, bad):
    with pytest.raises(FnwebError, match="not a valid Hub repo id|No repo id given"):
        fnhub.push_template(built.template, bad)
    with pytest.raises(FnwebError, match="not a valid Hub repo id|No repo id given"):
        fnhub.push_run(run_dir, bad)
    with pytest.raises(FnwebError, match="not a valid Hub repo id|No repo id given"):
        fnhub.load_template_from_hub(bad)
    assert hub.requests == []


def test_a_repo_that_holds_something_else_is_refused_unless_overwrite(hub, built, run_dir):
    theirs = {"README.md": b"# Someone's model\n", "config.json": b'{"model_type": "bert"}'}
    hub.put_files("alice/other", theirs)
    commits = len(hub.repos["alice/other"].commits)
    with pytest.raises(FnwebError, match=r"already exists and holds files that fnweb did not write.*README.md"):
        fnhub.push_template(built.template, "alice/other")
    assert len(hub.repos["alice/other"].commits) == commits

    fnhub.push_run(run_dir, "alice/a-run")
    with pytest.raises(FnwebError, match="holds an fnweb run, not a template"):
        fnhub.push_template(built.template, "alice/a-run")

    fnhub.push_template(built.template, "alice/other", overwrite=True)
    assert hub.read("alice/other", "config.json") == theirs["config.json"]  # their other files are kept
    assert hub.read("alice/other", TEMPLATE_FILENAME) == built.path.read_bytes()


def test_offline_mode_says_so(hub, built, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FnwebError, match="HF_HUB_OFFLINE is set"):
        fnhub.push_template(built.template, "alice/x")


def test_loading_faults(hub, built, tmp_path):
    cache = str(tmp_path / "cache")
    with pytest.raises(FnwebError, match="No repo alice/missing on the Hub, or it is private"):
        fnhub.load_template_from_hub("alice/missing", cache_dir=cache)
    hub.put_files("alice/not-fnweb", {"README.md": b"# hello\n"})
    with pytest.raises(FnwebError, match="has no global_templates.json .*not an fnweb template"):
        fnhub.load_template_from_hub("alice/not-fnweb", cache_dir=cache)
    hub.put_files("alice/broken", {TEMPLATE_FILENAME: b'{"name": "x"}'})
    with pytest.raises(FnwebError, match="not an fnweb template: expected keys 'layout' and 'templates'"):
        fnhub.load_template_from_hub("alice/broken", cache_dir=cache)
    fnhub.push_template(built.template, "alice/versions")
    with pytest.raises(FnwebError, match="has no such revision"):
        fnhub.load_template_from_hub("alice/versions", revision="v9", cache_dir=cache)
    first = hub.repos["alice/versions"].commits[-1][0]
    assert fnhub.load_template_from_hub("alice/versions", revision=first, cache_dir=cache).to_json() == \
        built.template.to_json()


def test_a_private_repo_loads_only_with_its_owner_token(hub, built, tmp_path, monkeypatch):
    fnhub.push_template(built.template, "alice/secret", private=True)
    assert fnhub.load_template_from_hub("alice/secret", cache_dir=str(tmp_path / "a")).components
    monkeypatch.setenv("HF_TOKEN", READER)
    with pytest.raises(FnwebError, match="No repo alice/secret on the Hub, or it is private"):
        fnhub.load_template_from_hub("alice/secret", cache_dir=str(tmp_path / "b"))


def test_default_repo_names_are_valid():
    from huggingface_hub.utils import validate_repo_id

    assert fnhub.default_repo_name(EMBEDDED_ID, ["builtin:factual", "data/my set.jsonl", "org/hub-ds"]) == \
        "SmolLM2-135M-Instruct-fnweb-factual-my-set-hub-ds"
    assert fnhub.default_repo_name("org/m", ["builtin:code"], kind="run") == "m-fnweb-code-lora"
    validate_repo_id(fnhub.default_repo_name("x" * 90, ["a--b", "c..d"] * 10))


# ---- the buildtemplates CLI ----

def test_buildtemplates_pushes_what_it_saved(hub, tiny_model_dir, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from fnweb.cli.buildtemplates import main as buildtemplates

    out = tmp_path / "t.json"
    code = buildtemplates([str(tiny_model_dir), "builtin:factual", "--ica_template_samples_per_ds", "6",
                           "--max_seq_length", "24", "--ica_components", "2", "--output_file", str(out),
                           "--quiet", "--push_to_hub", "cli-template", "--hub_private"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "Pushes to alice/cli-template as alice (token from HF_TOKEN)." in printed
    assert f"Pushed to the Hub: {hub.endpoint}/alice/cli-template" in printed
    assert hub.read("alice/cli-template", TEMPLATE_FILENAME) == out.read_bytes()
    assert hub.read("alice/cli-template", HEATMAP_FILENAME).startswith(b"\x89PNG")
    assert hub.repos["alice/cli-template"].private
    assert ModelCard(hub.read("alice/cli-template", "README.md").decode()).data.fnweb["k"] == 2


def test_buildtemplates_checks_the_repo_id_and_token_before_building(hub, tiny_model_dir, tmp_path, capsys,
                                                                     monkeypatch):
    from fnweb.cli.buildtemplates import main as buildtemplates

    out = tmp_path / "t.json"
    base = [str(tiny_model_dir), "builtin:factual", "--output_file", str(out), "--quiet"]
    assert buildtemplates(base + ["--push_to_hub", "bad--id"]) == 2
    assert "not a valid Hub repo id" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    assert buildtemplates(base + ["--push_to_hub", "alice/x"]) == 2
    assert "No Hugging Face token" in capsys.readouterr().err
    assert not out.exists() and hub.requests == []


def test_buildtemplates_keeps_the_template_when_the_push_fails(hub, tiny_model_dir, tmp_path, capsys):
    from fnweb.cli.buildtemplates import main as buildtemplates

    out = tmp_path / "t.json"
    hub.fail("POST", r"/commit/", status=503)
    code = buildtemplates([str(tiny_model_dir), "builtin:factual", "--ica_template_samples_per_ds", "6",
                           "--max_seq_length", "24", "--ica_components", "2", "--output_file", str(out),
                           "--quiet", "--push_to_hub", "alice/flaky"])
    err = capsys.readouterr().err
    assert code == 2 and "Hub answered an error (503" in err and f"stays saved at {out}" in err
    assert Template.load(out).components  # the build was kept
    fnhub.push_template(Template.load(out), "alice/flaky")  # and a retry of the push works
    assert hub.read("alice/flaky", TEMPLATE_FILENAME) == out.read_bytes()


# ---- the fnsft CLI ----

def test_fnsft_pushes_the_run_it_saved(hub, tiny_model_dir, tmp_path, capsys):
    from ftkit import args_for

    from fnweb.cli.fnsft import main as fnsft

    out = tmp_path / "run"
    code = fnsft(args_for(tiny_model_dir, out, "--push_to_hub", "--hub_repo_id", "cli-run", "--hub_private"))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Pushes to alice/cli-run as alice (token from HF_TOKEN)." in printed
    assert f"{hub.endpoint}/alice/cli-run" in printed
    assert hub.read("alice/cli-run", "adapter_model.safetensors") == (out / "adapter_model.safetensors").read_bytes()
    assert hub.repos["alice/cli-run"].private


def test_fnsft_pushes_a_merged_model_when_asked(hub, tiny_model_dir, tmp_path, capsys):
    from ftkit import args_for

    from fnweb.cli.fnsft import main as fnsft

    out = tmp_path / "run"
    code = fnsft(args_for(tiny_model_dir, out, "--push_to_hub", "--hub_repo_id", "cli-merged", "--push_merged"))
    assert code == 0, capsys.readouterr().out
    assert "merged/model.safetensors" in hub.listing("alice/cli-merged")


def test_fnsft_checks_the_push_before_training(hub, tiny_model_dir, tmp_path, capsys):
    from ftkit import args_for

    from fnweb.cli.fnsft import main as fnsft

    out = tmp_path / "run"
    assert fnsft(args_for(tiny_model_dir, out, "--push_to_hub")) == 2
    assert "needs --hub_repo_id" in capsys.readouterr().err
    assert fnsft(args_for(tiny_model_dir, out, "--push_to_hub", "--hub_repo_id", "bad--id")) == 2
    assert "not a valid Hub repo id" in capsys.readouterr().err
    assert fnsft(args_for(tiny_model_dir, out, "--push_merged")) == 2
    assert "--push_merged goes with --push_to_hub" in capsys.readouterr().err
    assert fnsft(args_for(tiny_model_dir, out, "--push_to_hub", "--hub_repo_id", "q", "--push_merged",
                          "--use_4bit")) == 2
    assert "cannot merge a 4/8-bit" in capsys.readouterr().err
    assert not out.exists() and hub.requests == []
