#!/usr/bin/env bash
# SQL model benchmarks against DuckDB and datasketch, measured in one run; prints the ratios.
#   bash bench/sql_models.sh                      # 1M rows (quality) and 100k docs (near dups)
#   bash bench/sql_models.sh --only near --docs 20000
# Creates bench/.venv with the pinned baselines (bench/requirements.txt) on first use; generated
# data is cached in bench/data/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import duckdb, datasketch, pyarrow" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet -r bench/requirements.txt
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tributary-target}"
export TRIBUTARY_BENCH_PYTHON="$PWD/$VENV/bin/python"
cargo bench -p tributary-pipeline --bench sql_models -- "$@"
