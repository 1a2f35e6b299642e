"""Run docs/notebook.ipynb top to bottom and store it with its outputs, so that a reader on a
code host sees the tables and figures:

    python docs/execute_notebook.py

It runs in docs/ with this interpreter's python3 kernel, on ../shared/data/kermany-224 when
that folder is beside the repository (else on the fixture images), and stops at the first
failing cell without touching the stored notebook.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent / "notebook.ipynb"


def main() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=3600,
        record_timing=False,  # no timestamps: a rerun that shows the same results is the same file
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    nbformat.write(notebook, NOTEBOOK)
    print(f"wrote {NOTEBOOK} with its outputs", file=sys.stderr)


if __name__ == "__main__":
    main()
