"""The app in headless Chromium (Playwright): build a small template, see the heatmap, compare four columns.

Saves screenshots as test artifacts (artifacts/, not committed) and the README's
screenshots, one per tab (docs/screenshots/). Skips, saying why, where Playwright or
Chromium is missing.
"""

from __future__ import annotations

import pytest
from live_app import running_app
from shots import set_number, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_stop_build_see_heatmap_and_compare_four_columns(browser):
    with running_app() as url:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(url)
        # The embedded model loads on page open; the bar then shows its summary.
        page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=90_000)
        assert "30 layers" in page.inner_text("#fn-model-status")

        # Stop mid-build: the page says so at once and no template appears.
        page.click("#fn-build")
        page.wait_for_selector("#fn-build-progress .fn-progress:has-text('Capturing')", timeout=60_000)
        page.click("#fn-build-stop")
        page.wait_for_selector("#fn-build-progress .fn-msg-stopped", timeout=30_000)
        assert "Nothing was saved" in page.inner_text("#fn-build-progress")
        assert page.input_value("#fn-template-picker input") == ""

        set_number(page, "#fn-samples", 20)
        set_number(page, "#fn-max-tokens", 64)
        set_number(page, "#fn-k", 5)
        page.click("#fn-build")
        page.wait_for_selector("#fn-build-progress .fn-progress", timeout=30_000)  # the bar shows while it works
        page.wait_for_selector("#fn-build-progress .fn-msg-ok", timeout=180_000)
        assert page.get_attribute("#fn-coverage [role=grid]", "aria-rowcount") == "6"  # header + 5 components
        shot(page, "templates", readme=True)

        page.get_by_role("tab", name="Networks").click()
        heatmap = page.locator("#fn-heatmap .js-plotly-plot .heatmaplayer image, #fn-heatmap .js-plotly-plot .hm")
        heatmap.first.wait_for(state="attached", timeout=30_000)
        assert page.locator("#fn-overlap-plot .js-plotly-plot").count() == 1
        assert page.locator("#fn-heatmap .modebar").count() == 1  # the camera button saves a PNG
        shot(page, "networks", readme=True)

        page.get_by_role("tab", name="Compare").click()
        page.fill("#fn-prompt textarea", "Tell me a short story about a dragon.")
        page.locator("#fn-components input").first.click()
        page.keyboard.press("Backspace")  # drop the default choice, then pick component 4
        page.locator("#fn-components input").first.fill("4")
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.locator("button:has-text('Generation settings')").click()
        set_number(page, "#fn-new-tokens", 32)
        page.click("#fn-generate")
        page.wait_for_selector("#fn-compare-output .fn-card", timeout=60_000)
        page.wait_for_selector("#fn-compare-output .fn-prompt em:has-text('done')", timeout=180_000)
        cards = page.locator("#fn-compare-output .fn-card")
        assert cards.count() == 5
        titles = [cards.nth(i).locator(".fn-card-head b").inner_text() for i in range(5)]
        assert titles == ["Baseline", "Lesion", "Preserve", "Random control", "Random control (preserve)"]
        page.wait_for_selector("#fn-metrics [role=grid][aria-rowcount='6']", timeout=30_000)
        metrics = page.inner_text("#fn-metrics")
        assert "Random control (3 draws)" in metrics and "±" in metrics
        shot(page, "compare", readme=True)
        page.close()
