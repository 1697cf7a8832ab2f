"""A component card in headless Chromium: see it, see its shaded contexts, search a text, click through to Compare.

A small template is built on the embedded model (factual, code and multilingual
prompts, k 5; its cards are made with it) and uploaded through the Templates tab. The
Networks tab then shows component 1's card beside the heatmap; a search shades a text;
a click on a context fills Compare's prompt and picks the component. Saves the card's
screenshot (artifacts/, or docs/screenshots/card.png with FNWEB_README_SCREENSHOTS=1:
tests/shots.py). Skips, saying why, where Playwright or Chromium is missing.
"""

from __future__ import annotations

import pytest
from live_app import running_app
from shots import shot, upload_template

from fnweb.build import BuildConfig, build_template
from fnweb.cards import stored_cards
from fnweb.prompts import PromptSource

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SETS = [PromptSource("builtin:factual"), PromptSource("builtin:code"), PromptSource("builtin:multilingual")]


def test_card_search_and_click_through_to_compare(browser, embedded_lm, tmp_path):
    template = build_template(embedded_lm, BuildConfig(SETS, 15, 64, k=5)).template
    path = template.save(tmp_path / "factual_code_multilingual_k5.json")
    cards = stored_cards(template)
    with running_app() as url:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=90_000)
        upload_template(page, path, timeout=30_000)

        page.get_by_role("tab", name="Networks").click()
        page.wait_for_selector("#fn-card .fnc-row", timeout=30_000)  # every component's label, before one is picked
        assert page.locator("#fn-card .fnc-row").count() == 5
        page.locator("#fn-net-component input").click()
        page.get_by_role("option", name="component 1", exact=True).click()
        page.wait_for_selector("#fnc-card-1", timeout=30_000)
        assert cards.card(1).label.replace("`", "") in page.inner_text("#fnc-card-1 h4")  # tokens as code spans
        top = page.locator("#fnc-card-1 .fnc-ctx").first.locator(".fnc-top")
        assert top.inner_text() == cards.card(1).top[0].pieces[cards.card(1).top[0].at].replace("\n", "⏎")
        assert "rgba(249, 115, 22" in top.get_attribute("style")  # shaded by the signal
        assert page.locator("#fnc-card-1 .fnc-layers div").count() == 30  # a bar per layer
        assert page.locator("#fnc-card-1 .fnc-up").count() == 10  # the direct effect's promoted tokens
        shot(page, "card", readme=True)

        page.fill("#fn-card-query textarea, #fn-card-query input", "def add(a, b):\n    return a + b")
        page.click("#fn-card-search")
        page.wait_for_selector("#fn-card .fnc-search", timeout=60_000)
        assert page.locator("#fn-card .fnc-search tr").count() == 6  # header + 5 components, ranked
        assert page.locator("#fn-card .fnc-search .fnc-tok").count() >= 3 * 9  # the text, shaded, for the top 3

        page.locator("#fn-card .fnc-row[data-component='1']").click()  # back to component 1's card
        page.wait_for_selector("#fnc-card-1", timeout=30_000)
        context = cards.card(1).top[0]
        page.locator("#fnc-card-1 .fnc-ctx").first.click()
        page.wait_for_selector("#fn-tab-compare", state="visible", timeout=30_000)
        page.wait_for_function("p => document.querySelector('#fn-prompt textarea').value === p",
                               arg=cards.prompts[context.prompt], timeout=30_000)
        assert f"1 · {cards.card(1).label}" in page.inner_text("#fn-components")  # picked, with its label as it is
        page.close()
