"""Time the web app as a visitor sees it, in headless Chromium, on the embedded model.

1. Build: press Build (100 built-in prompts: 25 each of factual, arithmetic, code and
   creative; k 10; 128 tokens per sample) and wait until the heatmap is drawn.
2. Generate: press Generate (all four columns, 64 new tokens, greedy) and wait until
   every column is finished and the metrics table is shown.
3. A demo preset, whose template is then already in the session.

Run from the repository root: ``python bench/app_timings.py`` (writes
bench/results/app_timings.json). Timings depend on the machine and its load: the
script prints the CPU count and load average with them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from live_app import running_app  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


def number(page, selector: str, value) -> None:
    box = page.locator(f"{selector} input").first
    box.fill(str(value))
    box.press("Tab")


def main() -> dict:
    import torch
    from playwright.sync_api import sync_playwright

    result = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    with running_app() as url, sync_playwright() as p:
        result["torch_threads"] = torch.get_num_threads()  # after app.py read FNWEB_TORCH_THREADS
        browser = p.chromium.launch(executable_path=os.environ.get("FNWEB_CHROMIUM", "/usr/bin/chromium"),
                                    args=ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(url)
        page.wait_for_selector("#fn-model-status .fn-status-ok", timeout=120_000)
        for name in ("arithmetic", "code", "creative"):
            page.get_by_label(name, exact=False).first.check()
        number(page, "#fn-samples", 25)
        number(page, "#fn-k", 10)

        start = time.perf_counter()
        page.click("#fn-build")
        page.wait_for_selector("#fn-build-progress .fn-msg-ok", timeout=900_000)
        built = time.perf_counter()
        page.get_by_role("tab", name="Networks").click()
        page.locator("#fn-heatmap .js-plotly-plot .heatmaplayer image, #fn-heatmap .js-plotly-plot .hm").first \
            .wait_for(state="attached", timeout=60_000)
        result["build_to_heatmap_s"] = round(time.perf_counter() - start, 1)
        result["build_to_message_s"] = round(built - start, 1)
        result["build_message"] = page.inner_text("#fn-build-progress")

        page.get_by_role("tab", name="Compare").click()
        page.fill("#fn-prompt textarea", "Tell me a short story about a dragon.")
        page.locator("button:has-text('Generation settings')").click()
        number(page, "#fn-new-tokens", 64)
        start = time.perf_counter()
        page.click("#fn-generate")
        page.wait_for_selector("#fn-compare-output .fn-prompt em:has-text('done')", timeout=600_000)
        page.wait_for_selector("#fn-metrics [role=grid][aria-rowcount='5']", timeout=60_000)
        result["generate_four_columns_64_tokens_s"] = round(time.perf_counter() - start, 1)
        result["tokens_per_column"] = [t.split()[0] for t in page.locator(".fn-card-foot").all_inner_texts()[:1]]

        start = time.perf_counter()
        page.click("#fn-preset-1")  # the one-line answer with four columns (lesion, preserve and their controls)
        page.wait_for_selector("#fn-compare-output .fn-prompt:has-text('capital of Japan') em:has-text('done')",
                               timeout=900_000)
        page.wait_for_selector("#fn-metrics [role=grid][aria-rowcount='5']", timeout=60_000)
        result["preset_1_s"] = round(time.perf_counter() - start, 1)
        result["preset_1_columns"] = page.locator(".fn-card .fn-text").all_inner_texts()
        page.screenshot(path=str(ROOT / "bench" / "results" / "preset_1.png"), full_page=True)
        browser.close()
    result["load_after"] = os.getloadavg()[0]
    return result


if __name__ == "__main__":
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    timings = main()
    (ROOT / "bench" / "results" / "app_timings.json").write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings, indent=2))
