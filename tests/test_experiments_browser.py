"""The Experiments tab in headless Chromium: upload a template, run an experiment with evidence options, share it.

A small template is built on the embedded model (factual and code prompts, k 3) and
uploaded through the Templates tab's button; the experiment runs on a few held-out
factual prompts with 3 random draws, against the magnitude-matched control, on 2
template seeds (the second rebuilt from the template's own recipe). The progress line
must change while it runs (phase, n of N, which seed), the result must name the control
used, no component may carry Gradio's "Error" overlay, and a copied experiment link,
opened after a reload, must fill the form again. Saves its screenshot (artifacts/, or
docs/screenshots/ with FNWEB_README_SCREENSHOTS=1: tests/shots.py). Skips, saying why,
where Playwright or Chromium is missing.
"""

from __future__ import annotations

import re
import time

import pytest
from live_app import running_app
from shots import set_number, shot, upload_template
from test_errors_browser import OVERLAY

from fnweb.build import BuildConfig, build_template
from fnweb.prompts import PromptSource

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DONE = "#fn-exp-status .fn-msg-ok:has-text('Done in')"
PROGRESS_JS = "(document.querySelector('#fn-exp-status .fn-progress') || {}).innerText || ''"


def follow_progress(page, seconds: float) -> list[str]:
    """The distinct texts of the experiment's progress line until the run is done."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not page.locator(DONE).count():
        text = page.evaluate(PROGRESS_JS)  # read at once: the line is redrawn under a slower locator
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        time.sleep(0.3)
    return seen


def set_up(page) -> None:
    """Factual only, 4 prompts, 3 draws; the magnitude control on 2 template seeds."""
    page.get_by_role("tab", name="Experiments").click()
    page.locator("#fn-exp-sets label:has-text('creative')").click()  # factual only
    set_number(page, "#fn-exp-samples", 4)
    set_number(page, "#fn-exp-draws", 3)
    set_number(page, "#fn-exp-tokens", 64)
    page.locator("#fn-exp-evidence").get_by_text("Evidence options").first.click()
    page.locator("#fn-exp-control label:has-text('magnitude')").click()
    set_number(page, "#fn-exp-template-seeds", 2)


def test_experiment_in_the_browser(browser, embedded_lm, tmp_path):
    config = BuildConfig([PromptSource("builtin:factual"), PromptSource("builtin:code")], 12, 64, k=3)
    path = build_template(embedded_lm, config).template.save(tmp_path / "factual_code_k3.json")
    with running_app() as url:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(url)
        page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=90_000)
        upload_template(page, path, timeout=30_000)

        set_up(page)
        page.click("#fn-exp-run")
        seen = follow_progress(page, 420)
        page.wait_for_selector(DONE, timeout=30_000)
        assert len(seen) >= 3, seen  # the line moves: phase, n of N
        assert any("Template seed 2 of 2" in text for text in seen), seen  # and says which seed it measures
        status = page.inner_text("#fn-exp-status")
        # Left out, and counted: the prompts of both seeds' builds (each seed samples its own 12; small: quick builds).
        used = re.search(r"(\d+) of its 94 prompts were used to build the template", status)
        assert used and 12 <= int(used.group(1)) <= 24, status
        assert "Template seeds measured: 2 of 2" in status
        reading = page.inner_text("#fn-exp-reading")
        assert "same count and scale per layer" in reading and "Across 2 template seeds" in reading
        assert "held-out prompts" in reading
        assert page.locator("#fn-exp-lesion .js-plotly-plot").count() == 1
        assert page.locator("#fn-exp-curve .js-plotly-plot").count() == 1
        assert "same count and scale per layer" in page.inner_text("#fn-exp-lesion")  # the legend names it too
        assert int(page.get_attribute("#fn-exp-table [role=grid]", "aria-rowcount")) >= 5  # header, 3, union
        assert page.locator("#fn-exp-seeds").is_visible()  # one line per component and seed
        assert not page.locator("#fn-exp-recurrence-plot").is_visible()  # not asked for
        assert page.locator("#fn-exp-recurrence").is_visible()  # the form's own checkbox stays (no output hides it)
        assert page.locator("#fn-exp-files-out a").count() == 5  # the experiment's JSON and 2 CSV, the seeds' 2
        files = re.sub(r"\s+", "", page.inner_text("#fn-exp-files-out"))  # names and extensions on their own lines
        assert all(name in files for name in ("experiment.json", "seeds.json", "seeds.csv")), files
        assert page.locator(OVERLAY).count() == 0
        shot(page, "experiments", readme=True)

        page.click("#fn-exp-copy-link")
        page.wait_for_function("document.querySelector('#fn-exp-link textarea').value.startsWith('http')",
                               timeout=30_000)
        link = page.input_value("#fn-exp-link textarea")
        assert "kind=experiment" in link and "ctl=magnitude" in link and "ts=2" in link
        page.goto(link)  # a reload with the link: the saved template comes back, then the form fills
        page.wait_for_selector("#fn-exp-status .fn-msg-ok:has-text('Restored from a link')", timeout=120_000)
        assert "Press Run experiment" in page.inner_text("#fn-exp-status")
        assert page.input_value("#fn-exp-samples input") == "4"
        assert not page.locator("#fn-exp-sets label:has-text('creative') input").is_checked()
        assert page.locator("#fn-exp-sets label:has-text('factual') input").is_checked()
        page.locator("#fn-exp-evidence").get_by_text("Evidence options").first.click()
        assert page.locator("#fn-exp-control label:has-text('magnitude') input").is_checked()
        assert page.input_value("#fn-exp-template-seeds input") == "2"
        assert page.locator(OVERLAY).count() == 0
        page.close()
