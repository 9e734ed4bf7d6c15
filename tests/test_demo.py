"""The demo end to end on a tiny simulated world: every output, the report, a re-run that
reprocesses nothing, and a longer-trained preset scored beside bicubic baselines."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


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
    # opened once while the ledger stays: a copy of the same lazy cube; reopened when it changes
    again = demo.open_cube(out)
    assert again is not cube and again["red"].data is cube["red"].data
    ledger = out / "cube" / "ledger.json"
    ledger.write_text(ledger.read_text() + " ")
    reopened = demo.open_cube(out)
    assert reopened["red"].data is not cube["red"].data and reopened.sizes == cube.sizes
    assert (reopened["time"].values == cube["time"].values).all()
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
    _check_summary(out, metrics)
    _check_opensr_and_calibration(out, metrics)

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


def _check_opensr_and_calibration(out: Path, metrics: dict) -> None:
    """The report's consistency / hallucination columns and its calibrated-uncertainty section."""
    table = metrics["harmonization"]["table"]
    # the HLS-adjusted input is the consistency reference: exactly consistent with itself
    assert table["+ HLS bandpass"]["30 m MAE"] == 0.0 and table["+ HLS bandpass"]["30 m SAM (deg)"] == 0.0
    # the input itself only ever stays like the input
    resampled = next(k for k in table if k.startswith("Landsat resampled"))
    assert table[resampled]["omission"] == 1.0 and table[resampled]["hallucination"] == 0.0
    for row in table.values():
        assert row["improvement"] + row["omission"] + row["hallucination"] == pytest.approx(1.0)
    md = (out / "report" / "report.md").read_text()
    assert "| 30 m MAE |" in md and "## Calibrated uncertainty" in md
    # the tiny preset has no dropout, said so; the distinct weights its training kept (epochs
    # and best; how many epochs fit in the time budget depends on the machine) make a snapshot
    # ensemble when there are two or more
    cal = metrics["calibration"]
    assert any("no dropout" in n for n in cal["notes"])
    run = out / "model"
    kept = [*run.glob("checkpoints/epoch-*/model.safetensors"), *run.glob("best.safetensors")]
    if len({hashlib.sha256(p.read_bytes()).digest() for p in kept}) >= 2:
        (name, rec), = cal["methods"].items()
        assert name.startswith("snapshot ensemble")
        assert 0.0 <= rec["test"]["cov1"] <= rec["test"]["cov2"] <= 1.0
    else:
        assert cal["methods"] == {} and any("fewer than two" in n for n in cal["notes"])


def _check_summary(out: Path, metrics: dict) -> None:
    """metrics.json's flat summary: exactly the issue's keys as floats, the same numbers in the
    report, and co-registration figures that follow from the simulator's manifest."""
    from harmonize.world import open_world
    from pipelines.demo import open_cube
    from pipelines.demo.report import SUMMARY_KEYS

    summary = metrics["summary"]
    assert tuple(summary) == SUMMARY_KEYS and all(type(v) is float for v in summary.values())
    md = (out / "report" / "report.md").read_text()
    for key, value in summary.items():
        assert f"| {key} | {value:.4g} |" in md, key
    # recount from the manifest and the cube, independently of pipelines.evaluation
    world = open_world(out / "world")
    cube = open_cube(out)
    landsat = cube.isel(time=np.flatnonzero(cube["sensor"].values == "landsat"))
    lc = world.truth["landcover"]
    codes = dict(zip(lc.attrs["flag_meanings"].split(), lc.attrs["flag_values"], strict=True))
    water = lc.values == codes["water"]
    clear = landsat["clear"].values & ~water[None]
    usable = clear.sum((1, 2)) / (~water).sum() >= 0.1
    true = np.array([world.scene(str(i))["shift"] for i in landsat["item_id"].values])
    applied = np.stack([landsat["shift_x"].values, landsat["shift_y"].values], axis=1)
    err = np.hypot(*(applied - true).T)[usable]
    assert summary["shift_rmse_m"] == pytest.approx(np.sqrt(np.mean(err**2)))
    registered = ~landsat["shift_flagged"].values[usable]
    assert summary["coregistered_fraction"] == pytest.approx(registered.mean())
    # every usable scene of the tiny world is registered well within the 3 m
    assert summary["coregistered_fraction"] == 1.0 and summary["shift_rmse_m"] < 3.0
    # the ratios are the RMSEs'
    assert summary["fused_vs_s2_plain_all"] == pytest.approx(
        summary["ndvi_rmse_fused_all"] / summary["ndvi_rmse_s2_plain_all"]
    )
    assert summary["ndvi_rmse_s2_best_all"] <= summary["ndvi_rmse_s2_plain_all"]
    assert summary["clear_obs_gain"] > 0
    # the interactive map is linked from the report
    assert (out / "report" / "map.html").stat().st_size > 0 and "href='map.html'" in (
        out / "report" / "report.html"
    ).read_text()


