#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every crate's test suite —
# unit tests, the integration suites (real Delta tables, moto S3, anvil + the embedded EVM, HTTP
# servers on loopback, SIGKILL/SIGTERM child processes) and the root binary's end-to-end tests
# (the demo through settlement and a claim, the analyst notebooks and the Python table check).
# Safe to re-run; installs are skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tributary-target}"

bash scripts/setup-test-deps.sh

cargo test --release --workspace
