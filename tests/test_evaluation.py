"""Scoring against a simulated world's truth (pipelines.evaluation), on known answers."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr


def test_observation_error_table_against_known_errors(tmp_path):
    """Observations that are the truth score 0; a sensor offset by +0.05 NDVI scores 0.05."""
    from harmonize.indices import ndvi
    from harmonize.world import WorldConfig, create_world
    from pipelines.evaluation import scores as ev

    truth = create_world(tmp_path / "w", WorldConfig.tiny()).truth
    tn = ndvi(truth).astype("float32")
    t = tn["time"].values
    s2 = tn.isel(time=slice(0, None, 2)).assign_coords(sensor=("time", ["sentinel-2"] * len(t[::2])))
    ls = (tn.isel(time=slice(1, None, 2)) + 0.05).assign_coords(sensor=("time", ["landsat"] * len(t[1::2])))
    fused = xr.concat([s2, ls], dim="time").sortby("time")
    table = ev.observation_error_table({"S2 only": s2, "S2 + offset Landsat": fused}, truth)
    assert list(table.index) == ["Sentinel-2", "offset Landsat"]
    assert table.loc["Sentinel-2", "NDVI RMSE"] < 1e-6
    finite = np.isfinite(tn.values[1::2])
    assert table.loc["offset Landsat", "pixel-dates"] == finite.sum()
    for col in ("NDVI RMSE", "NDVI RMSE land", "NDVI RMSE interior", "bias"):
        assert table.loc["offset Landsat", col] == pytest.approx(0.05, abs=1e-5), col
