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


def test_observation_error_table_against_known_errors(tiny_world):
    """Observations that are the truth score 0; a sensor offset by +0.05 NDVI scores 0.05."""
    from harmonize.indices import ndvi
    from pipelines.evaluation.timeseries import observation_error_table

    truth = tiny_world.truth
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


def _shifted_identity(offset: float):
    """The untrained residual UNet (the identity on the reflectance bands) plus ``offset``."""
    from harmonize.model import build_model

    model = build_model("tiny").eval()
    model.set_normalization(output_offset=[offset] * 6)
    return model


@pytest.fixture
def one_torch_thread():
    """Tiny forwards run faster on one thread than on two contended ones."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_calibration_table_coverage_and_recalibration_on_a_known_spread(one_torch_thread):
    """Two members at input ± d: mean = input, σ = d; truth = input + N(0, (2d)²), so ±1σ covers
    P(|z| < 1/2) = 38.3 % and ±2σ 68.3 %; the σ scale fitted on validation windows is 2 and the
    test coverage after it nominal."""
    from math import erf, sqrt

    from pipelines.evaluation.harmonization import calibration_table

    d, size, patch = 0.01, 48, 16
    rng = np.random.default_rng(0)
    gb = GeoBox.from_bbox((500000, 4000000, 500000 + 10 * size, 4000000 + 10 * size), crs="EPSG:32633",
                          resolution=10)
    bands = ("blue", "green", "red", "nir", "swir16", "swir22")
    x = rng.uniform(0.05, 0.4, (7, size, size)).astype("float32")
    t_l, t_s = pd.Timestamp("2023-05-01T10:30"), pd.Timestamp("2023-05-01T10:40")
    cube = xr.Dataset(
        {**{b: (("time", "y", "x"), x[None, i]) for i, b in enumerate((*bands, "pan"))},
         "clear": (("time", "y", "x"), np.ones((1, size, size), bool))},
        coords={"time": [t_l], **xr_coords(gb), "sensor": ("time", ["landsat"])},
    )
    truth_vals = x[:6] + rng.normal(0.0, 2 * d, (6, size, size)).astype("float32")
    truth = xr.Dataset({b: (("time", "y", "x"), truth_vals[None, i]) for i, b in enumerate(bands)},
                       coords={"time": [t_s.normalize()], **xr_coords(gb)})
    rows = [{"y0": y0, "x0": x0, "landsat_time": t_l, "s2_time": t_s, "split": "test" if y0 < 32 else "val"}
            for y0 in range(0, size, patch) for x0 in range(0, size, patch)]
    index = pd.DataFrame(rows)
    index.attrs["config"] = {"patch_size": patch}
    members = {"pair": {"model": [_shifted_identity(d), _shifted_identity(-d)], "uncertainty": "ensemble"}}
    table, details = calibration_table(cube, index, truth, members, halo=8)
    row = table.loc["pair"]
    assert details["windows"] == 6 and details["val_windows"] == 3
    assert row["median σ"] == pytest.approx(d, rel=1e-3)
    assert row["±1σ"] == pytest.approx(erf(0.5 / sqrt(2)), abs=0.01)
    assert row["±2σ"] == pytest.approx(erf(1 / sqrt(2)), abs=0.01)
    # a quantile per band and interval of 768 validation pixels (split-conformal): over 200
    # draws of this case the ±1σ coverage after it is 68.4 % ± 0.9 (one sd), ±2σ 95.7 % ± 0.3
    assert row["σ scale ±1σ"] == pytest.approx(2.0, rel=0.05)
    assert row["σ scale ±2σ"] == pytest.approx(2.0, rel=0.05)
    assert row["±1σ recalibrated"] == pytest.approx(0.683, abs=0.027)
    assert row["±2σ recalibrated"] == pytest.approx(0.954, abs=0.01)
    # a calibrated spread (truth noise = σ) is left alone
    truth2 = truth.copy(data={b: (x[None, i] + rng.normal(0.0, d, (1, size, size))).astype("float32")
                              for i, b in enumerate(bands)})
    table2, details2 = calibration_table(cube, index, truth2, members, halo=8)
    assert not details2["methods"]["pair"]["recalibrated"] and table2.loc["pair", "σ scale"] == 1.0
    # the windows read beforehand (as the demo does while training) give the same table; read
    # for other settings, they are not used
    from pipelines.evaluation.harmonization import calibration_windows

    ahead = calibration_windows(cube, index, truth, max_windows=64, val_windows=32)
    assert ahead["n_test"] == 6 and len(ahead["x"]) == 9
    for given in (ahead, {**ahead, "x": ahead["x"] * 0, "val_windows": 5}):
        again, _ = calibration_table(cube, index, truth, members, halo=8, inputs=given)
        pd.testing.assert_frame_equal(again, table)
    used, _ = calibration_table(cube, index, truth, members, halo=8, inputs={**ahead, "x": ahead["x"] * 0})
    assert used.loc["pair", "±1σ"] != table.loc["pair", "±1σ"]  # the windows given are the ones scored


def test_window_phases_follow_the_landsat_grid():
    from pipelines.evaluation.harmonization import window_phases

    windows = pd.DataFrame({"y0": [0, 32, 64, 1], "x0": [0, 32, 96, 2]})
    # Landsat pixels start at cube row 0, column 2: a window at (32, 32) sees them start at
    # its row (0 - 32) % 3 = 1 and column (2 - 32) % 3 = 0
    np.testing.assert_array_equal(window_phases(windows, (0, 2)), [[0, 2], [1, 0], [2, 2], [2, 0]])
    np.testing.assert_array_equal(window_phases(windows), [[0, 0], [1, 1], [2, 0], [2, 1]])
