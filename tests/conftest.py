"""Shared fixtures: tiny models, a local model folder, the embedded model, the launched app and
a client on it, headless Chromium, and one CPU thread.

Helpers that are plain functions live in helper modules (tiny.py, ftkit.py, live_app.py,
shots.py, hubstub.py); test modules never import each other.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("FNWEB_PRESET_WARMUP", "0")  # no background build competing with the tests for the CPU

import tiny  # noqa: E402
from live_app import new_client, running_app  # noqa: E402

from fnweb.models import LoadedModel, ModelRequest  # noqa: E402

CHROMIUM = os.environ.get("FNWEB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@pytest.fixture(scope="session")
def tokenizer():
    return tiny.make_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(tokenizer) -> LoadedModel:
    """A tiny random Llama with the local tokenizer, wrapped as a loaded model."""
    return LoadedModel(tiny.make_model("llama"), tokenizer, ModelRequest(model_id="tiny-llama"))


@pytest.fixture(scope="module")
def planted_lm(tokenizer) -> LoadedModel:
    """A tiny Llama whose neurons tiny.PLANTED carry most of every layer's output (the experiments' tests)."""
    model = tiny.make_model("llama", seed=0)
    with torch.no_grad():
        for block in model.model.layers:
            block.mlp.down_proj.weight[:, tiny.PLANTED] *= 30.0
        # An untied, sharper head: logits of a random model are otherwise nearly uniform.
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() * 20.0)
    return LoadedModel(model, tokenizer, ModelRequest(model_id="tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny.save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def embedded_lm():
    """The embedded SmolLM2-135M-Instruct (converted and cached on first use)."""
    from fnweb.models import load_model

    return load_model()


@pytest.fixture(scope="module")
def url():
    """The app launched in this process, once per test module (a module may override this); its address."""
    with running_app() as address:
        yield address


@pytest.fixture
def client(url):
    """A gradio_client on the app: a page of its own, so its own session."""
    return new_client(url)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright), once per test module; skips, saying why, where either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        pytest.skip(f"No Chromium at {CHROMIUM} (install the Debian package or set FNWEB_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # a broken install: say so rather than fail obscurely
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {exc}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, above all on a shared, busy CPU (``usefixtures`` per module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- CI: browser tests may not skip ---------------------------------------------------

REQUIRE_BROWSER = "FNWEB_REQUIRE_BROWSER"  # set to 1 by .ci/run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``FNWEB_REQUIRE_BROWSER=1`` a browser test that skips (no Playwright, no Chromium) fails instead."""
    report = yield
    if report.skipped and os.environ.get(REQUIRE_BROWSER) == "1" and item.get_closest_marker("browser"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_BROWSER}=1: browser tests may not skip here, and this one did: {reason}"
    return report
