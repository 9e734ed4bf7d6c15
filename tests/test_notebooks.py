"""The notebooks in notebooks/ run top to bottom on a small world, and reach the truth.

Each notebook reads its data folder from ``HARMONIZE_NOTEBOOK_DIR`` (here a temporary
directory), simulates its own small world there, and ends with a cell that writes a JSON
summary and asserts its own NDVI accuracy against the simulator's truth; this test executes it
with nbclient in a fresh kernel and checks the summary and the figures it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip(
    "nbformat", reason="nbformat is not installed (pip install nbformat nbclient ipykernel)"
)
nbclient = pytest.importorskip(
    "nbclient", reason="nbclient is not installed (pip install nbclient ipykernel)"
)
pytest.importorskip("ipykernel", reason="ipykernel is not installed: no Python kernel to run the notebooks")

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _execute(name: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HARMONIZE_NOTEBOOK_DIR", str(data_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(data_dir)}}
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error
    return nb


def _assert_png(path: str | Path) -> None:
    p = Path(path)
    assert p.is_file(), f"{p} was not written"
    assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5_000, f"{p} is not a real figure"


def _images(nb: Any) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for out in c.get("outputs", [])
    )


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), (
        f"strip the outputs of {name}"
    )
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2, f"{name} needs its narrative"
    assert "HARMONIZE_NOTEBOOK_DIR" in "".join(c.source for c in code)


def test_api_tour_runs_and_fused_ndvi_matches_truth(tmp_path, monkeypatch):
    nb = _execute("01_api_tour.ipynb", tmp_path, monkeypatch)
    summary = json.loads((tmp_path / "api_tour.json").read_text())
    assert (tmp_path / "world" / "world.json").is_file()
    assert summary["landsat_dates"] >= 2 and summary["scenes"] > summary["landsat_dates"]
    # co-registration recovered the simulator's true shifts of the scenes it did not flag
    assert summary["shift_error_m_unflagged"] < 5.0
    assert summary["ndvi_rmse_fields"] < 0.08 and summary["ndvi_coverage"] > 0.9
    _assert_png(summary["figure"])
    assert _images(nb) >= 1, "the NDVI maps were not displayed"


def test_timeseries_analysis_runs_and_phenology_matches_truth(tmp_path, monkeypatch):
    nb = _execute("02_timeseries_analysis.ipynb", tmp_path, monkeypatch)
    summary = json.loads((tmp_path / "timeseries_analysis.json").read_text())
    assert summary["landsat_dates"] >= 10 and summary["sentinel2_dates"] >= 20  # a whole season
    contrib = summary["clear_observations_per_pixel"]
    assert contrib["landsat"] > 0 and contrib["sentinel-2"] > contrib["landsat"]
    assert summary["ndvi_rmse_fields"] < 0.1 and summary["ndvi_coverage_fields"] > 0.9
    assert summary["peak_day_median_error"] <= 15
    for fig in summary["figures"]:
        _assert_png(fig)
    assert _images(nb) >= 2
