#!/usr/bin/env python3
"""Execute every analyst notebook headless against a warehouse; exit 1 if any cell fails.

Usage: python3 notebooks/run_notebooks.py <warehouse-dir>
The notebooks read tables with polars + deltalake only; no Tributary code is imported.
"""
import os
import pathlib
import sys
import tempfile

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    warehouse = pathlib.Path(sys.argv[1]).resolve()
    os.environ["TRIBUTARY_WAREHOUSE_DIR"] = str(warehouse)
    here = pathlib.Path(__file__).parent
    failed = []
    notebooks = sorted(here.glob("*.ipynb"))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as work:
            client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": work}})
            try:
                client.execute()
                print(f"ok      {path.name}")
            except CellExecutionError as e:
                print(f"FAILED  {path.name}\n{e}", file=sys.stderr)
                failed.append(path.name)
    print(f"{len(notebooks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
