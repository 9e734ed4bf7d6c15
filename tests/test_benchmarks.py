"""The load benchmark runs end to end on a tiny world, stackstac (on pandas 3) included; the
infer benchmark reports its ratios and memory runs on tiny scenes."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_load_benchmark_runs_on_a_tiny_world(tiny_world) -> None:  # noqa: ANN001
    pytest.importorskip("stackstac")  # the bench extra
    from pipelines.benchmarks.load import run

    doc = run(["--world", str(Path(tiny_world.root)), "--repeat", "1", "--chunk", "64"])
    assert doc["asset_reads"] > 0 and doc["grid"]["shape"] == list(tiny_world.geobox.shape)
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
