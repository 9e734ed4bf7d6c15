"""The load benchmark runs end to end on a tiny world, stackstac (on pandas 3) included; the
infer benchmark reports its ratios and memory runs on tiny scenes; the scale benchmark measures
every demo stage of a tiny world in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_load_benchmark_runs_on_a_tiny_world(tmp_path: Path) -> None:
    pytest.importorskip("stackstac")  # the bench extra
    from harmonize.world import WorldConfig, create_world
    from pipelines.benchmarks.load import run

    # the tiny world's first 6 days (2 Sentinel-2 scenes, 1 Landsat): every reader, a third the reads
    world = create_world(tmp_path / "world", WorldConfig.tiny(end="2023-05-06"), progress=False)
    doc = run(["--world", str(world.root), "--repeat", "1", "--chunk", "64"])
    assert doc["asset_reads"] > 0 and doc["grid"]["shape"] == list(world.geobox.shape)
    for reader in ("rasterio", "cube", "cube_dn", "cube_warp", "stackstac"):
        assert doc[reader]["seconds"] > 0 and doc[reader]["mpix_per_s"] > 0, reader
    assert doc["cube_vs_stackstac"] > 0 and doc["cube_vs_cube_warp"] > 0


def test_infer_benchmark_reports_both_ratios_and_partial_memory_runs() -> None:
    from pipelines.benchmarks.infer import run

    doc = run(
        ["--models", "tiny", "--size", "64", "--chunk", "64", "--repeat", "1"]
        + ["--memory-sizes", "192", "--memory-model", "tiny", "--memory-regions", "1"]
    )
    (tp,) = doc["throughput"]
    # (seconds are rounded to 10 ms in the document, too coarse to recompute the ratios from)
    assert tp["ratio"] > 0 and tp["ratio_cpu"] > 0
    (mem,) = doc["memory"]
    # 192 px in 64-px chunks: 3 rows of regions two chunks wide (64 + 128 px); the first ran
    assert mem["regions_computed"] == "1 of 6", mem
    assert mem["peak_rss_mib"] >= mem["rss_before_compute_mib"] > 0


@pytest.mark.slow  # every stage in its own process: ~55 CPU s
def test_scale_benchmark_measures_every_stage_of_a_tiny_world(tmp_path: Path) -> None:
    from harmonize.world import WorldConfig
    from pipelines.benchmarks.scale import STAGES

    tiny = WorldConfig.tiny()
    args = ["--sizes", "1.28", "--start", str(tiny.start), "--end", str(tiny.end), "--train-steps", "1"]
    # As a user runs it, in a process of its own: the benchmark forks one child per stage, and a
    # fork of this test process (dask and torch threads started by earlier tests) is not what
    # the command meets.
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.benchmarks", "scale", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout[proc.stdout.index('{\n  "benchmark"') :])
    (size,) = doc["sizes"]
    assert size["complete"], size["stages"]
    # the tiny world's manifest: 10 Sentinel-2 and 6 Landsat dates (each with its Level-1 pan)
    assert size["scenes"] == {"sentinel-2": 10, "landsat": 6, "landsat_l1_pan": 6, "items": 22, "steps": 16}
    assert size["pixels"] == "128x128" and size["mpx"] == 0.016
    assert list(size["stages"]) == list(STAGES)
    for name, fig in size["stages"].items():
        assert fig["wall_s"] > 0 and fig["cpu_s"] > 0, name
        assert fig["rss_peak_mb"] >= fig["rss_at_start_mb"] > 0, name
        assert fig["rss_tree_peak_mb"] >= fig["rss_peak_mb"], name
    stages = size["stages"]
    assert stages["ingest"]["report"]["n_committed"] == 16  # one store per date
    assert stages["infer"]["report"]["n_committed"] == 6  # one per Landsat date
    per = stages["infer"]["cpu_s_per_mpx_scene"]
    assert per * (128 * 128 / 1e6) * 6 == pytest.approx(stages["infer"]["cpu_s"], rel=0.01)
    assert set(doc["memory"]) == set(STAGES)
    assert size["path"] is None and not any(tmp_path.iterdir())  # the world is deleted once measured


def test_scale_marginal_costs_cancel_the_fixed_part() -> None:
    from pipelines.benchmarks.scale import _marginal

    def size(km: float, mpx: float, cpu: float, rss: float) -> dict:
        stage = {"cpu_s": cpu, "wall_s": cpu, "rss_peak_mb": rss}
        return {"size_km": km, "mpx": mpx, "scenes": {"items": 10}, "stages": {"ingest": stage}}

    # cost = 5 s fixed + 2 s per Mpx-item over 10 items; memory 300 MB + 50 MB per Mpx
    sizes = [size(1.0, m, 5 + 2 * m * 10, 300 + 50 * m) for m in (1.0, 4.0)]
    (step,) = _marginal(sizes, ["ingest", "infer"])["ingest"]
    assert step["cpu_s_per_mpx_scene"] == 2.0 and step["cpu_s_per_mpx"] == 20.0
    assert step["rss_mb_per_mpx"] == 50.0
