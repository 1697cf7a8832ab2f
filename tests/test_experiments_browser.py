"""The Experiments tab in headless Chromium: upload a template, run an experiment, see both figures.

A small template is built on the embedded model (factual and code prompts, k 3) and
uploaded through the Templates tab's button; the experiment runs on a few held-out
factual prompts with 3 random draws. Saves its screenshot (artifacts/, or
docs/screenshots/ with FNWEB_README_SCREENSHOTS=1: tests/shots.py). Skips, saying why, where Playwright or Chromium
is missing.
"""

from __future__ import annotations

import pytest
from live_app import running_app
from shots import set_number, shot

from fnweb.build import BuildConfig, build_template
from fnweb.prompts import PromptSource

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_experiment_in_the_browser(browser, embedded_lm, tmp_path):
    config = BuildConfig([PromptSource("builtin:factual"), PromptSource("builtin:code")], 20, 64, k=3)
    path = build_template(embedded_lm, config).template.save(tmp_path / "factual_code_k3.json")
    with running_app() as url:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(url)
        page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=90_000)
        with page.expect_file_chooser() as chooser:
            page.click("#fn-upload")
        chooser.value.set_files(str(path))
        page.wait_for_selector("#fn-build-progress .fn-msg-ok", timeout=30_000)

        page.get_by_role("tab", name="Experiments").click()
        page.locator("#fn-exp-sets label:has-text('creative')").click()  # factual only
        set_number(page, "#fn-exp-samples", 8)
        set_number(page, "#fn-exp-draws", 3)
        set_number(page, "#fn-exp-tokens", 128)
        page.click("#fn-exp-run")
        page.wait_for_selector("#fn-exp-status .fn-progress", timeout=30_000)  # the bar shows while it works
        page.wait_for_selector("#fn-exp-status .fn-msg-ok:has-text('Done in')", timeout=240_000)
        status = page.inner_text("#fn-exp-status")
        assert "20 of its 94 prompts were used to build the template" in status  # left out, and counted
        assert page.locator("#fn-exp-lesion .js-plotly-plot").count() == 1
        assert page.locator("#fn-exp-curve .js-plotly-plot").count() == 1
        assert page.get_attribute("#fn-exp-table [role=grid]", "aria-rowcount") == "5"  # header + 3 + union
        assert "held-out prompts" in page.inner_text("#fn-exp-reading")
        assert page.locator("#fn-exp-files-out a").count() == 3
        shot(page, "experiments", readme=True)
        page.close()
