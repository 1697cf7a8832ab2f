"""Render an experiment's two figures to PNG for the README (headless Chromium via Playwright).

    python docs/figures/render_png.py EXPERIMENT.json OUTPUT_FOLDER [PREFIX]

Reads the result JSON written by ``fnexperiment``, rebuilds the figures with
``fnweb.experiment_plots`` and screenshots each one; needs no network (plotly.js is
inlined) and no kaleido.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from fnweb.experiment_plots import lesion_figure, preservation_figure
from fnweb.experiment_results import ExperimentResult

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def render(result_path: str, folder: str, prefix: str = "experiment") -> list[Path]:
    result = ExperimentResult.load(result_path)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else None)
        page = browser.new_page(viewport={"width": 960, "height": 480}, device_scale_factor=2)
        for name, fig in (("lesion", lesion_figure(result)), ("preservation", preservation_figure(result))):
            fig.update_layout(width=940, height=460)
            html = Path(tmp) / f"{name}.html"
            html.write_text(fig.to_html(include_plotlyjs=True, config={"displayModeBar": False}))
            page.goto(html.as_uri())
            page.wait_for_selector(".main-svg")
            target = out / f"{prefix}_{name}.png"
            page.locator(".plotly-graph-div").screenshot(path=str(target))
            written.append(target)
        browser.close()
    return written


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for path in render(*sys.argv[1:4]):
        print(path)
