"""The demo end to end on a tiny simulated world: every output, the report, a re-run that
reprocesses nothing, and a longer-trained preset scored beside bicubic baselines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def test_demo_on_a_tiny_world_produces_every_output(tmp_path):
    from pipelines import demo

    out = tmp_path / "demo"
    result = demo.run_demo(
        out, tiny=True, train={"epochs": 2, "max_batches_per_epoch": 2}, train_seconds=30, report=False
    )
    meta = json.loads(result.read_text())
    assert result == out / "demo.json"
    for key in ("world", "cube", "pair_index", "model_package", "harmonized", "timeseries"):
        assert Path(meta[key]).exists(), key
    assert (Path(meta["model_package"]) / "mlm.json").exists()
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["stages"]) >= {"world", "ingest", "pairs", "train", "infer", "timeseries"}
    cube, hz, ts = demo.open_cube(out), demo.open_harmonized(out), demo.open_timeseries(out)
    n_landsat = int((cube["sensor"] == "landsat").sum())
    assert hz.sizes["time"] == n_landsat and hz.odc.geobox == cube.odc.geobox
    assert {"ndvi", "observations", "sos", "peak_ndvi"} <= set(ts.data_vars)
    # every acquisition of both sensors, but Landsat scenes ingest could not co-register
    flagged = int((cube["shift_flagged"] & (cube["sensor"] == "landsat")).sum())
    assert ts.sizes["obs_time"] == cube.sizes["time"] - flagged
    for png in ("ndvi_series.png", "ndvi_maps.png", "clear_observations.png"):
        assert (out / "timeseries" / png).stat().st_size > 0
    # harmonized Landsat is reflectance where clear, NaN elsewhere
    v = hz["red"].where(hz["clear"]).values
    assert np.isfinite(v).any() and np.nanmax(np.abs(v)) < 1.5
    # the report scores every stage against truth
    from pipelines.demo.report import write_report

    html = write_report(out)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert html.exists() and (out / "report" / "ndvi_timeseries.png").stat().st_size > 0
    err = metrics["observation_error"]["Sentinel-2"]
    # Sentinel-2's 20 m nir errs at edges and shores, not inside parcels
    assert err["NDVI RMSE interior"] < err["NDVI RMSE land"] <= err["NDVI RMSE"]
    assert {"harmonized Landsat", "raw Landsat"} <= set(metrics["observation_error"])

    # a second run re-uses everything: no stage reprocesses anything
    t0 = time.perf_counter()
    demo.run_demo(
        out, tiny=True, train={"epochs": 2, "max_batches_per_epoch": 2}, train_seconds=30, report=False
    )
    stages = json.loads((out / "demo.json").read_text())["stages"]
    assert stages["ingest"]["committed"] == [] and stages["infer"]["committed"] == []
    assert (
        stages["pairs"]["up_to_date"] and stages["train"]["up_to_date"] and stages["timeseries"]["up_to_date"]
    )
    assert time.perf_counter() - t0 < 60

    # a longer-trained preset scored beside bicubic baselines on the demo's test windows
    from click.testing import CliRunner

    from pipelines.experiments.compare_demo import main as compare_main

    args = [str(out), "--preset", "tiny", "--epochs", "1", "--batches", "2", "--with-demo-model"]
    result = CliRunner().invoke(compare_main, [*args, "--out", str(tmp_path / "cmp")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "cmp" / "table.csv", index_col=0)
    rows = {"Landsat bicubic", "bicubic + fitted linear bandpass", "UNet (tiny)", "UNet (demo)"}
    assert rows <= set(table.index)
    assert np.isfinite(table["PSNR"]).all()
    # the bicubic rows really are another resampling of the same scenes, not the cube again
    bilinear = [i for i in table.index if i.startswith("Landsat resampled")][0]
    assert table.loc["Landsat bicubic", "PSNR"] != table.loc[bilinear, "PSNR"]
    assert abs(table.loc["Landsat bicubic", "PSNR"] - table.loc[bilinear, "PSNR"]) < 2.0
