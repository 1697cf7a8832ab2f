"""Security in the engine: whose token acts, no code from a run, bounds on what strangers send, one file per template.

The app end to end (a Space with its owner's HF_TOKEN set, visitors signed in or not)
is ``test_security_app.py``. Here: the process modes and what they let a Hub call
use; a run folder whose base model carries code that would write a marker file (it
never runs unless the caller passes the flag); templates claiming more than any model
has; Hub downloads over their caps (the loopback stand-in of ``tests/hubstub.py``); the
shared model cache's bounds and eviction; and two templates whose labels agree in
their first 80+ characters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hubstub import Account, HubStub

from fnweb import access
from fnweb import hub as fnhub
from fnweb.errors import FnwebError
from fnweb.templates import MAX_LAYERS, MAX_TEMPLATE_BYTES, TEMPLATE_FILENAME, Template, TemplateMeta

OWNER = "hf_owner_secret_token"
MODE_VARIABLES = ("SYSTEM", "SPACE_ID", "FNWEB_MULTI_USER", "FNWEB_SINGLE_USER", "GRADIO_SERVER_NAME", "GRADIO_SHARE")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def one_user(monkeypatch):
    """A local process on loopback, with the owner's HF_TOKEN set and no saved login."""
    for name in MODE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN", OWNER)
    return monkeypatch


# ---- whose token ---------------------------------------------------------------------------


@pytest.mark.parametrize("env, many", [
    ({}, False),
    ({"GRADIO_SERVER_NAME": "127.0.0.1"}, False),
    ({"SYSTEM": "spaces", "SPACE_ID": "owner/app"}, True),
    ({"SPACE_ID": "owner/app"}, True),
    ({"SYSTEM": "spaces", "SPACE_ID": "owner/app", "FNWEB_SINGLE_USER": "1"}, True),  # ignored on a Space
    ({"FNWEB_MULTI_USER": "1"}, True),
    ({"GRADIO_SERVER_NAME": "0.0.0.0"}, True),
    ({"GRADIO_SERVER_NAME": "0.0.0.0", "FNWEB_SINGLE_USER": "1"}, False),
    ({"GRADIO_SHARE": "true"}, True),
    ({"FNWEB_MULTI_USER": "1", "FNWEB_SINGLE_USER": "1"}, True),  # two contradictory switches: the safe one
])
def test_who_the_process_serves(one_user, env, many):
    for name, value in env.items():
        one_user.setenv(name, value)
    assert access.multi_user() is many


def test_serving_many_the_environment_token_never_stands_in_for_a_visitor(one_user):
    assert fnhub.resolve_token(None) == (OWNER, "HF_TOKEN")  # one user: their own token
    one_user.setenv("FNWEB_MULTI_USER", "1")
    with pytest.raises(FnwebError, match="Sign in first") as caught:
        fnhub.resolve_token(None)
    assert OWNER not in str(caught.value)
    assert fnhub.resolve_token(None, required=False) == (None, fnhub.ANONYMOUS)
    assert fnhub.resolve_token("mock-oauth-token-for-local-dev", required=False)[0] is None  # a placeholder is no sign-in
    assert fnhub.resolve_token("hf_visitor") == ("hf_visitor", "your Hugging Face sign-in")


def test_implicit_tokens_off_means_no_library_sends_the_servers_token(one_user):
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    one_user.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    one_user.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", raising=False)  # both restored after the test
    assert build_hf_headers()["authorization"] == f"Bearer {OWNER}"  # what transformers and datasets would send
    access.forbid_implicit_token()
    assert "authorization" not in build_hf_headers()
    assert os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] == "1"  # processes the app starts inherit it
    assert build_hf_headers(token="hf_visitor")["authorization"] == "Bearer hf_visitor"  # explicit still goes


def test_serving_many_a_visitors_field_is_a_hub_id_never_a_server_path(one_user, tmp_path):
    from fnweb.ui.forms import parse_hub

    local = tmp_path / "someone-elses.jsonl"
    local.write_text('{"prompt": "secret", "response": "data"}\n')
    assert parse_hub(str(local))[0].name == str(local)  # one user: their own files are fine
    one_user.setenv("SYSTEM", "spaces")
    one_user.setenv("SPACE_ID", "owner/app")
    for typed in (str(local), str(tmp_path), "../etc", "~/x", "fnweb"):  # 'fnweb': a folder of the app's own
        with pytest.raises(FnwebError, match="not a Hub id"):
            parse_hub(typed)
    assert parse_hub("user/dataset, cfg, test")[0].name == "user/dataset"


