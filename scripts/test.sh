#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs the whole test suite.
# Safe to re-run; installs are skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tributary-target}"

bash scripts/setup-test-deps.sh

cargo test --release --workspace --all-targets
