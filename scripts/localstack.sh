#!/usr/bin/env bash
# Install LocalStack (S3 only) into .cache/localstack-venv, once. The test suite starts it
# on 127.0.0.1 with signature validation ON: it is the real S3 peer that enforces signed
# lengths, types, checksums and expiry (moto does not).
# Pinned to 4.13.1, the newest release that runs on Python 3.11, with the pins it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/localstack-venv
stamp="$venv/.installed-4.13.1"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "localstack: installing into $venv (about 90 s, once)" >&2
rm -rf "$venv"
mkdir -p .cache
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  'localstack-core[runtime]==4.13.1' 'cbor2<6' 'cryptography==44.0.3' 'pyopenssl==24.3.0' \
  service_identity
touch "$stamp"
