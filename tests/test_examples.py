"""The example notebooks run from top to bottom (nbclient, a fresh kernel each) and are committed
without outputs."""
from __future__ import annotations

import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_the_four_notebooks_exist_and_match_their_generator():
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_ticks_to_factors", "03_factor_research",
                                           "04_cluster_and_dashboard"]
    sys.path.insert(0, str(EXAMPLES))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(EXAMPLES))
    for p in NOTEBOOKS:
        want = make_notebooks.build(p.stem, make_notebooks.NOTEBOOKS[p.stem])
        assert nbformat.read(p, as_version=4).cells == want.cells, f"{p.name} is stale: python examples/make_notebooks.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: commit without outputs"
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    html = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("display_data", "execute_result") and "text/html" in o.get("data", {})]
    assert html, f"{path.name}: no rich (HTML) output was displayed"
