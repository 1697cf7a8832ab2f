"""Stop latency as the page shows it: press Generate, then Stop, and time in the page how long the stopped state takes.

``tiny_comparison(page, folder)`` sets the Compare tab up on a tiny model saved in
``folder`` (loaded in the model bar, with an uploaded template of its size) for a long
generation: 1,024 new tokens, every default column, 20 random draws. ``measure_stop(page)``
presses Generate, waits for the first tokens, presses Stop, and returns what the page
recorded with ``performance.now()``: from the Stop click to the stopped status line
(``stopped_ms``) and to the scored metrics of the tokens generated (``scored_ms``), with
that status line and the metrics table's text. tests/test_stop_browser.py checks them;
bench/app_timings.py prints them. It asserts nothing itself.
"""

from __future__ import annotations

from pathlib import Path

from shots import set_number

STOPPED = "#fn-compare-status .fn-msg-stopped"
SCORED = "the columns and the numbers cover"  # the stopped line's words once the numbers are in
# In the page: the time of the Stop click (capture phase: before Gradio's own handler) and of the first
# appearance of the stopped status line and of the scored one, each read at the DOM change that shows it.
WATCH_JS = """([stopped, scored]) => {
  const times = window.__fnStop = {};
  document.querySelector("#fn-compare-stop").addEventListener("click", () => {
    if (times.clicked === undefined) times.clicked = performance.now();
  }, {capture: true});
  new MutationObserver(() => {
    if (times.clicked === undefined) return;
    const now = performance.now(), line = document.querySelector(stopped);
    if (times.stopped === undefined && line) times.stopped = now;
    if (times.scored === undefined && line && line.textContent.includes(scored)) times.scored = now;
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
TOKENS, DRAWS = 1024, 20


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
    with page.expect_file_chooser() as chooser:
        page.click("#fn-upload")
    chooser.value.set_files(str(template_file))
    page.wait_for_selector("#fn-build-progress .fn-msg-ok:has-text('Using the uploaded template')", timeout=60_000)
    page.get_by_role("tab", name="Compare").click()
    page.fill("#fn-prompt textarea", "Tell me a long story about a dragon and a lighthouse.")
    page.locator("button:has-text('Generation settings')").click()
    set_number(page, "#fn-new-tokens", TOKENS)
    draws = page.get_by_label("Random control draws", exact=False).first
    draws.fill(str(DRAWS))
    draws.press("Tab")


def measure_stop(page, after_first_tokens_s: float = 0.5) -> dict:
    """Generate, Stop once tokens show, and what the page measured (see the module docstring)."""
    page.evaluate(WATCH_JS, [STOPPED, SCORED])
    page.click("#fn-generate")
    page.wait_for_selector("#fn-compare-output .fn-card", timeout=120_000)
    page.wait_for_timeout(after_first_tokens_s * 1000)
    page.click("#fn-compare-stop")
    page.wait_for_function("window.__fnStop.stopped !== undefined", timeout=60_000)
    page.wait_for_function("window.__fnStop.scored !== undefined", timeout=120_000)
    times = page.evaluate("window.__fnStop")
    return {"stopped_ms": round(times["stopped"] - times["clicked"]),
            "scored_ms": round(times["scored"] - times["clicked"]),
            "status": page.inner_text("#fn-compare-status"), "metrics": page.inner_text("#fn-metrics")}
