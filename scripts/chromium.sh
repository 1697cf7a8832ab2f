#!/usr/bin/env bash
# Make sure the browser tests have a Chromium (Debian's package: Playwright cannot download
# browsers here). FNWEB_CHROMIUM names another executable. Where none can be installed, a
# normal run warns and the browser tests skip; with FNWEB_REQUIRE_BROWSER=1 (CI) it fails.
set -uo pipefail
CHROMIUM=${FNWEB_CHROMIUM:-/usr/bin/chromium}
found() { [ -x "$CHROMIUM" ] || command -v "$CHROMIUM" >/dev/null 2>&1; }
if ! found && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || true
fi
if found; then
  exit 0
fi
if [ "${FNWEB_REQUIRE_BROWSER:-}" = "1" ]; then
  echo "error: no Chromium at $CHROMIUM and it could not be installed; the browser tests are required here" \
       "(FNWEB_REQUIRE_BROWSER=1). Install Debian's chromium or set FNWEB_CHROMIUM." >&2
  exit 1
fi
echo "warning: chromium not installed; browser tests will skip" >&2