def test_demo_with_the_report_runs_classify_and_the_baseline_beside(tiny_demo, tmp_path, monkeypatch):
    """``run_demo(report=True)``: the report's fitted linear baseline and its parts that need no
    model are made in a side process while training runs (the report makes none of them
    again, and they are what a serial run gives), the classify stage runs beside the report
    (timings.json says so, its section is in the report), and the report has every section."""
    import shutil
    import threading

    from harmonize.world import open_world
    from pipelines import demo
    from pipelines.core.stores import read_index
    from pipelines.demo import run
    from pipelines.evaluation import harmonization

    out = Path(shutil.copytree(tiny_demo, tmp_path / "demo"))
    calls: dict[str, list[tuple[str, bool]]] = {"side work": [], "classify": [], "in this process": []}
    training = threading.Event()

    def spy(name, fn):
        def call(*args, **kwargs):
            calls[name].append((threading.current_thread().name, training.is_set()))
            return fn(*args, **kwargs)
        return call

    def train_stage(*args, **kwargs):
        training.set()
        try:
            return stage(*args, **kwargs)
        finally:
            training.clear()

    stage = run.train_stage
    monkeypatch.setattr(run, "train_stage", train_stage)
    monkeypatch.setattr(run, "_start_side_work", spy("side work", run._start_side_work))
    monkeypatch.setattr(run, "classify_demo", spy("classify", run.classify_demo))
    # the fit and the windows' reads, were this process (the report, say) to make them
    monkeypatch.setattr(run, "fit_on_training_blocks", spy("in this process", run.fit_on_training_blocks))
    for name in ("calibration_windows", "baseline_windows", "fit_on_training_blocks"):
        monkeypatch.setattr(harmonization, name, spy("in this process", getattr(harmonization, name)))
    # other training settings than the fixture's: the model is trained again, beside the side work
    train = {"epochs": 2, "max_batches_per_epoch": 2, "lr": 2e-3}
    result = demo.run_demo(out, tiny=True, train=train, train_seconds=30, report=True)

    assert result == out / "report" / "report.html" and result.stat().st_size > 0
    stages = json.loads((out / "demo.json").read_text())["stages"]
    assert not stages["train"]["up_to_date"] and stages["classify"]["up_to_date"] is False
    # started at an epoch's end (training went on), and again after it (a no-op)
    assert calls["side work"][0] == ("MainThread", True) and len(calls["side work"]) >= 2
    assert calls["in this process"] == []  # the side process made them, the report none again
    assert [name.startswith("beside") for name, _ in calls["classify"]] == [True]
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    serial = harmonization.fit_on_training_blocks(demo.open_cube(out), read_index(out / "pairs"))
    assert metrics["harmonization"]["fitted_linear"] == json.loads(json.dumps(serial.to_dict()))
    timings = json.loads((out / "timings.json").read_text())
    assert timings["stages"]["classify"].get("beside") == "report"
    assert "cpu_s" not in timings["stages"]["classify"] and timings["stages"]["report"]["cpu_s"] > 0
    own = [s["wall_s"] for n, s in timings["stages"].items() if n != "classify"]
    assert timings["total"]["wall_s"] == pytest.approx(sum(own), abs=0.02)
    md = (out / "report" / "report.md").read_text()
    for heading in ("## Harmonization against truth", "## Crop-type map", "## Gap-filled NDVI against truth",
                    "## Co-registration against the injected shifts", "## Calibrated uncertainty",
                    "## What Landsat adds"):
        assert heading in md, heading
    _check_summary(out, metrics)  # co-registration recounted from the manifest, clear-observation gain
    # the harmonization table from the windows read beside training is the one read here, serially
    harm = metrics["harmonization"]
    model = next(k for k in harm["table"] if k.startswith("UNet"))
    table, _ = harmonization.harmonization_table(
        demo.open_cube(out), read_index(out / "pairs"), open_world(out / "world").truth,
        {model: demo.open_harmonized(out)}, fitted=serial, opensr=True,
        landsat_phase=tuple(harm["landsat_phase"]),
    )
    pd.testing.assert_frame_equal(pd.DataFrame.from_dict(harm["table"], orient="index"), table)
