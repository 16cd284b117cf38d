#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser tests
# (tests/e2e/test_browser.py drives it with Playwright for Python). Installs the `chromium`
# package when it is missing (needs root, as on CI machines), as services.sh installs
# PostgreSQL. Playwright's own browser download (`playwright install`) is never used.
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
  echo "browser: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq chromium >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
  fi
fi
/usr/bin/chromium --version >/dev/null 2>&1 || { echo "browser: /usr/bin/chromium does not run" >&2; exit 1; }
