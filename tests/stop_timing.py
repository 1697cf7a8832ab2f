"""Stop latency as the page shows it: press Generate, then Stop, and time in the page how long the stopped state takes.

``tiny_comparison(page, folder)`` sets the Compare tab up on a tiny model saved in
``folder`` (loaded in the model bar, with an uploaded template of its size) for a long
generation: 1,024 new tokens, every default column, 3 random draws. ``measure_stop(page)``
presses Generate, has the page press Stop once the first tokens show, and returns what
the page recorded with ``performance.now()``: from the Stop click to the stopped status line
(``stopped_ms``) and to the scored metrics of the tokens generated (``scored_ms``), with
that status line and the metrics table's text. tests/test_stop_browser.py checks them;
bench/app_timings.py prints them. It asserts nothing itself.
"""

from __future__ import annotations

from pathlib import Path

from shots import set_number, upload_template

STOPPED = "#fn-compare-status .fn-msg-stopped"
SCORED = "the columns and the numbers cover"  # the stopped line's words once the numbers are in
# In the page: the times of the Generate click, of the first tokens shown, of the Stop click (capture phase: before
# Gradio's own handler) and of the first appearance of the stopped status line and of the scored one, each read at
# the DOM change that shows it. The page itself presses Stop ``delay`` ms after the first tokens show: driven from
# the test's process, the click would wait its turn behind the app's own threads there (the app runs in it).
WATCH_JS = """([stopped, scored, delay]) => {
  const times = window.__fnStop = {};
  document.addEventListener("click", (event) => {  // on the document: Gradio may redraw the buttons themselves
    if (times.generate === undefined && event.target.closest("#fn-generate")) times.generate = performance.now();
    if (times.clicked === undefined && event.target.closest("#fn-compare-stop")) times.clicked = performance.now();
  }, {capture: true});
  new MutationObserver(() => {
    const now = performance.now();
    if (times.generate !== undefined && times.tokens === undefined
        && document.querySelector("#fn-compare-output .fn-card")) {
      times.tokens = now;
      setTimeout(() => document.querySelector("#fn-compare-stop").click(), delay);
    }
    if (times.clicked === undefined) return;
    const line = document.querySelector(stopped);
    if (times.stopped === undefined && line) times.stopped = now;
    if (times.scored === undefined && line && line.textContent.includes(scored)) times.scored = now;
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
TOKENS, DRAWS = 1024, 3  # the default draws: 7 rows at once


def tiny_template_file(folder: Path, width: int) -> Path:
    """A two-component template for the tiny model (``width`` neurons per layer), as a file to upload."""
    from fnweb.templates import Template

    components = {0: {0: list(range(0, 20)), 1: list(range(5, 25))}, 1: {2: list(range(30, 50))}}
    return Template(layers=[0, 1, 2], width=width, components=components).save(folder / "tiny-template.json")


def tiny_comparison(page, folder: Path, template_file: Path) -> None:
    """Load the tiny model in ``folder``, upload ``template_file`` and set a long comparison up (page on Compare)."""
    model = page.locator("input[aria-label='Model'], .fn-bar-row input").first
    model.fill(str(folder))
    model.press("Enter")
    page.click(".fn-load")
    page.wait_for_selector(f"#fn-model-status .fn-status-ok:has-text({folder.name!r})", timeout=120_000)
    page.get_by_role("tab", name="Templates").click()
    upload_template(page, template_file, "Using the uploaded template")
    page.get_by_role("tab", name="Compare").click()
    page.fill("#fn-prompt textarea", "Tell me a long story about a dragon and a lighthouse.")
    page.locator("button:has-text('Generation settings')").click()
    set_number(page, "#fn-new-tokens", TOKENS)
    draws = page.get_by_label("Random control draws", exact=False).first
    draws.fill(str(DRAWS))
    draws.press("Tab")


def measure_stop(page, after_first_tokens_s: float = 0.5) -> dict:
    """Generate, Stop once tokens show, and what the page measured (see the module docstring)."""
    from playwright.sync_api import Error as PlaywrightError  # here: a run without Playwright skips browser tests

    page.evaluate(WATCH_JS, [STOPPED, SCORED, round(after_first_tokens_s * 1000)])
    page.click("#fn-generate")
    for mark, seconds in (("stopped", 120), ("scored", 120)):
        try:
            page.wait_for_function(f"window.__fnStop.{mark} !== undefined", timeout=seconds * 1000)
        except PlaywrightError as exc:  # say what the page showed instead
            raise RuntimeError(f"No {mark} state within {seconds} s; the page recorded "
                               f"{page.evaluate('window.__fnStop')} and its status line reads "
                               f"{page.inner_text('#fn-compare-status')!r}") from exc
    times = page.evaluate("window.__fnStop")
    return {"stopped_ms": round(times["stopped"] - times["clicked"]),
            "scored_ms": round(times["scored"] - times["clicked"]),
            "status": page.inner_text("#fn-compare-status"), "metrics": page.inner_text("#fn-metrics")}
