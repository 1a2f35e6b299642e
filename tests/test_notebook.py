"""docs/notebook.ipynb runs top to bottom (nbclient, the python3 kernel of this interpreter),
so the walk-through of tasks A to E cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).parents[1] / "docs" / "notebook.ipynb"


def outputs_of(notebook) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert not outputs_of(notebook)
    assert all(cell.execution_count is None for cell in notebook.cells if cell.cell_type == "code")


def test_notebook_runs_top_to_bottom(tmp_path):
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # python3 resolves to ipykernel's own kernel spec, launched with this interpreter.
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a failing cell raises CellExecutionError with its traceback

    outputs = outputs_of(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2  # the curves of task D
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    table_rows = [
        line
        for line in markdown.splitlines()
        if line.startswith("|") and "efficientnet_lite0" in line and "finetune" in line
    ]
    assert len(table_rows) == 2  # the sweep's table of two learning rates (B)
    assert "McNemar" in markdown  # cxrlab.compare (E)
    text = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "'decision': 'PNEUMONIA if probabilities[:, 1] >= " in text  # the export's sidecar
    # The notebook works in a temporary folder, never beside itself.
    assert not list(tmp_path.iterdir())
