#!/usr/bin/env bash
# Installs the local servers and reference packages the tests use (all loopback, all from registries):
#   - moto[server] (PyPI): the S3-protocol server the S3 tests start on 127.0.0.1
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v moto_server >/dev/null 2>&1; then
    echo "installing moto[server] (PyPI)…" >&2
    python3 -m pip install --quiet 'moto[server]>=5'
fi
