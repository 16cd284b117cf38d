#!/usr/bin/env bash
# Install the broker into .venv and run it on the embedded default (blob store + SQLite).
# Extra arguments go to `broker serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  echo "broker: creating .venv (first run)" >&2
  python3 -m venv .venv
fi
if [ ! -x .venv/bin/broker ]; then
  echo "broker: installing the broker and its dependencies into .venv (first run: about a minute)" >&2
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .

export BROKER_DATA_DIR="${BROKER_DATA_DIR:-$PWD/broker-data}"
if [ -z "${BROKER_ADMIN_KEY:-}" ]; then
  key_file="$BROKER_DATA_DIR/admin_key"
  if [ ! -s "$key_file" ]; then
    mkdir -p "$BROKER_DATA_DIR"
    (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$key_file")
  fi
  BROKER_ADMIN_KEY="$(cat "$key_file")"
  export BROKER_ADMIN_KEY
  echo "broker: admin key in $key_file" >&2
fi
echo "broker: to pick the port: PORT=9000 $0 (or $0 --port 9000)" >&2
exec .venv/bin/broker serve "$@"
