"""Figures are written as readable PNGs and show what they claim (points per sensor, bars per month)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from odc.geo.geobox import GeoBox  # noqa: E402
from odc.geo.xr import xr_coords  # noqa: E402

from harmonize.gapfill import gap_fill  # noqa: E402
from harmonize.plot import plot_clear_observations, plot_ndvi_maps, plot_ndvi_timeseries  # noqa: E402

GEOBOX = GeoBox.from_bbox((500000, 4000000, 500080, 4000060), crs="EPSG:32633", resolution=10)  # 6 x 8


@pytest.fixture(scope="module")
def series() -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    rng = np.random.default_rng(0)
    s2 = pd.date_range("2023-03-01T10:30", "2023-10-31", freq="5D")
    l8 = pd.date_range("2023-03-07T10:05", "2023-10-31", freq="16D")
    t = s2.append(l8)
    sensor = ["sentinel-2"] * len(s2) + ["landsat"] * len(l8)
    order = np.argsort(t.values)
    t, sensor = t[order], np.asarray(sensor)[order]
    doy = np.asarray(t.day_of_year, float)
    xx = np.arange(GEOBOX.shape[1])[None, None, :]
    sos = 110 + 4 * xx
    curve = 0.2 + 0.6 * (
        1 / (1 + np.exp(-0.1 * (doy[:, None, None] - sos)))
        + 1 / (1 + np.exp(0.1 * (doy[:, None, None] - sos - 130)))
        - 1
    )
    curve = np.broadcast_to(curve, (len(t), *GEOBOX.shape)).astype(np.float32)
    obs = np.where(rng.random(curve.shape) < 0.5, np.nan, curve)
    coords = {"time": t, **xr_coords(GEOBOX)}
    obs_da = xr.DataArray(obs, dims=("time", "y", "x"), coords=coords).assign_coords(sensor=("time", sensor))
    truth = xr.DataArray(curve, dims=("time", "y", "x"), coords=coords)
    filled = gap_fill(obs_da, method="whittaker", lmbda=100, freq="5D").compute()
    return obs_da, filled, truth


def _read_png(path) -> np.ndarray:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # not a blank canvas
    return img


def test_timeseries_plot_points_and_fields(series, tmp_path):
    obs, filled, truth = series
    x0, y0 = float(obs.x[1]), float(obs.y[2])
    field = xr.zeros_like(obs.isel(time=0), dtype=bool)
    field[2:5, 4:7] = True
    fig = plot_ndvi_timeseries(
        {"point A": (x0, y0), "field B": field}, obs, filled, truth, path=tmp_path / "ts.png", title="NDVI"
    )
    _read_png(tmp_path / "ts.png")
    ax = fig.axes[0]
    # One scatter per sensor with exactly that sensor's clear observations at the point.
    at = obs.sel(x=x0, y=y0)
    sens = obs["sensor"].values
    counts = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    assert counts["Sentinel-2"] == int(np.isfinite(at.values[sens == "sentinel-2"]).sum())
    assert counts["Landsat (harmonized)"] == int(np.isfinite(at.values[sens == "landsat"]).sum())
    labels = [line.get_label() for line in ax.get_lines()]
    assert "truth" in labels and "filled (whittaker)" in labels
    # The field panel plots the field mean of the filled curve.
    line = [ln for ln in fig.axes[1].get_lines() if ln.get_label().startswith("filled")][0]
    expected = filled.where(field).mean(("y", "x")).values
    np.testing.assert_allclose(line.get_ydata(), expected, equal_nan=True, rtol=1e-6)


def test_maps_and_clear_observation_bars(series, tmp_path):
    obs, filled, _ = series
    fig = plot_ndvi_maps(filled, ["2023-04-01", "2023-06-15", "2023-09-01"], path=tmp_path / "maps.png")
    _read_png(tmp_path / "maps.png")
    assert sum(ax.get_visible() for ax in fig.axes if ax.images) == 3

    clear = obs.notnull().to_dataset(name="clear")
    fig = plot_clear_observations(clear, path=tmp_path / "clear.png")
    _read_png(tmp_path / "clear.png")
    ax = fig.axes[0]
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    months = pd.DatetimeIndex(obs.time.values).to_period("M")
    frac = obs.notnull().mean(("y", "x")).values
    sens = obs["sensor"].values
    june = np.asarray(months == pd.Period("2023-06", "M"))
    month_idx = sorted(set(months)).index(pd.Period("2023-06", "M"))
    assert bars["Sentinel-2"][month_idx] == pytest.approx(frac[june & (sens == "sentinel-2")].sum())
    assert bars["Landsat (harmonized)"][month_idx] == pytest.approx(frac[june & (sens == "landsat")].sum())
