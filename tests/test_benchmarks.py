"""The load benchmark runs end to end on a tiny world, stackstac (on pandas 3) included."""

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
