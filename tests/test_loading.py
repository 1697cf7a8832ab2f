"""Model loading fails in one clear line, fast: unreadable weights, no config, bad devices, an unreachable Hub."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny
import torch

from fnweb.errors import FnwebError
from fnweb.finetune.config import TrainConfig
from fnweb.models import ModelRequest, available_devices, check_device, load_fresh

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return tiny.save_tiny(tmp_path_factory.mktemp("saved"))


def damaged_copy(saved: Path, tmp_path: Path, damage) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for file in saved.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    damage(folder)
    return folder


def _truncate(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _empty(folder):
    (folder / "model.safetensors").write_bytes(b"")


def _scramble_header(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])  # the header length becomes absurd


@pytest.mark.parametrize("damage, detail", [
    (_truncate, "incomplete metadata, file not fully covered"),
    (_empty, "header too small"),
    (_scramble_header, "header too large"),
])
def test_unreadable_weights_are_one_line(saved, tmp_path, damage, detail):
    folder = damaged_copy(saved, tmp_path, damage)
    with pytest.raises(FnwebError) as caught:
        load_fresh(ModelRequest(str(folder)))
    message = str(caught.value)
    assert message.startswith(f"Could not load model '{folder}': its weights are unreadable (a truncated, empty or "
                              "damaged .safetensors file: Error while deserializing header: ")
    assert detail in message and message.endswith("Download or save the model again.") and "\n" not in message


def test_folder_without_config_is_not_a_model(saved, tmp_path):
    folder = damaged_copy(saved, tmp_path, lambda f: (f / "config.json").unlink())
    with pytest.raises(FnwebError, match=r"is a folder without config\.json: it is not a saved model\.$"):
        load_fresh(ModelRequest(str(folder)))


# ---- devices ------------------------------------------------------------------------


def _unusable(device: str) -> bool:
    try:
        check_device(device)
    except FnwebError:
        return True
    return False


@pytest.mark.parametrize("device, message", [
    ("tpu9", "Unknown device 'tpu9'."),
    ("cuda:x", "Unknown device 'cuda:x'."),
    ("meta", "Device 'meta' is not one fnweb runs on."),
    ("xpu", "Device 'xpu' is not one fnweb runs on."),
    ("cuda:99", "Device 'cuda:99' cannot be used: "),
    ("cuda", "Device 'cuda' cannot be used: "),
    ("mps", "Device 'mps' cannot be used: "),
    ("multi", "Device 'multi' spreads the model over GPUs, but "),
])
def test_bad_devices_are_refused_before_loading_and_list_what_is_here(device, message):
    if not _unusable(device):
        pytest.skip(f"{device} works on this machine")
    here = f"Available here: {', '.join(available_devices())}."
    for check in (lambda: ModelRequest("/no/model/needed", device=device).validate(),
                  lambda: TrainConfig(dataset="builtin:code", output_dir="o", device=device).validate()):
        with pytest.raises(FnwebError) as caught:
            check()
        assert str(caught.value).startswith(message) and str(caught.value).endswith(here)


def test_available_devices_match_torch():
    names = available_devices()
    assert names[:2] == ["auto", "cpu"]
    assert ("cuda" in names) == torch.cuda.is_available()
    assert [n for n in names if n.startswith("cuda:")] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for name in names:
        check_device(name)  # every listed device is accepted
    if torch.version.cuda is None:
        with pytest.raises(FnwebError, match=r"built without CUDA\. Available here: auto, cpu"):
            check_device("cuda")


# ---- the Hub --------------------------------------------------------------------------


def _cli(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=120)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_unreachable_hub_is_one_line_from_the_cli(tmp_path):
    port = _closed_port()
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    started = time.monotonic()
    done = _cli("fnweb.cli.buildtemplates", "someorg/somemodel", "builtin:code", "--output_file",
                str(tmp_path / "out" / "t.json"), cwd=tmp_path, **env)
    seconds = time.monotonic() - started
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: Could not load model 'someorg/somemodel': cannot reach the Hugging Face Hub at "
        f"http://127.0.0.1:{port} ([Errno 111] Connection refused); check the connection, or use a local folder "
        "or a model downloaded before."]
    # Loose, for a loaded machine (the process imports torch): the client's retries alone sleep 46 s.
    assert seconds < 30, f"took {seconds:.1f} s"
    assert not (tmp_path / "out").exists()


@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Point the imported huggingface_hub client at an endpoint (it reads HF_ENDPOINT only at import)."""
    from huggingface_hub import constants

    def point(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_TOKEN", "hf_reader")

    return point


def test_unreachable_hub_fails_in_seconds(hub_at, tmp_path, capsys):
    from fnweb.cli.buildtemplates import main as buildtemplates

    hub_at(f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    code = buildtemplates(["someorg/somemodel", "builtin:code", "--output_file", str(tmp_path / "out" / "t.json")])
    seconds = time.monotonic() - started
    assert code == 2 and "cannot reach the Hugging Face Hub" in capsys.readouterr().err
    assert seconds < 10, f"took {seconds:.1f} s (before the probe: 49 s, the client's retries)"


def test_a_hub_that_never_answers_fails_after_the_probe_timeout(hub_at):
    from fnweb import models

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hub_at(f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(FnwebError, match=r"^Could not load model 'someorg/somemodel': cannot reach the Hugging "
                                             r"Face Hub at http://127\.0\.0\.1:\d+ \(.*\); check the connection"):
            load_fresh(ModelRequest("someorg/somemodel"))
        seconds = time.monotonic() - started
    # The probe's timeout, plus once per process the client's own 3 s telemetry request to the same endpoint.
    assert models.HUB_PROBE_SECONDS - 0.5 < seconds < 10


def test_hub_models_load_through_the_probe_and_failures_are_named(saved, hub_at, monkeypatch):
    from hubstub import Account, HubStub

    with HubStub({"hf_reader": Account("reader")}) as stub:
        hub_at(stub.endpoint)
        stub.put_files("lab/tiny", {f.name: f.read_bytes() for f in saved.iterdir()})
        lm = load_fresh(ModelRequest("lab/tiny"))
        assert lm.summary()["layers"] == tiny.LAYERS
        with pytest.raises(FnwebError, match=r"^Could not load model 'lab/nothing': 'lab/nothing' was not found on "
                                             r"the Hub \(a private model needs a login"):
            load_fresh(ModelRequest("lab/nothing"))
        with pytest.raises(FnwebError, match=r"'lab/tiny' has no revision 'v9'\.$"):
            load_fresh(ModelRequest("lab/tiny", revision="v9"))
        stub.fail("HEAD", "/lab/other/", status=503)
        with pytest.raises(FnwebError, match=r"the Hub answered HTTP 503 for 'lab/other'; try again later\.$"):
            load_fresh(ModelRequest("lab/other"))
        monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
        with pytest.raises(FnwebError, match=r"the Hub refused the request \(HTTP 401\): check your token"):
            load_fresh(ModelRequest("lab/another"))
    heads = [path for method, path in stub.requests if method == "HEAD"]
    assert heads.count("/lab/nothing/resolve/main/config.json") == 1  # one probe, no retries
