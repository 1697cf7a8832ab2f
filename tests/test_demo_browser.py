"""The demo path in headless Chromium at 1280x800: a preset from the first screen, its output in view, the
visitor's templates after a reload, and a copied link that sets the comparison up in another browser.

The preset template is the one cached in the fnweb cache folder (like the converted model): the first run on a
machine builds it once (minutes on a CPU), later runs find it. Prints the time from the preset click to the first
visible progress and to the first token (no timing is asserted: targets live in bench/). Saves the README's
screenshot of a restored link (FNWEB_README_SCREENSHOTS=1).
"""

from __future__ import annotations

import time

import pytest
from live_app import running_app
from shots import shot

from fnweb.ui.presets import PRESETS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREEN = {"width": 1280, "height": 800}
FIRST = PRESETS[0]  # the preset clicked: its prompt and component come back after a reload and through a link


def in_view(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 200) <= SCREEN["height"]


def no_error_overlay(page) -> bool:
    return page.locator(".error:visible, [data-testid='status-tracker'] .error:visible").count() == 0


def test_preset_in_view_reload_keeps_templates_and_a_link_restores(browser, tmp_path, monkeypatch):
    monkeypatch.setenv("FNWEB_STATE_DIR", str(tmp_path / "state"))
    with running_app() as url:
        page = browser.new_context(viewport=SCREEN).new_page()
        page.goto(url)
        page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=120_000)
        assert in_view(page, "#fn-preset-0")  # the presets are on the first screen

        clicked = time.monotonic()
        page.click("#fn-preset-0")
        page.wait_for_selector("#fn-preset-status .fn-progress, #fn-preset-status .fn-msg", timeout=60_000)
        progress_s = time.monotonic() - clicked
        assert in_view(page, "#fn-preset-status")  # beside the button pressed
        page.wait_for_selector("#fn-compare-output .fn-card", timeout=900_000)
        token_s = time.monotonic() - clicked
        print(f"\npreset click -> first progress {progress_s:.2f} s, -> first token {token_s:.1f} s")
        page.wait_for_timeout(1500)  # the smooth scroll
        assert in_view(page, "#fn-compare-output .fn-columns")
        page.wait_for_selector("#fn-preset-status .fn-msg-ok", timeout=600_000)
        template = page.input_value("#fn-template-picker input")
        assert template

        page.reload()  # templates and the last comparison come back
        page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=120_000)
        page.wait_for_function("document.querySelector('#fn-template-picker input').value !== ''", timeout=30_000)
        assert page.input_value("#fn-template-picker input") == template
        page.get_by_role("tab", name="Compare").click()
        page.wait_for_selector("#fn-compare-output .fn-card", timeout=30_000)
        assert FIRST.prompt in page.inner_text("#fn-compare-output")

        page.click("#fn-copy-link")
        page.wait_for_function("document.querySelector('#fn-link textarea').value.startsWith('http')",
                               timeout=30_000)
        link = page.input_value("#fn-link textarea")
        assert "t=preset" in link and f"c={FIRST.components[0]}" in link

        other = browser.new_context(viewport=SCREEN).new_page()  # another visitor, nothing saved
        other.goto(link)
        other.wait_for_selector("#fn-compare-status .fn-msg-ok", timeout=120_000)
        assert "Restored from a link" in other.inner_text("#fn-compare-status")
        assert other.input_value("#fn-prompt textarea") == FIRST.prompt
        assert str(FIRST.components[0]) in other.inner_text("#fn-components")
        other.wait_for_timeout(1500)
        assert in_view(other, "#fn-generate")  # open the link, press Generate
        shot(other, "shared-link", readme=True)

        other.goto(url + "?m=/etc/passwd&t=hub:x&c=a")  # a bad link: one message in place, the page usable
        other.wait_for_selector("#fn-compare-status .fn-msg-error", timeout=120_000)
        text = other.inner_text("#fn-compare-status")
        assert text.count("This link cannot be restored") == 1 and "not a Hub id" in text
        assert no_error_overlay(other)
        other.get_by_role("tab", name="Templates").click()  # still usable
        other.wait_for_selector("#fn-build", timeout=10_000)
