#!/usr/bin/env python3
"""Prove the warehouse tables are standard Delta: read every table with Python `deltalake` and
`polars` alone (no Tributary code) and check both readers agree.

Usage: python3 notebooks/check_tables.py <warehouse-dir> [required.table ...]
Prints one line per table; exits 1 if a table cannot be read, the readers disagree, or a required
table is missing or empty.
"""
import pathlib
import sys

import polars as pl
from deltalake import DeltaTable


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = pathlib.Path(sys.argv[1]).resolve() / "tables"
    required = set(sys.argv[2:])
    seen = {}
    problems = []
    for log in sorted(root.glob("*/*/_delta_log")):
        table_dir = log.parent
        name = f"{table_dir.parent.name}.{table_dir.name}"
        try:
            dt = DeltaTable(str(table_dir))
            arrow_rows = dt.to_pyarrow_table().num_rows
            polars_rows = pl.read_delta(str(table_dir)).height
            history = len(dt.history())
        except Exception as e:  # noqa: BLE001 - report every unreadable table
            problems.append(f"{name}: unreadable: {e}")
            continue
        if arrow_rows != polars_rows:
            problems.append(f"{name}: deltalake sees {arrow_rows} rows, polars {polars_rows}")
        seen[name] = arrow_rows
        print(f"{name:40s} version {dt.version():4d}  rows {arrow_rows:8d}  commits {history}")
    for name in sorted(required):
        if seen.get(name, 0) == 0:
            problems.append(f"{name}: required table missing or empty")
    for p in problems:
        print("PROBLEM", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
