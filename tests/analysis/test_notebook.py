"""The analysis notebook runs top to bottom against a results directory, figures inline."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from synth_results import make_results

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "diversity_capacity.ipynb"
FIXTURE = REPO / "tests" / "fixtures" / "smoke_results"


def run_notebook(results_dir: Path, monkeypatch) -> nbformat.NotebookNode:
    """Execute the notebook from notebooks/ (as a user would) with HARNESS_RESULTS_DIR set."""
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless, whatever the user's matplotlibrc says
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return nb


def _outputs(nb, mime: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if mime in o.get("data", {})]


def test_notebook_runs_on_synthetic_results(tmp_path, monkeypatch):
    nb = run_notebook(make_results(tmp_path, failed=1), monkeypatch)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert len(_outputs(nb, "image/png")) >= 4  # interaction, heatmap, tracks, curves
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "sweep 'synthetic': 37 trials (36 successful, 1 failed" in text


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="tests/fixtures/smoke_results not committed yet")
def test_notebook_runs_on_the_committed_fixture(monkeypatch):
    nb = run_notebook(FIXTURE, monkeypatch)
    assert _outputs(nb, "image/png")