# ---- runs are data ---------------------------------------------------------------------------


EVIL = """from pathlib import Path
Path({marker!r}).write_text("custom code ran")
from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "fnweb_evil"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


def evil_model(folder: Path, marker: Path, model_type: str = "fnweb_evil") -> Path:
    """A tiny model whose config maps to a local .py that writes ``marker`` when imported."""
    import tiny

    tiny.save_tiny(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig",
                                                    "AutoModelForCausalLM": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return folder


def run_on(folder: Path, base: Path, trust_remote_code: bool) -> Path:
    """A complete run folder (real tiny adapter) whose train_config.json names ``base``."""
    import tiny
    from peft import LoraConfig, get_peft_model

    get_peft_model(tiny.make_model("llama", seed=1), LoraConfig(r=2, target_modules=["down_proj"])).save_pretrained(
        folder)
    Template([0, 1, 2], 64, {0: {0: [1, 5]}}).save(folder / "template.json")
    (folder / "mask.json").write_text(json.dumps({"components": [0], "mode": "lesion"}))
    (folder / "train_config.json").write_text(json.dumps({"model_id": str(base), "dataset": "builtin:arithmetic",
                                                          "trust_remote_code": trust_remote_code}))
    return folder


def test_a_run_asking_for_custom_code_runs_none(tmp_path, one_user):
    from fnweb.finetune import load_run
    from fnweb.finetune.merge import merged_run
    from fnweb.models import ModelRequest, load_fresh

    marker = tmp_path / "MARKER"
    base = evil_model(tmp_path / "evil-base", marker)
    asking = run_on(tmp_path / "asks-for-code", base, trust_remote_code=True)
    for attempt in (lambda: load_run(asking), lambda: merged_run(asking),
                    lambda: fnhub.push_run(asking, "alice/x", token="hf_visitor", merged=True)):
        with pytest.raises(FnwebError, match="never runs code because a run's own files ask for it.*trust_remote_code=True"):
            attempt()
        assert not marker.exists()
    quiet = run_on(tmp_path / "needs-code", base, trust_remote_code=False)  # does not ask, but its base needs code
    with pytest.raises(FnwebError, match="needs custom code .* pass trust_remote_code"):
        load_run(quiet)
    with pytest.raises(FnwebError, match="needs custom code"):
        load_fresh(ModelRequest(str(base)))
    assert not marker.exists()

    # A known model type with an auto_map loads with transformers' own code: the file is not even imported.
    llama = evil_model(tmp_path / "llama-with-auto-map", marker, model_type="llama")
    run = load_run(run_on(tmp_path / "plain", llama, trust_remote_code=False))
    assert run.model is not None and not marker.exists()


def test_the_marker_is_written_when_the_user_does_pass_the_flag(tmp_path):
    """The control: the same model does run its code when asked, so the absent marker above means something."""
    marker = tmp_path / "MARKER"
    base = evil_model(tmp_path / "evil-base", marker)
    code = ("from fnweb.models import ModelRequest, load_fresh\n"
            f"load_fresh(ModelRequest({str(base)!r}, trust_remote_code=True))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert marker.read_text() == "custom code ran", done.stderr[-2000:]


def test_run_cards_say_a_run_never_switches_custom_code_on():
    from fnweb.finetune.card import run_card
    from fnweb.finetune.config import TrainConfig
    from fnweb.finetune.runs import MaskFile

    config = TrainConfig(dataset="builtin:arithmetic", output_dir="x", mask_mode="lesion")
    mask = MaskFile.from_dict({"components": [0], "mode": "lesion"})
    assert "trust_remote_code=False" in run_card(config.to_dict(), {"general_sets": []}, mask, None,
                                                 {"base_model_name_or_path": "org/base"})
    card = run_card({"model_id": "org/base"}, {}, mask, None, {"peft_type": "LORA", "r": 4}, repo_id="alice/run")
    assert "trust_remote_code=False" in card and "whatever the run's files say" in card


# ---- bounds on templates -------------------------------------------------------------------------


def claim(layers=3, width=64, components=1, per_cell=1, meta=None) -> dict:
    data = {"layout": {"captured_layers_sorted": list(range(layers)), "hidden_size": width},
            "templates": {str(c): {"0": list(range(per_cell))} for c in range(components)}}
    if meta:
        data["fnweb"] = meta
    return data


@pytest.mark.parametrize("data, what", [
    (claim(layers=20_000), "20,000 layers"),
    (claim(width=2_000_000), "a width of 2,000,000 channels per layer"),
    (claim(layers=1000, width=500_000), "500,000,000 channels in all"),
    (claim(components=600), "600 components"),
    (claim(layers=1000, components=100), "100,000 component x layer cells"),
    (claim(meta={"n_layers": 50_000, "k": 3, "model_id": "m", "site": "neurons", "width": 64,
                 "threshold": "percentile", "threshold_value": 98}), "50,000 layers"),
])
def test_a_template_claiming_more_than_any_model_has_is_refused_before_conversion(data, what):
    with pytest.raises(FnwebError, match=f"claims {what}.*refused before anything was built"):
        Template.from_dict(data, source="upload.json")


def test_layer_ids_and_files_are_bounded_too(tmp_path):
    with pytest.raises(FnwebError, match="distinct numbers from 0"):
        Template.from_dict({"layout": {"captured_layers_sorted": [0, 10**9], "hidden_size": 8}, "templates": {}})
    with pytest.raises(FnwebError, match="distinct numbers"):
        Template.from_dict({"layout": {"captured_layers_sorted": [1, 1], "hidden_size": 8}, "templates": {}})
    with pytest.raises(FnwebError, match="width"):
        Template.from_dict({"layout": {"captured_layers_sorted": [0], "hidden_size": 0}, "templates": {}})
    big = tmp_path / "big.json"
    with open(big, "wb") as out:  # a sparse file: its size is what counts, and it is never read
        out.truncate(MAX_TEMPLATE_BYTES + 1)
    with pytest.raises(FnwebError, match="at most 32 MB.*not read"):
        Template.load(big)
    deepest = Template.from_dict(claim(layers=MAX_LAYERS, width=1024))  # the bound itself is accepted
    assert len(deepest.layers) == MAX_LAYERS


def test_handlers_check_the_size_of_what_reached_them(tmp_path, monkeypatch):
    from fnweb.ui.forms import upload_paths as _paths

    monkeypatch.setenv("FNWEB_MAX_UPLOAD_MB", "1")
    data = tmp_path / "prompts.jsonl"
    data.write_bytes(b"x" * (2**20 + 1))
    with pytest.raises(FnwebError, match="prompts.jsonl is 1.0 MB; uploads may be at most 1 MB"):
        _paths([str(data)])
    with pytest.raises(FnwebError, match="uploads may be at most 0.000954 MB"):
        _paths(str(data), limit=1000)  # a template file has its own, tighter bound
    data.write_bytes(b"x" * 1000)
    assert _paths(str(data)) == [data]


def test_a_huge_but_allowed_template_still_draws_a_bounded_heatmap():
    from fnweb import plots

    rng = np.random.default_rng(0)
    layers, width = 1024, 32768
    components = {c: {layer: sorted(rng.choice(width, 3, replace=False).tolist()) for layer in range(layers)}
                  for c in range(32)}
    heat = plots.membership_heatmap(Template(list(range(layers)), width, components)).data[0]
    cells = np.asarray(heat.z).size
    assert cells <= plots.MAX_CELLS and np.asarray(heat.z).shape[0] == layers
    hover = np.asarray(heat.customdata)[..., 1].ravel()
    assert max(h.count("<br>") for h in hover) <= plots.HOVER_TOP  # at most HOVER_TOP names and 'and N more'


# ---- bounds on Hub downloads -------------------------------------------------------------------


@pytest.fixture
def stub(one_user, tmp_path):
    from huggingface_hub import constants

    with HubStub({OWNER: Account("owner")}, lfs_suffixes=(".safetensors",)) as served:
        one_user.setenv("HF_ENDPOINT", served.endpoint)
        one_user.setattr(constants, "ENDPOINT", served.endpoint)
        one_user.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                         served.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        one_user.delenv("HF_HUB_OFFLINE", raising=False)
        one_user.setattr(constants, "HF_HUB_OFFLINE", False)
        one_user.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        one_user.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-login"))
        one_user.setattr(constants, "HF_HUB_DISABLE_XET", True)
        yield served


def downloads(stub) -> list[str]:
    return [path for method, path in stub.requests if "/resolve/" in path and method == "GET"]


def test_hub_downloads_are_sized_before_anything_is_fetched(stub, tmp_path, one_user):
    stub.put_files("owner/huge-template", {TEMPLATE_FILENAME: b" " * (MAX_TEMPLATE_BYTES + 1)})
    with pytest.raises(FnwebError, match="over the limit of 32 MB: it is not downloaded"):
        fnhub.load_template_from_hub("owner/huge-template")
    one_user.setenv("FNWEB_MAX_DOWNLOAD_MB", "0.001")  # 1 KB: less than a tiny run's files
    run = run_on(tmp_path / "run", tmp_path / "no-base", trust_remote_code=False)
    stub.put_files("owner/run", {p.name: p.read_bytes() for p in run.iterdir()})
    with pytest.raises(FnwebError, match="a run's files, over the limit.*FNWEB_MAX_DOWNLOAD_MB"):
        fnhub.download_run("owner/run")
    assert downloads(stub) == []


def test_a_run_download_fetches_the_runs_own_files_only(stub, tmp_path):
    run = run_on(tmp_path / "run", tmp_path / "no-base", trust_remote_code=False)
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    stub.put_files("owner/run-and-more", {**files, "merged/model.safetensors": b"\0" * 300_000,
                                          "notes/huge.txt": b"x" * 300_000})
    got = fnhub.download_run("owner/run-and-more")
    fetched = {path.split("/resolve/")[1].split("/", 1)[1] for path in downloads(stub)}  # .../resolve/REV/FILE
    assert fetched == set(files) and not (got.folder / "merged").exists()


# ---- the shared model cache ---------------------------------------------------------------------


class Fake:
    """A loaded model as the cache sees it: something with a ``model`` (what jobs hold)."""

    def __init__(self, name: str, size: int):
        self.name, self.size, self.model = name, size, object()


def fill(cache, names: str, size: int = 10, loads: list | None = None):
    got = {}
    for name in names:
        def load(name=name):
            (loads if loads is not None else []).append(name)
            return Fake(name, size)
        got[name] = cache.get(name, load, lambda f: f.size, held=lambda f: f.model)
    return got


def test_the_cache_keeps_at_most_n_models_and_evicts_the_least_recently_used_idle_one(monkeypatch):
    from fnweb.modelcache import ModelCache

    monkeypatch.setenv("FNWEB_MAX_MODELS", "2")
    monkeypatch.setenv("FNWEB_MAX_MODEL_GB", "1")
    cache, loads = ModelCache(), []
    fill(cache, "ab", loads=loads)
    fill(cache, "a", loads=loads)  # a hit: a is now the most recently used
    fill(cache, "c", loads=loads)
    assert loads == ["a", "b", "c"] and cache.keys() == ["a", "c"]
    assert "unloaded at" in cache.note("b") and "at most 2 models" in cache.note("b")
    fill(cache, "b", loads=loads)  # its next use loads it again, and says so
    assert loads[-1] == "b" and "loaded again at" in cache.note("b") and cache.keys() == ["c", "b"]


def test_a_model_a_job_holds_is_never_evicted(monkeypatch):
    from fnweb.modelcache import ModelCache

    monkeypatch.setenv("FNWEB_MAX_MODELS", "1")
    monkeypatch.setenv("FNWEB_MAX_MODEL_GB", "1")
    cache = ModelCache()
    first = fill(cache, "a")["a"]
    with cache.hold(first.model):
        fill(cache, "b")  # a is in use: the cache goes over rather than pull it from under the job
        assert cache.keys() == ["a", "b"]
    fill(cache, "c")  # now both are idle: room is made again
    assert cache.keys() == ["c"]


def test_the_cache_is_bounded_in_bytes_and_refuses_a_model_larger_than_all_of_it(monkeypatch):
    from fnweb.modelcache import ModelCache

    monkeypatch.setenv("FNWEB_MAX_MODELS", "10")
    monkeypatch.setenv("FNWEB_MAX_MODEL_GB", str(25 / 2**30))  # 25 bytes
    cache, loads = ModelCache(), []
    fill(cache, "ab", size=10, loads=loads)
    fill(cache, "c", size=10, loads=loads)  # 30 > 25: a goes
    assert cache.keys() == ["b", "c"]
    with pytest.raises(FnwebError, match="too large for this server.*by its files"):
        cache.get("huge", lambda: loads.append("huge"), lambda f: 0, estimate=lambda: 26)
    assert "huge" not in loads  # refused from its files' size: never loaded, never downloaded


def test_models_hold_their_cache_entry_through_a_job(monkeypatch, tiny_model_dir):
    from fnweb import models
    from fnweb.modelcache import ModelCache
    from fnweb.ui.jobs import Job, stream
    from fnweb.ui.model_bar import cache_status, status_html
    from fnweb.ui.state import Session

    monkeypatch.setattr(models, "_shared", ModelCache())  # the tests' shared models stay as they are
    monkeypatch.setenv("FNWEB_MAX_MODELS", "1")
    first = models.ModelRequest(str(tiny_model_dir))
    second = models.ModelRequest(str(tiny_model_dir), dtype="float16")
    lm = models.load_model(first)

    def work(emit, stop):
        models.load_model(second)  # another visitor's model arrives while this job runs
        return models.is_loaded(first)

    *_, done = stream(work, lm.model, Job(), tick=0.05)
    assert done.value is True  # held: not evicted during the job
    models.load_model(models.ModelRequest(str(tiny_model_dir), dtype="bfloat16"))
    assert not models.is_loaded(first) and "unloaded at" in models.cache_note(first)

    session = Session(model=first)  # the visitor whose model that was: the model bar says so
    evicted = cache_status(session, status_html("Loaded " + lm.summary_line()))
    assert "is not in memory now: It was unloaded at" in evicted and "loads again when you next use it" in evicted
    unchanged = cache_status(session, evicted)
    assert isinstance(unchanged, dict) and "value" not in unchanged  # nothing new since: the line is left as it is
    assert session.require_model() is not lm and "loaded again" in models.cache_note(first)  # its next use
    assert "loaded again at" in cache_status(session, evicted)


# ---- one file per template ---------------------------------------------------------------------


def test_two_templates_whose_labels_share_80_characters_keep_their_own_files(tiny_lm, tmp_path):
    from ftkit import planted_template

    from fnweb.finetune import finetune
    from fnweb.models import ModelRequest
    from fnweb.ui import finetune_tab, state

    prefix = "a template of the tiny model built from a long description of its prompts and settings, " * 2
    assert len(prefix) > 80
    first = planted_template(tiny_lm.model)
    second = dataclasses.replace(first, components={0: {1: [10, 11, 12]}, 1: {0: [3]}, 2: {2: [40, 41]}})
    session = state.Session()
    session.model = ModelRequest("tiny-llama")
    a = session.add(first, "uploaded", prefix + "first")
    b = session.add(second, "uploaded", prefix + "second")
    assert a.path != b.path and a.path.parent == b.path.parent
    assert Template.load(a.path).components == first.components  # each download is its own template
    assert Template.load(b.path).components == second.components
    form = dict(source="built-in", builtin="sentiment", file=None, hub="", components="0", mode="lesion",
                control_of="lesion", restrict=False, quantization="none", lora_r=2, lora_alpha=4, lora_dropout=0.0,
                steps=1, learning_rate=1e-3, batch_size=2, grad_accum=1, max_seq_len=64, eval_every=0,
                general_per_set=1, task_examples=2, k=3, ica_samples=8, seed=0)
    for entry, template in ((a, first), (b, second)):
        args = {**form, "template": entry.name}
        config = finetune_tab.config_from_form(session, args)
        config = dataclasses.replace(config, output_dir=str(tmp_path / entry.path.stem))
        result = finetune(config, tiny_lm)  # the tab's choice trains with that template's own masks
        assert Template.load(result.folder / "template.json").components == template.components


def test_templates_meta_survives_its_bounds_check():
    meta = TemplateMeta(model_id="m", site="neurons", n_layers=3, width=64, k=1, threshold="percentile",
                        threshold_value=98.0)
    data = Template([0, 1, 2], 64, {0: {0: [1]}}, meta=meta).to_dict()
    assert Template.from_dict(data).meta == meta
