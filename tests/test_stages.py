"""The stages through their entry points, on an ingested tiny world: the infer stage from an
ingested cube (incremental; a changed model redoes every date) and from a catalog search (the
same dates), ``python -m pipelines.stages.<stage>``, ``harmonize run`` and ``harmonize infer``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from harmonize.model import build_model, save_model_package
from pipelines.core.ledger import Ledger
from pipelines.core.stores import open_cube, open_harmonized

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cube(tiny_cube: Path) -> Path:
    """The tiny world ingested (co-registered stores, 64-px chunks; conftest's, shared by the run)."""
    return tiny_cube


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained tiny model: the identity on the reflectance bands (its head starts at zero)."""
    return save_model_package(build_model("tiny"), tmp_path_factory.mktemp("models") / "identity")


def _yaml(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}))
    return path


def _report(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_infer_from_the_cube_is_incremental_and_redoes_dates_of_a_changed_model(
    tiny_world, cube, identity, tmp_path
):
    """``harmonize run infer.yaml`` from the cube: the identity where clear, NaN elsewhere; the
    same dates as ``harmonize infer`` searching the catalog; a no-op re-run; a changed model
    redoes every date. (One test: each infer run of every Landsat date costs seconds.)"""
    from pipelines.cli import main

    out = tmp_path / "harmonized"
    config = _yaml(tmp_path / "infer.yaml", stage="infer", cube=cube, model=identity, device="cpu", out=out)
    runner = CliRunner()
    first = _report(runner.invoke(main, ["run", str(config), "scheduler=threads", "batch=2"]))
    landsat = open_cube(cube)
    landsat = landsat.isel(time=np.flatnonzero(landsat["sensor"].values == "landsat")).compute()
    assert first["source"] == "cube" and first["dates"] == landsat.sizes["time"] > 2
    assert sorted(first["committed"]) == sorted(first["new"]) and len(first["new"]) == first["dates"]
    hz = open_harmonized(out).compute()
    np.testing.assert_array_equal(hz["time"].values, landsat["time"].values)
    clear = hz["clear"].values
    assert clear.any() and not clear.all()
    np.testing.assert_allclose(hz["red"].values[clear], landsat["red"].values[clear], atol=1e-6)
    assert np.isnan(hz["red"].values[~clear]).all()
    _check_harmonize_infer_searches_the_same_dates(tiny_world, identity, first, out, tmp_path / "searched")

    dry = _report(runner.invoke(main, ["run", str(config), "--dry-run", "scheduler=threads"]))
    assert dry["dry_run"] and dry["new"] == [] and len(Ledger(out, "infer").runs()) == 1
    again = _report(runner.invoke(main, ["run", str(config), "scheduler=threads"]))
    assert again["new"] == again["committed"] == [] and not again["model_changed"]

    changed = build_model("tiny")
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    other = save_model_package(changed, tmp_path / "other")
    redo = _report(runner.invoke(main, ["run", str(config), "scheduler=threads", f"model={other}"]))
    assert redo["model_changed"] and sorted(redo["committed"]) == sorted(first["committed"])
    assert Ledger(out, "infer").meta["model"] == str(other)


def _check_harmonize_infer_searches_the_same_dates(world, identity: Path, from_cube: dict, cube_out: Path,
                                                   out: Path) -> None:
    """``harmonize infer`` searching the world's catalog writes the dates the cube source wrote."""
    from pipelines.cli import main

    bbox = ",".join(str(v) for v in world.bbox)
    args = ["infer", str(identity), "--source", str(world.items_path), "--bbox", bbox]
    args += ["--out", str(out), "--device", "cpu", "--format", "zarr"]
    report = _report(CliRunner().invoke(main, args))
    assert report["source"] == "search" and report["items_found"] > report["dates"] > 0
    assert len(report["committed"]) == report["dates"] and report["cogs"] == []
    assert not (out / "cogs").exists()
    assert open_harmonized(out).sizes["time"] == report["dates"]
    # the same dates as from the cube
    assert from_cube["dates"] == report["dates"]
    assert sorted(from_cube["committed"]) == sorted(report["committed"])
    a, b = Ledger(cube_out, "infer"), Ledger(out, "infer")
    assert a.items() == b.items() and a.items()
    times = [open_harmonized(d)["time"].values for d in (cube_out, out)]
    np.testing.assert_array_equal(*times)


def test_stage_commands_dry_run_and_refuse_another_stage_config(cube, identity, tmp_path):
    from pipelines.stages import infer, pairs, timeseries

    runner = CliRunner()
    configs = {
        "pairs": _yaml(tmp_path / "pairs.yaml", stage="pairs", cube=cube, out=tmp_path / "pairs"),
        "infer": _yaml(tmp_path / "hz.yaml", stage="infer", cube=cube, model=identity, out=tmp_path / "hz"),
        "timeseries": _yaml(tmp_path / "ts.yaml", stage="timeseries", cube=cube, out=tmp_path / "ts"),
    }
    reports = {
        name: _report(runner.invoke(module.main, [str(configs[name]), "--dry-run", "scheduler=threads"]))
        for name, module in (("pairs", pairs), ("infer", infer), ("timeseries", timeseries))
    }
    assert all(r["dry_run"] and r["stage"] == name for name, r in reports.items())
    assert not reports["pairs"]["up_to_date"] and not reports["timeseries"]["up_to_date"]
    assert reports["infer"]["new"] and all(n.startswith("dates/landsat-") for n in reports["infer"]["new"])
    assert not any((tmp_path / d / "ledger.json").exists() for d in ("pairs", "hz", "ts"))

    wrong = runner.invoke(pairs.main, [str(configs["infer"]), "--dry-run"])
    assert wrong.exit_code == 2 and "is a 'infer' config, not 'pairs'" in wrong.output
    bad = runner.invoke(infer.main, [str(configs["infer"]), "source=search", "--dry-run"])
    assert bad.exit_code == 2 and "source: search needs catalog and bbox" in bad.output
    bad = runner.invoke(pairs.main, [str(configs["pairs"]), "pairs.patch_size=32", "--dry-run"])
    assert bad.exit_code == 2 and "invalid pairs settings" in bad.output
    assert "multiple of stride" in bad.output


def test_python_m_stage_runs_the_pairs_stage(cube, tmp_path):
    config = _yaml(tmp_path / "pairs.yaml", stage="pairs", cube=cube, out=tmp_path / "pairs")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tiny = ["pairs.patch_size=32", "pairs.stride=16", "pairs.block_size=64", "pairs.min_clear=0.5"]
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.stages.pairs", str(config), *tiny, "--scheduler=threads"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["stage"] == "pairs" and sum(report["windows"].values()) > 0
    assert Path(report["index"]).is_file() and report["pair_config"]["patch_size"] == 32


def test_timeseries_leaves_unregistered_landsat_dates_out(caplog) -> None:
    """A Landsat date ingest flagged (shift not measured) is not fused unless asked for."""
    import logging

    import numpy as np
    import pandas as pd
    import xarray as xr

    from pipelines.stages.timeseries import drop_unregistered

    times = pd.date_range("2024-05-01", periods=4, freq="4D")
    cube = xr.Dataset(
        coords={
            "time": times,
            "sensor": ("time", ["sentinel-2", "landsat", "landsat", "sentinel-2"]),
            "item_id": ("time", ["S0", "L1", "L2", "S3"]),
            "shift_flagged": ("time", [False, False, True, False]),
        }
    )
    hz = xr.Dataset({"red": (("time", "y"), np.ones((2, 3)))}, coords={"time": times[[1, 2]]})
    with caplog.at_level(logging.WARNING):
        kept = drop_unregistered(cube, hz)
    assert list(kept["time"].values) == [times[1].to_datetime64()]
    assert "L2" in caplog.text and "left out" in caplog.text
    no_flags = cube.drop_vars("shift_flagged")
    assert drop_unregistered(no_flags, hz).sizes["time"] == 2
