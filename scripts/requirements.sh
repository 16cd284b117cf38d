#!/usr/bin/env bash
# Regenerate requirements.txt: the pinned runtime dependencies a platform's Python build
# installs (Heroku's buildpack reads requirements.txt; so does the Dockerfile), the
# PostgreSQL driver included. `pip freeze` of a clean venv of `.[postgres]`, then `.` (the
# broker itself, which gives the `broker` command). tests/test_requirements.py fails when
# pyproject names a dependency this file does not pin.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check '.[postgres]'
{
  echo "# Pinned runtime dependencies of the broker, PostgreSQL driver included, then the broker"
  echo "# itself (.). Generated from pyproject.toml by scripts/requirements.sh (pip freeze of a"
  echo "# clean venv of '.[postgres]' on Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())')); do not edit by hand."
  "$venv/bin/python" -m pip freeze --disable-pip-version-check --exclude-editable \
    | grep -viE '^broker( |=|@)' \
    | sed -E 's/^psycopg==/psycopg[binary]==/'
  echo "."
} > requirements.txt
echo "requirements.txt: $(grep -c '==' requirements.txt) pins" >&2
