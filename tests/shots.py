"""Where browser tests save screenshots.

By default into ``artifacts/`` (ignored by git), so a test run never changes tracked
files. ``FNWEB_README_SCREENSHOTS=1 python -m pytest -m browser`` writes the README's
screenshots into ``docs/screenshots/`` instead.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def screenshot_dir() -> Path:
    folder = ROOT / ("docs/screenshots" if os.environ.get("FNWEB_README_SCREENSHOTS") == "1" else "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
