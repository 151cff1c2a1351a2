#!/usr/bin/env bash
# Installs the local servers and reference packages the tests use (all loopback, all from registries):
#   - moto[server] (PyPI): the S3-protocol server the S3 tests start on 127.0.0.1
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v moto_server >/dev/null 2>&1; then
    echo "installing moto[server] (PyPI)…" >&2
    python3 -m pip install --quiet 'moto[server]>=5'
fi

# ledger/js (npm, pinned by package-lock.json): @openzeppelin/merkle-tree (the reference the Merkle
# tests compare against), solc + @openzeppelin/contracts (the contract rebuild check) and
# @foundry-rs/anvil (the local EVM node the ledger tests start on 127.0.0.1; its platform package
# ships the binary, so install scripts are not needed and not run).
if ! command -v node >/dev/null 2>&1; then
    echo "error: node (>= 18) and npm are needed for the ledger tests" >&2
    exit 1
fi
if [ ! -d ledger/js/node_modules/@openzeppelin/merkle-tree ] || [ ! -d ledger/js/node_modules/solc ] \
    || ! ls ledger/js/node_modules/@foundry-rs/anvil-*/bin/anvil >/dev/null 2>&1; then
    echo "installing ledger/js npm packages (npm ci)…" >&2
    (cd ledger/js && npm ci --ignore-scripts --no-audit --no-fund) || echo "warning: npm ci in ledger/js failed; ledger tests will not run" >&2
fi

# Python readers for the analyst notebooks and the "tables are standard Delta" check.
if ! python3 -c "import polars, deltalake, pyarrow, nbclient, nbformat, ipykernel, matplotlib, Crypto" >/dev/null 2>&1; then
    echo "installing notebook dependencies (PyPI)…" >&2
    python3 -m pip install --quiet -r notebooks/requirements.txt || echo "warning: notebook dependencies failed to install" >&2
fi
