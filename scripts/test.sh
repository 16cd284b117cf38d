#!/usr/bin/env bash
# Install everything the tests need and run them: lint, types, then pytest.
# Extra arguments go to pytest. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
bash scripts/services.sh
bash scripts/localstack.sh
bash scripts/browser.sh

.venv/bin/ruff check broker tests
.venv/bin/ruff format --check broker tests
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
