"""The walkthrough notebook runs top to bottom (real models, real FAQ), so it cannot rot."""
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_executes():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3" runs this interpreter: jupyter_client swaps the spec's `python` for sys.executable
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any failure
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # the report's plots, inline
    text = "".join(o.get("text", "") for o in outputs)
    assert "[1]" in text and "The documents I have do not cover this." in text
