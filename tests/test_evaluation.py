"""Scoring against a simulated world's truth (pipelines.evaluation), on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from harmonize.errors import CRSMismatchError

GEOBOX = GeoBox.from_bbox((500000, 4000000, 500050, 4000040), crs="EPSG:32633", resolution=10)  # 4 x 5


def test_observation_error_table_against_known_errors(tmp_path):
    """Observations that are the truth score 0; a sensor offset by +0.05 NDVI scores 0.05."""
    from harmonize.indices import ndvi
    from harmonize.world import WorldConfig, create_world
    from pipelines.evaluation.timeseries import observation_error_table

    truth = create_world(tmp_path / "w", WorldConfig.tiny()).truth
    tn = ndvi(truth).astype("float32")
    t = tn["time"].values
    s2 = tn.isel(time=slice(0, None, 2)).assign_coords(sensor=("time", ["sentinel-2"] * len(t[::2])))
    ls = (tn.isel(time=slice(1, None, 2)) + 0.05).assign_coords(sensor=("time", ["landsat"] * len(t[1::2])))
    fused = xr.concat([s2, ls], dim="time").sortby("time")
    table = observation_error_table({"S2 only": s2, "S2 + offset Landsat": fused}, truth)
    assert list(table.index) == ["Sentinel-2", "offset Landsat"]
    assert table.loc["Sentinel-2", "NDVI RMSE"] < 1e-6
    finite = np.isfinite(tn.values[1::2])
    assert table.loc["offset Landsat", "pixel-dates"] == finite.sum()
    for col in ("NDVI RMSE", "NDVI RMSE land", "NDVI RMSE interior", "bias"):
        assert table.loc["offset Landsat", col] == pytest.approx(0.05, abs=1e-5), col


def test_ndvi_rmse_against_truth_known_offset():
    from pipelines.evaluation.timeseries import ndvi_rmse_against_truth

    t_truth = pd.date_range("2023-01-01", periods=60, freq="1D")
    truth = xr.DataArray(
        np.linspace(0.1, 0.7, 60)[:, None, None] * np.ones((1, *GEOBOX.shape)),
        dims=("time", "y", "x"),
        coords={"time": t_truth, **xr_coords(GEOBOX)},
    )
    filled = (truth.isel(time=slice(None, None, 5)) + 0.05).chunk({"y": 2})
    filled[:, 0, 0] = np.nan
    res = ndvi_rmse_against_truth(filled, truth)
    assert res["rmse"] == pytest.approx(0.05, abs=1e-9)
    assert res["bias"] == pytest.approx(0.05, abs=1e-9)
    n_pixels = GEOBOX.shape[0] * GEOBOX.shape[1]
    n_days = 56  # 2023-01-01 .. 2023-02-25, the filled span
    assert res["n"] == n_days * (n_pixels - 1)
    assert res["coverage"] == pytest.approx((n_pixels - 1) / n_pixels)
    with pytest.raises(CRSMismatchError):
        ndvi_rmse_against_truth(filled, truth.isel(x=slice(0, 2)))
