"""The Fine-tune tab in headless Chromium: four short runs, the live chart, a real page reload, the screenshot.

Builds a small template, then fine-tunes the embedded model for a few steps with no
mask, a lesion, a preserve mask and the random control; the loss chart draws while
the first run trains. A reload of the page must bring every run back (the visitor key
lives in the browser's localStorage). Saves docs/screenshots/finetune.png. Skips,
saying why, where Playwright or Chromium is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from live_app import running_app
from shots import screenshot_dir, set_number

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = screenshot_dir() / "finetune.png"  # artifacts/, or docs/screenshots/ when asked
MODES = ("none", "lesion", "preserve", "random")




@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("FNWEB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FNWEB_TORCH_THREADS", "1")
    threads = torch.get_num_threads()
    with running_app() as url:
        yield url, tmp_path / "runs"
    torch.set_num_threads(threads)


def _pick(page, selector: str, option: str) -> None:
    page.locator(f"{selector} input").first.click()
    page.get_by_role("option", name=option).first.click()


# Four fine-tuning runs on the embedded model: about 6.5 min on a busy 2-core CPU, too close to the 600 s default.
@pytest.mark.timeout(1200)
def test_four_runs_live_chart_reload_and_screenshot(browser, app):
    url, runs = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=90_000)

    set_number(page, "#fn-samples", 20)
    set_number(page, "#fn-max-tokens", 64)
    set_number(page, "#fn-k", 5)
    page.click("#fn-build")
    page.wait_for_selector("#fn-build-progress .fn-msg-ok", timeout=180_000)
    template = page.input_value("#fn-template-picker input")

    page.get_by_role("tab", name="Fine-tune").click()
    set_number(page, "#fn-ft-steps", 12)
    set_number(page, "#fn-ft-lr", 0.002)
    set_number(page, "#fn-ft-batch", 2)
    set_number(page, "#fn-ft-max-len", 96)
    page.locator("button:has-text('Evaluation, seed and name')").click()
    set_number(page, "#fn-ft-eval-every", 3)
    set_number(page, "#fn-ft-general", 2)
    set_number(page, "#fn-ft-task-examples", 8)
    for index, mode in enumerate(MODES):
        page.locator(f"#fn-ft-mode label:has-text('{mode}')").click()
        if index == 1:
            _pick(page, "#fn-ft-template", template)
        page.click("#fn-ft-start")
        page.wait_for_selector("#fn-ft-progress .fn-progress", timeout=60_000)
        if index == 0:  # the chart draws while the run trains, from its first step
            page.wait_for_selector("#fn-ft-progress .fn-progress-head:has-text('Step')", timeout=120_000)
            page.wait_for_selector("#fn-ft-loss .js-plotly-plot .scatterlayer .trace", timeout=30_000)
            assert "left" in page.inner_text("#fn-ft-progress")
            assert page.locator("#fn-ft-progress .fn-msg-ok").count() == 0
        page.wait_for_selector("#fn-ft-progress .fn-msg-ok", timeout=240_000)
        page.wait_for_selector(f"#fn-ft-results [role=grid][aria-rowcount='{index + 2}']", timeout=30_000)
    assert len(list(next(runs.iterdir()).iterdir())) == 4
    page.wait_for_selector("#fn-ft-scatter .js-plotly-plot .scatterlayer .trace", timeout=30_000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)  # the form still shows the last run's settings

    page.reload()  # the runs come back: the browser kept the visitor key
    page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=90_000)
    page.get_by_role("tab", name="Fine-tune").click()
    page.wait_for_selector("#fn-ft-results [role=grid][aria-rowcount='5']", timeout=30_000)
    page.wait_for_selector("#fn-ft-progress .fn-msg-ok", timeout=30_000)
    page.wait_for_selector("#fn-ft-loss .js-plotly-plot .scatterlayer .trace", timeout=30_000)
    assert page.locator("#fn-ft-scatter .js-plotly-plot .scatterlayer .trace").count() == 4
    table = page.inner_text("#fn-ft-results")
    for words in ("none", "lesion 0", "preserve 0", "random (lesion) 0"):
        assert words in table
    page.close()
