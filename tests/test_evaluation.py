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


def _coreg_cube() -> tuple[xr.Dataset, xr.Dataset, dict]:
    """One Sentinel-2 and three Landsat steps on a 4 x 5 grid whose left column is water."""
    coords = xr_coords(GEOBOX)
    times = pd.to_datetime(["2023-01-01", "2023-01-02", "2023-01-10", "2023-01-18"])
    clear = np.zeros((4, *GEOBOX.shape), bool)
    clear[0] = True
    clear[1, :, 1:] = True  # every land pixel clear
    clear[2, 0, 1:3] = True  # 2 of 16 land pixels: 12.5 %
    clear[3, :, 0] = True  # only the water: 0 % of the land
    cube = xr.Dataset(
        {"clear": (("time", "y", "x"), clear)},
        coords={
            "time": times,
            **coords,
            "sensor": ("time", ["sentinel-2", "landsat", "landsat", "landsat"]),
            "item_id": ("time", ["S2A_1", "LC08_1", "LC09_2", "LC08_3"]),
            "shift_x": ("time", [np.nan, 10.0, 0.0, 0.0]),
            "shift_y": ("time", [np.nan, -5.0, 0.0, 0.0]),
            "shift_flagged": ("time", [False, False, True, True]),
        },
    )
    lc = np.ones(GEOBOX.shape, np.uint8)
    lc[:, 0] = 7
    truth = xr.Dataset(
        {"landcover": (("y", "x"), lc, {"flag_values": [1, 7], "flag_meanings": "crop water"})},
        coords=coords,
    )
    manifest = {
        "LC08_1": {"shift": [13.0, -1.0]},
        "LC09_2": {"shift": [6.0, 8.0]},
        "LC08_3": {"shift": [30, 0]},
    }
    return cube, truth, manifest


def test_coregistration_against_a_known_manifest():
    """Applied vs injected shifts: errors, clear land fractions (water left out), the usable
    scenes, and a flagged usable scene counted with its whole injected shift."""
    from pipelines.evaluation.coregistration import coregistration_summary, coregistration_table

    cube, truth, manifest = _coreg_cube()
    table = coregistration_table(cube, manifest, truth)
    assert list(table["item_id"]) == ["LC08_1", "LC09_2", "LC08_3"]
    np.testing.assert_allclose(table["clear_land"], [1.0, 2 / 16, 0.0])
    np.testing.assert_allclose(table["error_m"], [5.0, 10.0, 30.0])  # (3, 4) off; (6, 8); (30, 0)
    got = coregistration_summary(table)
    assert got["usable"] == 2 and got["coregistered"] == 1
    assert got["coregistered_fraction"] == pytest.approx(0.5)
    assert got["shift_rmse_m"] == pytest.approx(np.sqrt((25 + 100) / 2))
    # with the manifest as a lookup function (World.scene) the same
    assert coregistration_table(cube, manifest.__getitem__, truth).equals(table)
    # a stricter usability threshold leaves the 12.5 %-clear scene out
    strict = coregistration_summary(table, min_clear=0.2)
    assert strict["coregistered_fraction"] == 1.0 and strict["shift_rmse_m"] == pytest.approx(5.0)
