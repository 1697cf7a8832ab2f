"""The page on a projector and on a phone, in headless Chromium: contrast, type size, presentation mode, width.

At 1280x720 every main text style (the intro, helper and note text, labels, tab names,
preset buttons, the model status, the primary button) has a contrast of at least 4.5:1
on the background it is drawn on, and body text and the preset buttons are at least
16 px; presentation mode makes them larger and a reload keeps it. At 390x844 no tab is
wider than the screen, Compare included once it shows columns and metrics.
Skips, saying why, where Playwright or Chromium is missing.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from live_app import EMBEDDED, running_app
from shots import set_number, shot, upload_template

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The main text styles: (what, selector of its first element on the page as it opens).
TEXT_STYLES = [
    ("intro", "#fn-header p"),
    ("footer note", ".fn-note p"),
    ("preset note", ".fn-preset-note p"),
    ("label", "[data-testid='block-info']"),
    ("helper text", ".info-text"),
    ("tab name", "#fn-tabs [role=tab]"),
    ("preset button", "button[id^='fn-preset-']"),
    ("model status", "#fn-model-status .fn-status"),
    ("primary button", ".fn-load"),
]
BODY_TEXT = ["intro", "preset note", "label", "preset button", "tab name"]  # read from the back of a room: >= 16 px

# WCAG contrast of an element's text on the first opaque background behind it (a translucent one is laid on white).
CONTRAST_JS = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number);
                         return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const over = (top, under) => top.slice(0, 3).map((v, i) => v * top[3] + under[i] * (1 - top[3]));
  let background = [255, 255, 255], node = el;
  const layers = [];
  while (node && node.nodeType === 1) {
    const c = parse(getComputedStyle(node).backgroundColor);
    if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    node = node.parentElement;
  }
  for (const layer of layers.reverse()) background = over(layer, background);
  const text = over(parse(getComputedStyle(el).color), background);
  const linear = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = (rgb) => { const [r, g, b] = rgb.map(linear);
                         return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const [hi, lo] = [lum(text), lum(background)].sort((a, b) => b - a);
  return {ratio: (hi + 0.05) / (lo + 0.05), size: parseFloat(getComputedStyle(el).fontSize)};
}"""
# The same for an unticked checkbox's border (WCAG's 3:1 for the parts of a control one must see).
BORDER_JS = CONTRAST_JS.replace("getComputedStyle(el).color", "getComputedStyle(el).borderTopColor").replace(
    "let background = [255, 255, 255], node = el;", "let background = [255, 255, 255], node = el.parentElement;")
WIDTH_JS = "() => document.documentElement.scrollWidth"


def open_page(browser, url, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=120_000)
    return page


def measure(page) -> dict[str, dict]:
    found = {what: page.evaluate(CONTRAST_JS, selector) for what, selector in TEXT_STYLES}
    missing = [what for what, value in found.items() if value is None]
    assert not missing, f"no element on the page for {missing}"
    return found


def test_projector_contrast_type_and_presentation_mode(browser):
    with running_app() as url:
        page = open_page(browser, url, 1280, 720)
        go_to(page, "Compare")  # where the preset strip is
        styles = measure(page)
        print({what: (round(v["ratio"], 2), v["size"]) for what, v in styles.items()})
        low = {what: round(v["ratio"], 2) for what, v in styles.items() if v["ratio"] < 4.5}
        assert not low, f"text styles under 4.5:1 contrast: {low}"
        box = page.evaluate(BORDER_JS, "input[type=checkbox]:not(:checked)")
        assert box is not None and box["ratio"] >= 3.0, f"an unticked checkbox's border has contrast {box}"
        small = {what: styles[what]["size"] for what in BODY_TEXT if styles[what]["size"] < 16}
        assert not small, f"body text under 16 px at 1280x720: {small}"

        page.click("#fn-present-toggle")
        time.sleep(1)  # buttons ease into their new size
        larger = measure(page)
        assert all(larger[what]["size"] >= 1.2 * styles[what]["size"] for what in BODY_TEXT), larger
        assert all(v["ratio"] >= 4.5 for v in larger.values())
        assert page.get_attribute("#fn-present-toggle", "aria-pressed") == "true"
        page.reload()
        page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=120_000)
        page.wait_for_function("document.documentElement.classList.contains('fn-present')", timeout=10_000)
        go_to(page, "Compare")
        shot(page, "presentation-mode")
        page.click("#fn-present-toggle")  # and off again
        time.sleep(1)
        assert measure(page)["preset button"]["size"] == styles["preset button"]["size"]


def go_to(page, title: str) -> None:
    """Open a tab by its title on a narrow screen, where the last tabs sit in Gradio's "more" menu."""
    tab = page.locator(f"#fn-tabs [role=tab]:text-is({title!r})")
    if tab.count():
        tab.click()
    else:
        page.click("#fn-tabs button[aria-label='More tabs']")
        page.click(f"#fn-tabs .overflow-dropdown button:text-is({title!r})")
    page.wait_for_selector(f"#fn-tab-{title.lower()}", state="visible", timeout=10_000)
    time.sleep(0.5)  # let the tab lay out


def embedded_template(tmp_path):
    """A template file for the embedded model (random networks: the layout is what this test needs)."""
    from fnweb.archs import layout_of
    from fnweb.models import load_model
    from fnweb.templates import Template, TemplateMeta

    layout = layout_of(load_model(EMBEDDED).model)
    width = layout.width("neurons")
    meta = TemplateMeta(model_id=EMBEDDED, site="neurons", n_layers=layout.n_layers, width=width, k=3,
                        threshold="percentile", threshold_value=98.0)
    masks = (np.random.default_rng(0).random((layout.n_layers * width, 3)) < 0.02).astype(np.uint8)
    return Template.from_masks(masks, list(range(layout.n_layers)), width, meta).save(tmp_path / "phone.json")


def test_phone_layout_is_no_wider_than_the_screen(browser, tmp_path):
    template = embedded_template(tmp_path)
    with running_app() as url:
        page = open_page(browser, url, 390, 844)
        widths = {}
        for title in ["Templates", "Networks", "Compare", "Experiments", "Fine-tune", "Share"]:
            go_to(page, title)
            widths[title] = page.evaluate(WIDTH_JS)
        go_to(page, "Templates")
        upload_template(page, template)
        go_to(page, "Compare")
        page.click("button:has-text('Generation settings')")
        set_number(page, "#fn-new-tokens", 8)
        page.click("#fn-generate")
        page.wait_for_selector("#fn-compare-status .fn-msg-ok", timeout=180_000)
        page.wait_for_function("document.querySelector('#fn-metrics').innerText.includes('Lesion')", timeout=30_000)
        time.sleep(0.5)
        widths["Compare with results"] = page.evaluate(WIDTH_JS)
        shot(page, "phone-compare")
        print(widths)
        assert all(width <= 390 for width in widths.values()), widths
