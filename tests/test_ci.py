"""CI cannot pass without its browser tests; a normal ``bash scripts/test.sh`` still can.

The real scripts run here with ``PYTHON=true`` (every pip and pytest call a no-op) and a
PATH without apt-get, so they install nothing; a Chromium is "absent" by pointing
FNWEB_CHROMIUM at a path that does not exist.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")


def _scripts(tmp_path, command: list[str], chromium: str, **env) -> subprocess.CompletedProcess:
    tools = tmp_path / "bin"  # only what the scripts call besides builtins; no apt-get
    tools.mkdir(exist_ok=True)
    for tool in ("bash", "dirname"):
        if not (tools / tool).exists():
            (tools / tool).symlink_to(shutil.which(tool))
    environment = {"PATH": str(tools), "HOME": str(tmp_path), "PYTHON": shutil.which("true"),
                   "FNWEB_CHROMIUM": chromium, **env}
    return subprocess.run([BASH, *command], capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=60)


def test_ci_fails_at_install_when_chromium_is_missing(tmp_path):
    done = _scripts(tmp_path, [str(ROOT / ".ci" / "run")], chromium="/no/chromium")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "error: no Chromium at /no/chromium and it could not be installed; the browser tests are required here")


def test_ci_goes_on_to_the_tests_when_chromium_is_there(tmp_path):
    done = _scripts(tmp_path, [str(ROOT / ".ci" / "run")], chromium=sys.executable)  # any executable file
    assert done.returncode == 0 and done.stderr == ""


def test_a_normal_test_run_without_chromium_warns_and_goes_on(tmp_path):
    done = _scripts(tmp_path, [str(ROOT / "scripts" / "test.sh")], chromium="/no/chromium")
    assert done.returncode == 0
    assert done.stderr.strip() == "warning: chromium not installed; browser tests will skip"


def _browser_tests(required: bool) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "FNWEB_REQUIRE_BROWSER"}
    environment.update(PYTHONPATH=str(ROOT), FNWEB_CHROMIUM="/no/chromium", **({"FNWEB_REQUIRE_BROWSER": "1"}
                                                                                 if required else {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                           "tests/test_browser.py"], capture_output=True, text=True, cwd=ROOT, env=environment,
                          timeout=300)


def test_browser_tests_skip_normally_and_fail_under_ci():
    normal = _browser_tests(required=False)
    assert normal.returncode == 0 and "1 skipped" in normal.stdout
    assert "No Chromium at /no/chromium" in normal.stdout
    required = _browser_tests(required=True)
    assert required.returncode == 1 and "1 error" in required.stdout
    assert ("FNWEB_REQUIRE_BROWSER=1: browser tests may not skip here, and this one did: Skipped: No Chromium at "
            "/no/chromium") in required.stdout
