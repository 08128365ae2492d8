"""notebooks/pi0_heads.ipynb runs end to end on the tiny lerobot pi0 fixture, and the committed copy carries its
outputs (a figure as plotly and PNG)."""

import os
from pathlib import Path
from unittest.mock import patch

import pytest

from .test_notebook import PLOTLY, figure_cells, outputs, texts

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "pi0_heads.ipynb"
LINES = ("Pi0Policy: cameras ('base_0_rgb',)", "equal with and without the cache: True", "(frames, layers, heads, d_head)",
         "Spearman(attribution, activation) over the expert's heads", "trained 1,536 values")


def check(nb) -> str:
    every = outputs(nb)
    assert not [o for o in every if o.get("output_type") == "error"]
    shown = "\n".join(texts(o) for o in every)
    assert "Traceback" not in shown and "TqdmWarning" not in shown
    cells = figure_cells(nb)
    assert len(cells) == 1 and sum(PLOTLY in o.get("data", {}) for o in cells[0].outputs) == 1
    for line in LINES:
        assert line in shown, line
    return shown


def test_pi0_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"ROBOSTEER_NOTEBOOK_PNG": "0", "ROBOSTEER_PI0": str(ROOT / "tests" / "fixtures" / "pi0-tiny-a")}
    with patch.dict(os.environ, env):
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    check(nb)


def test_the_committed_pi0_notebook_shows_its_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.execution_count is not None and c.outputs for c in nb.cells if c.cell_type == "code"), \
        "saved without outputs: run python scripts/refresh_notebook.py --notebook notebooks/pi0_heads.ipynb"
    check(nb)
    assert [sorted(o.data) for o in figure_cells(nb)[0].outputs if "data" in o] == [[PLOTLY, "image/png"]]
