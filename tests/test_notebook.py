"""docs/notebook.ipynb is stored with its outputs (a reader on a code host sees the tables and
figures) and still runs top to bottom, on the fixture X-rays (nbclient, the python3 kernel of
this interpreter), leaving nothing behind."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).parents[1] / "docs" / "notebook.ipynb"
FIXTURE = Path(__file__).parent / "fixtures" / "kermany-small"
RUNS = ("fine-tune", "fixed feature extractor", "from scratch")


def outputs_of(notebook) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def text_of(outputs: list[dict]) -> str:
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        for kind in ("text/plain", "text/markdown"):
            parts.append(output.get("data", {}).get(kind, ""))
    return "\n".join(parts)


def check_outputs(notebook) -> str:
    """What every executed copy must show; returns its text."""
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code_cells), "a code cell without output"
    outputs = outputs_of(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    # data x2, lr_find, three curves, ROC, top losses, confusion, four Grad-CAM
    assert len(figures) >= 12, len(figures)
    text = text_of(outputs)
    assert "McNemar" in text  # cxrlab.compare
    assert "suggested learning rate" in text  # lr_find
    assert "'decision': 'PNEUMONIA if probabilities[:, 1] >= " in text  # the export's sidecar
    # Every run is checked against chance, and one below it comes with its reason.
    verdicts = [line for line in text.splitlines() if "balanced accuracy" in line and "AUC" in line]
    assert len(verdicts) == 3 and all(any(r in v for r in RUNS) for v in verdicts), verdicts
    for verdict in verdicts:
        assert "at or above chance" in verdict or "so this says little about the method" in verdict
    assert "- gone" in text  # the temporary folder removed itself
    return text


def test_stored_notebook_has_its_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    check_outputs(notebook)
    # Stored without timings, so that a rerun with the same results is the same file.
    assert not any("execution" in cell.metadata for cell in notebook.cells)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    workdir, temporary = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    temporary.mkdir()
    monkeypatch.setenv("CXRLAB_NOTEBOOK_DATA", str(FIXTURE))  # tests never read ../shared
    monkeypatch.setenv("TMPDIR", str(temporary))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()  # a failing cell raises CellExecutionError with its traceback

    text = check_outputs(notebook)
    assert "data: kermany-small" in text
    # The notebook works in a temporary folder that it removes, never beside itself.
    assert not list(workdir.iterdir())
    assert not [p for p in temporary.iterdir() if p.name.startswith("cxrlab")]
