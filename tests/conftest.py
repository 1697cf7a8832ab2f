"""Shared fixtures: tiny models, a local model folder, and the embedded model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import tiny  # noqa: E402

from fnweb.models import LoadedModel, ModelRequest  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return tiny.make_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(tokenizer) -> LoadedModel:
    """A tiny random Llama with the local tokenizer, wrapped as a loaded model."""
    return LoadedModel(tiny.make_model("llama"), tokenizer, ModelRequest(model_id="tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny.save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def embedded_lm():
    """The embedded SmolLM2-135M-Instruct (converted and cached on first use)."""
    from fnweb.models import load_model

    return load_model()


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
