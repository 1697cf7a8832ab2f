"""Browser-test helpers: where screenshots go, taking one, filling a number box, uploading a template.

By default screenshots go into ``artifacts/`` (ignored by git), so a test run never changes
tracked files. ``FNWEB_README_SCREENSHOTS=1 python -m pytest -m browser`` writes the README's
screenshots into ``docs/screenshots/`` instead. The Chromium fixture is ``browser`` in
tests/conftest.py.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


def screenshot_dir() -> Path:
    folder = ROOT / ("docs/screenshots" if os.environ.get("FNWEB_README_SCREENSHOTS") == "1" else "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shot(page, name: str, readme: bool = False) -> None:
    """Save the whole page as artifacts/NAME.png and, for a README screenshot, into screenshot_dir() too."""
    from playwright.sync_api import Error as PlaywrightError  # here: a run without Playwright skips browser tests
    for close in page.locator(".toast-close").all():  # a pop-up left from an earlier step would hide the page
        try:
            close.click(timeout=3_000)
        except PlaywrightError:  # it closed itself meanwhile (fading out: inert, then gone)
            pass
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if readme:
        page.screenshot(path=str(screenshot_dir() / f"{name}.png"), full_page=True)


def set_number(page, selector: str, value) -> None:
    box = page.locator(f"{selector} input").first
    box.fill(str(value))
    box.press("Tab")


def upload_template(page, path, said: str = "", timeout: int = 60_000) -> None:
    """Upload a template file through the Templates tab's upload button (that tab open) and wait for its OK line
    (containing ``said`` when given)."""
    with page.expect_file_chooser() as chooser:
        page.click("#fn-upload")
    chooser.value.set_files(str(path))
    line = f":has-text({said!r})" if said else ""
    page.wait_for_selector(f"#fn-build-progress .fn-msg-ok{line}", timeout=timeout)
