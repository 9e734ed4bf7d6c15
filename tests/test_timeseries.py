"""Fusion, NDVI series, monthly composites, phenology and accuracy against known truth."""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from harmonize.bands import REFLECTANCE_BANDS
from harmonize.errors import CRSMismatchError
from harmonize.gapfill import TimeSeriesError, gap_fill
from harmonize.phenology import phenology
from harmonize.timeseries import (
    TimeSeriesConfig,
    disagreement,
    fill_ndvi,
    fuse,
    heterogeneity,
    monthly_composite,
    ndvi_series,
    ndvi_timeseries,
    observation_weights,
)

GEOBOX = GeoBox.from_bbox((500000, 4000000, 500050, 4000040), crs="EPSG:32633", resolution=10)  # 4 x 5


def make_cube(
    times,
    sensor: str,
    *,
    seed: int,
    geobox: GeoBox = GEOBOX,
    clear_frac: float = 0.7,
    level: float | None = None,
) -> xr.Dataset:
    """Small lazy cube: band b of time step i at pixel (y, x) = level or a seeded random value."""
    rng = np.random.default_rng(seed)
    times = pd.DatetimeIndex(times)
    shape = (len(times), *geobox.shape)
    coords = {"time": times, **xr_coords(geobox)}
    data = {}
    for k, band in enumerate(REFLECTANCE_BANDS):
        v = (
            rng.uniform(0.02, 0.5, shape).astype(np.float32)
            if level is None
            else np.full(shape, level + 0.01 * k, np.float32)
        )
        data[band] = (("time", "y", "x"), dsa.from_array(v, chunks=(1, 2, 5)))
    data["clear"] = (("time", "y", "x"), dsa.from_array(rng.random(shape) < clear_frac, chunks=(1, 2, 5)))
    ds = xr.Dataset(data, coords=coords)
    return ds.assign_coords(
        sensor=("time", [sensor] * len(times)),
        platform=("time", ["sentinel-2a" if sensor == "sentinel-2" else "landsat-8"] * len(times)),
    )


S2_TIMES = pd.date_range("2023-04-01T10:30", periods=12, freq="5D")
L8_TIMES = pd.DatetimeIndex(["2023-04-06T10:05", "2023-04-22T10:05", "2023-05-08T10:05"])  # 04-06 shared


def test_fuse_orders_labels_and_masks():
    s2, l8 = make_cube(S2_TIMES, "sentinel-2", seed=1), make_cube(L8_TIMES, "landsat", seed=2)
    fused = fuse(s2, l8)
    assert isinstance(fused["red"].data, dsa.Array)  # lazy
    assert fused.sizes["time"] == 15
    t = fused["time"].values
    assert (np.diff(t) >= np.timedelta64(0)).all()
    # Every step is labelled with its own sensor and keeps its acquisition time.
    got = dict(zip(t, fused["sensor"].values, strict=True))
    assert all(got[np.datetime64(x)] == "sentinel-2" for x in S2_TIMES)
    assert all(got[np.datetime64(x)] == "landsat" for x in L8_TIMES)
    # Same day: two separate steps, Landsat (10:05) before Sentinel-2 (10:30).
    day = fused.sel(time=slice("2023-04-06", "2023-04-06T23:59"))
    assert list(day["sensor"].values) == ["landsat", "sentinel-2"]
    # NaN exactly where not clear; values unchanged where clear.
    f = fused.compute()
    for src in (s2, l8):
        sub = f.sel(time=src["time"].values)
        clear = src["clear"].values
        np.testing.assert_array_equal(np.isnan(sub["nir"].values), ~clear)
        np.testing.assert_array_equal(sub["nir"].values[clear], src["nir"].values[clear])
        np.testing.assert_array_equal(sub["clear"].values, clear)
    assert fused.odc.geobox == GEOBOX


def test_fuse_same_day_rules():
    s2 = make_cube(S2_TIMES[:3], "sentinel-2", seed=3, level=0.2)
    l8 = make_cube(L8_TIMES[:1], "landsat", seed=4, level=0.4)
    s2_clear = s2["clear"].values[1]  # 2023-04-06
    l8_clear = l8["clear"].values[0]
    mean = fuse(s2, l8, same_day="mean").compute()
    assert mean.sizes["time"] == 3
    step = mean.isel(time=1)
    assert step["sensor"].item() == "sentinel-2+landsat"
    assert step["time"].values == np.datetime64(S2_TIMES[1])
    red = step["blue"].values  # blue carries the level itself (band k adds 0.01 k)
    np.testing.assert_allclose(red[s2_clear & l8_clear], 0.3, atol=1e-6)
    np.testing.assert_allclose(red[s2_clear & ~l8_clear], 0.2, atol=1e-6)
    np.testing.assert_allclose(red[~s2_clear & l8_clear], 0.4, atol=1e-6)
    assert np.isnan(red[~s2_clear & ~l8_clear]).all()
    prefer = fuse(s2, l8, same_day="prefer-s2").isel(time=1).compute()
    red = prefer["blue"].values
    np.testing.assert_allclose(red[s2_clear], 0.2, atol=1e-6)
    np.testing.assert_allclose(red[~s2_clear & l8_clear], 0.4, atol=1e-6)
    np.testing.assert_array_equal(prefer["clear"].values, s2_clear | l8_clear)


def test_fuse_refuses_other_grids():
    s2 = make_cube(S2_TIMES[:2], "sentinel-2", seed=5)
    other_crs = GeoBox.from_bbox((500000, 4000000, 500050, 4000040), crs="EPSG:32634", resolution=10)
    with pytest.raises(CRSMismatchError, match="reproject"):
        fuse(s2, make_cube(L8_TIMES[:1], "landsat", seed=6, geobox=other_crs))
    shifted = GeoBox.from_bbox((500005, 4000000, 500055, 4000040), crs="EPSG:32633", resolution=10)
    with pytest.raises(CRSMismatchError, match="different pixel grids"):
        fuse(s2, make_cube(L8_TIMES[:1], "landsat", seed=6, geobox=shifted))
    with pytest.raises(TimeSeriesError, match="same_day"):
        fuse(s2, make_cube(L8_TIMES[:1], "landsat", seed=6), same_day="median")


def test_ndvi_series_and_monthly_median():
    times = pd.DatetimeIndex(["2023-04-02", "2023-04-12", "2023-04-22", "2023-05-03", "2023-05-20"])
    ds = make_cube(times, "sentinel-2", seed=7, clear_frac=1.0)
    nir = np.array([0.5, 0.3, 0.4, 0.2, 0.6], np.float32)[:, None, None] * np.ones(GEOBOX.shape, np.float32)
    ds["nir"] = (("time", "y", "x"), nir)
    ds["red"] = xr.full_like(ds["nir"], 0.1)
    clear = np.ones((5, *GEOBOX.shape), bool)
    clear[0, 0, 0] = False  # April at pixel (0, 0): median of 0.3 and 0.4 only
    ds["clear"] = (("time", "y", "x"), clear)
    nd = ndvi_series(ds).compute()
    assert np.isnan(nd.values[0, 0, 0])
    np.testing.assert_allclose(nd.values[1, 1, 1], (0.3 - 0.1) / (0.3 + 0.1), rtol=1e-6)
    comp = monthly_composite(ds).compute()
    assert list(pd.DatetimeIndex(comp.time.values).month) == [4, 5]
    np.testing.assert_allclose(comp["nir"].values[0, 1, 1], 0.4, rtol=1e-6)
    np.testing.assert_allclose(comp["nir"].values[0, 0, 0], 0.35, rtol=1e-6)
    np.testing.assert_allclose(comp["nir"].values[1, 2, 2], 0.4, rtol=1e-6)
    assert comp["n_obs"].values[0, 0, 0] == 2 and comp["n_obs"].values[0, 1, 1] == 3
    nd_comp = monthly_composite(nd).compute()
    np.testing.assert_allclose(
        nd_comp.values[1, 0, 0], np.median([(0.2 - 0.1) / 0.3, (0.6 - 0.1) / 0.7]), rtol=1e-6
    )


def double_logistic(doy, sos, eos, lo=0.15, hi=0.85, k=0.12):
    return lo + (hi - lo) * (1 / (1 + np.exp(-k * (doy - sos))) + 1 / (1 + np.exp(k * (doy - eos))) - 1)


def test_phenology_recovers_sos_eos_from_gapped_fused_series():
    rng = np.random.default_rng(8)
    sos = np.array([[95.0, 120.0, 140.0], [110.0, 130.0, 100.0]])
    eos = sos + np.array([[150.0, 140.0, 120.0], [160.0, 130.0, 170.0]])
    gb = GeoBox.from_bbox((500000, 4000000, 500030, 4000020), crs="EPSG:32633", resolution=10)
    # Sentinel-2 every 5 days and Landsat every 16 days through 2023, 40 % cloudy.
    t = (
        pd.date_range("2023-01-03T10:30", "2023-12-30", freq="5D")
        .append(pd.date_range("2023-01-09T10:05", "2023-12-30", freq="16D"))
        .sort_values()
    )
    doy = np.asarray(t.day_of_year + t.hour / 24.0, dtype=float)
    v = double_logistic(doy[:, None, None], sos[None], eos[None]).astype(np.float32)
    v[rng.random(v.shape) < 0.4] = np.nan
    obs = xr.DataArray(v, dims=("time", "y", "x"), coords={"time": t, **xr_coords(gb)}).chunk({"x": 2})
    filled = gap_fill(obs, method="linear", freq="1D", start="2023-01-01", end="2023-12-31")
    ph = phenology(filled)
    assert isinstance(ph["sos"].data, dsa.Array)
    ph = ph.compute()
    np.testing.assert_allclose(ph["sos"].values, sos, atol=3.0)
    np.testing.assert_allclose(ph["eos"].values, eos, atol=3.0)
    np.testing.assert_allclose(ph["los"].values, eos - sos, atol=5.0)
    np.testing.assert_allclose(ph["pos"].values, (sos + eos) / 2, atol=8.0)
    np.testing.assert_allclose(ph["peak_ndvi"].values, double_logistic((sos + eos) / 2, sos, eos), atol=0.02)
    assert ph.odc.geobox == gb


def test_phenology_of_flat_or_empty_pixels_is_nan():
    t = pd.date_range("2023-01-01", periods=30, freq="10D")
    v = np.full((30, 1, 2), 0.3, np.float32)
    v[:, 0, 1] = np.nan
    ph = phenology(xr.DataArray(v, dims=("time", "y", "x"), coords={"time": t}))
    assert np.isnan(ph["sos"].values).all() and np.isnan(ph["eos"].values).all()


def _ndvi_cube(times, sensor, truth_fn, *, clear_frac, seed) -> xr.Dataset:
    """Cube whose red/nir give exactly truth_fn(doy) as NDVI where clear, cloud-bright elsewhere."""
    rng = np.random.default_rng(seed)
    times = pd.DatetimeIndex(times)
    doy = np.asarray(times.day_of_year, float)[:, None, None]
    nd = truth_fn(doy) * np.ones((1, *GEOBOX.shape))
    red = np.full(nd.shape, 0.05, np.float32)
    nir = (red * (1 + nd) / (1 - nd)).astype(np.float32)
    clear = rng.random(nd.shape) < clear_frac
    data = {b: (("time", "y", "x"), np.full(nd.shape, 0.1, np.float32)) for b in REFLECTANCE_BANDS}
    data["red"] = (("time", "y", "x"), np.where(clear, red, 0.6).astype(np.float32))
    data["nir"] = (("time", "y", "x"), np.where(clear, nir, 0.62).astype(np.float32))
    data["clear"] = (("time", "y", "x"), clear)
    ds = xr.Dataset(data, coords={"time": times, **xr_coords(GEOBOX)}).chunk({"y": 2})
    return ds.assign_coords(sensor=("time", [sensor] * len(times)))


def test_ndvi_timeseries_adding_landsat_lowers_error_against_truth():
    from pipelines.evaluation.timeseries import ndvi_rmse_against_truth

    curve = lambda d: double_logistic(d, 120.0, 260.0)  # noqa: E731
    s2 = _ndvi_cube(
        pd.date_range("2023-01-02T10:30", "2023-12-31", freq="5D"),
        "sentinel-2",
        curve,
        clear_frac=0.25,
        seed=9,
    )
    l8 = _ndvi_cube(
        pd.date_range("2023-01-05T10:05", "2023-12-31", freq="8D"), "landsat", curve, clear_frac=0.6, seed=10
    )
    truth_t = pd.date_range("2023-02-01", "2023-11-30", freq="1D")
    truth = xr.DataArray(
        curve(np.asarray(truth_t.day_of_year, float))[:, None, None] * np.ones((1, *GEOBOX.shape)),
        dims=("time", "y", "x"),
        coords={"time": truth_t, **xr_coords(GEOBOX)},
    )
    cfg = TimeSeriesConfig(method="linear", max_gap=120, start="2023-01-01", end="2023-12-31")
    obs_s2, filled_s2 = ndvi_timeseries(s2, config=cfg)
    obs_both, filled_both = ndvi_timeseries(s2, l8, config=cfg)
    assert set(obs_both["sensor"].values) == {"sentinel-2", "landsat"}
    np.testing.assert_array_equal(
        filled_both["n_obs"].values, s2["clear"].values.sum(0) + l8["clear"].values.sum(0)
    )
    # Clear observations carry the true NDVI; cloudy ones are gone.
    np.testing.assert_allclose(
        obs_both.values[np.isfinite(obs_both.values)],
        curve(np.asarray(pd.DatetimeIndex(obs_both.time.values).day_of_year, float))[
            np.nonzero(np.isfinite(obs_both.values))[0]
        ],
        atol=1e-5,
    )
    only = ndvi_rmse_against_truth(filled_s2, truth)
    both = ndvi_rmse_against_truth(filled_both, truth)
    assert both["rmse"] < only["rmse"]
    assert both["rmse"] < 0.03
    assert both["coverage"] >= only["coverage"]


def test_timeseries_config_yaml_and_errors(tmp_path):
    path = tmp_path / "ts.yaml"
    path.write_text("method: rbf\nsigmas: [5, 10]\nmax_gap: 30D\n")
    cfg = TimeSeriesConfig.from_yaml(path, freq="10D", lmbda=None)
    assert cfg.method == "rbf" and cfg.sigmas == (5.0, 10.0) and cfg.freq == "10D" and cfg.lmbda == "gcv"
    assert cfg.gap_fill_kwargs()["max_gap"] == "30D"
    assert TimeSeriesConfig.build(lmbda=300).lmbda == 300.0
    assert "weights" not in cfg.gap_fill_kwargs()  # stage settings, not gap_fill arguments
    with pytest.raises(TimeSeriesError, match="Invalid"):
        TimeSeriesConfig.build(lmbda="auto")
    with pytest.raises(TimeSeriesError, match="Invalid"):
        TimeSeriesConfig.build(method="cubic")
    with pytest.raises(TimeSeriesError, match="Invalid"):
        TimeSeriesConfig.from_yaml(path, unknown_flag=1)


def test_fuse_and_plot_cubes_read_back_from_zarr(tmp_path):
    # Zarr gives string coordinates back as numpy's StringDType, which .astype(str) refuses.
    from harmonize.plot import plot_clear_observations

    s2 = make_cube(S2_TIMES[:4], "sentinel-2", seed=11)
    l8 = make_cube(L8_TIMES[:1], "landsat", seed=12)
    for name, ds in (("s2", s2), ("l8", l8)):
        ds.assign_coords(sensor=ds.sensor.astype(object), platform=ds.platform.astype(object)).to_zarr(
            tmp_path / f"{name}.zarr", mode="w"
        )
    s2z, l8z = (xr.open_zarr(tmp_path / f"{n}.zarr") for n in ("s2", "l8"))
    fused = fuse(s2z, l8z, same_day="mean")
    assert list(fused["sensor"].values) == ["sentinel-2", "sentinel-2+landsat", "sentinel-2", "sentinel-2"]
    assert fused.odc.geobox == GEOBOX
    fig = plot_clear_observations(fuse(s2z, l8z))
    assert {c.get_label() for c in fig.axes[0].containers} == {"Sentinel-2", "Landsat (harmonized)"}


# --------------------------------------------------------------------------------------------
# observation weights


def _edge_scene(n_s2: int = 20, n_l8: int = 8, seed: int = 30):
    """Two parcels meeting at column 6 of a 6 x 12 grid: NDVI 0.8 | 0.2, Sentinel-2 exact, Landsat
    blurred across the edge like a 30 m pixel (mean of 3 columns) and noisy, some clouds."""
    rng = np.random.default_rng(seed)
    gb = GeoBox.from_bbox((500000, 4000000, 500120, 4000060), crs="EPSG:32633", resolution=10)  # 6 x 12
    scene = np.where(np.arange(12) < 6, 0.8, 0.2)[None, :].repeat(6, 0)
    blurred = np.stack([scene[:, max(c - 1, 0) : c + 2].mean(1) for c in range(12)], axis=1)
    t_s2 = pd.date_range("2023-05-01T10:30", periods=n_s2, freq="5D")
    t_l8 = pd.date_range("2023-05-03T10:05", periods=n_l8, freq="8D")
    s2 = np.broadcast_to(scene, (n_s2, 6, 12)).astype(np.float32).copy()
    l8 = (blurred[None] + rng.normal(0, 0.005, (n_l8, 6, 12))).astype(np.float32)
    s2[rng.random(s2.shape) < 0.2] = np.nan
    times = t_s2.append(t_l8)
    order = np.argsort(times.values, kind="stable")
    sensors = np.array(["sentinel-2"] * n_s2 + ["landsat"] * n_l8)[order]
    data = np.concatenate([s2, l8])[order]
    obs = xr.DataArray(data, dims=("time", "y", "x"), coords={"time": times[order], **xr_coords(gb)})
    return obs.assign_coords(sensor=("time", sensors)).chunk({"time": 7, "y": 3, "x": 6}), scene


def test_heterogeneity_and_weights_find_the_edge():
    obs, scene = _edge_scene()
    s2 = obs.isel(time=np.flatnonzero(obs["sensor"].values == "sentinel-2"))
    het = heterogeneity(s2)
    assert isinstance(het.data, dsa.Array)
    het = het.compute()
    # 3 x 3 windows touching the edge (columns 5 and 6) hold 3 pixels of 0.8 and 0.2 out of 9
    # (or 6 of 9); interiors are uniform. Chunk borders (x = 6) leave no seam.
    edge_std = np.std([0.8] * 6 + [0.2] * 3)
    np.testing.assert_allclose(het.values[:, [5, 6]], edge_std, atol=1e-5)
    np.testing.assert_allclose(het.values[:, [0, 1, 2, 3, 8, 9, 10, 11]], 0.0, atol=1e-6)

    w = observation_weights(obs, disagreement_scale=None)
    assert isinstance(w.data, dsa.Array) and w.dims == ("time", "y", "x")
    w = w.compute()
    is_s2 = obs["sensor"].values == "sentinel-2"
    assert np.all(w.values[is_s2] == 1.0)
    land = w.values[~is_s2]
    np.testing.assert_allclose(land[:, :, 0], 1.0, atol=1e-6)  # interior: Landsat as good as S2
    np.testing.assert_allclose(land[:, :, 5], 1.0 / (1.0 + (edge_std / 0.02) ** 2), rtol=1e-4)

    # Disagreement: Landsat off by the blur at the edge columns, by its noise elsewhere.
    dis = disagreement(obs).compute()
    assert float(dis[:, 5].min()) > 0.15 and float(dis[:, 0].max()) < 0.02
    both = observation_weights(obs).compute().values[~is_s2]
    assert np.all(both[:, :, 5] < land[:, :, 5]) and np.all(both[:, :, 0] > 0.6)


def test_weighted_fill_follows_sentinel2_at_the_edge_and_stays_lazy():
    obs, scene = _edge_scene(n_s2=30, n_l8=12, seed=31)
    kw = dict(method="whittaker", lmbda=30.0, max_gap=200)
    plain = fill_ndvi(obs, weights=False, **kw)
    weighted = fill_ndvi(obs, **kw)
    assert isinstance(weighted.data, dsa.Array) and weighted.attrs.get("gap_fill_weighted") == 1
    truth = scene[None]
    err_plain = np.abs(plain.compute().values - truth)[:, :, 5:7].mean()
    err_weighted = np.abs(weighted.compute().values - truth)[:, :, 5:7].mean()
    assert err_weighted < 0.2 * err_plain
    # Inside the parcels the weights change (almost) nothing.
    np.testing.assert_allclose(weighted.values[:, :, :3], plain.values[:, :, :3], atol=2e-3)
    # A Sentinel-2-only series is filled unweighted.
    s2 = obs.isel(time=np.flatnonzero(obs["sensor"].values == "sentinel-2"))
    assert "gap_fill_weighted" not in fill_ndvi(s2, **kw).attrs
    with pytest.raises(TimeSeriesError, match="No 'sentinel-2' observation"):
        observation_weights(obs.isel(time=np.flatnonzero(obs["sensor"].values == "landsat")))


def test_sharpened_nir_brings_sentinel2_ndvi_closer_to_truth(tiny_world):
    """On the tiny world, S2 NDVI with nir sharpened to 10 m beats 20 m nir against true NDVI."""
    import pystac

    from harmonize.cube import load_cube
    from harmonize.timeseries import fused_ndvi

    items = [pystac.Item.from_dict(d) for d in tiny_world.items()]
    cube = load_cube(items, geobox=tiny_world.geobox, chunks={"time": 1, "y": 64, "x": 64})
    s2 = cube.isel(time=np.flatnonzero(cube["sensor"].values == "sentinel-2"))
    s2 = s2.isel(time=np.flatnonzero(s2["clear"].mean(("y", "x")).values > 0.5))
    assert s2.sizes["time"] >= 2
    lon_hours = pd.Timedelta(hours=float(tiny_world.geobox.extent.centroid.to_crs(4326).points[0][0]) / 15)
    days = [(pd.Timestamp(t) + lon_hours).normalize() for t in s2.time.values]
    truth = tiny_world.truth[["red", "nir"]].sel(time=days, y=s2.y, x=s2.x).compute()
    true_ndvi = ((truth["nir"] - truth["red"]) / (truth["nir"] + truth["red"])).values
    raw = fused_ndvi(s2, sharpen_s2_nir=False).values
    sharp = fused_ndvi(s2, sharpen_s2_nir=True).values
    np.testing.assert_array_equal(np.isfinite(raw), np.isfinite(sharp))  # same clear pixels
    ok = np.isfinite(raw)
    assert ok.sum() > 10_000
    rmse = lambda a: float(np.sqrt(np.mean((a[ok] - true_ndvi[ok]) ** 2)))  # noqa: E731
    assert rmse(sharp) < 0.9 * rmse(raw), (rmse(sharp), rmse(raw))
    assert np.abs(sharp[ok]).max() <= 1.0  # the floor at 0 keeps NDVI in range at shores
    assert TimeSeriesConfig().sharpen_s2_nir  # the default: the error it removes is there on every date


def test_sensor_offset_removes_a_landsat_bias_before_filling():
    """Landsat reads the true NDVI curve 0.05 too high at every pixel, Sentinel-2 reads it
    exactly but with long cloudy gaps: uncorrected, the fused fill steps up on Landsat dates;
    with the offset measured against Sentinel-2 (no truth used) it follows the truth."""
    from harmonize.timeseries import fill_inputs, sensor_offset

    curve = lambda d: double_logistic(d, 120.0, 260.0)  # noqa: E731
    rng = np.random.default_rng(3)
    t_s2 = pd.date_range("2023-03-01T10:30", "2023-10-31", freq="5D")
    t_l8 = pd.date_range("2023-03-03T10:05", "2023-10-31", freq="8D")
    doy = lambda t: np.asarray(t.day_of_year, float)  # noqa: E731
    shape = GEOBOX.shape
    s2 = curve(doy(t_s2))[:, None, None] * np.ones((1, *shape)) + rng.normal(0, 0.005, (len(t_s2), *shape))
    s2[rng.random(s2.shape) < 0.5] = np.nan
    l8 = curve(doy(t_l8))[:, None, None] + 0.05 + rng.normal(0, 0.005, (len(t_l8), *shape))
    times = t_s2.append(t_l8)
    order = np.argsort(times.values, kind="stable")
    sensors = np.array(["sentinel-2"] * len(t_s2) + ["landsat"] * len(t_l8))[order]
    obs = xr.DataArray(
        np.concatenate([s2, l8])[order].astype(np.float32),
        dims=("time", "y", "x"),
        coords={"time": times[order], **xr_coords(GEOBOX)},
    ).assign_coords(sensor=("time", sensors))
    obs = obs.chunk({"time": 9, "y": 2})
    off = sensor_offset(obs)
    assert isinstance(off.data, dsa.Array) and off.dims == ("y", "x")
    plain = sensor_offset(obs, prior=0).values
    np.testing.assert_allclose(plain, 0.05, atol=0.006)
    # shrunk towards 0 by 5 pseudo-observations: n / (n + 5) of it with n <= the Landsat dates
    n_l8 = len(t_l8)
    assert np.all(off.values < plain * n_l8 / (n_l8 + 5) + 1e-6) and np.all(off.values > 0.6 * plain)
    corrected, _, _ = fill_inputs(obs, TimeSeriesConfig(offset_prior=0))
    is_l8 = sensors == "landsat"
    np.testing.assert_allclose(
        corrected.values[is_l8], obs.values[is_l8] - sensor_offset(obs, prior=0).values[None], atol=1e-6
    )
    np.testing.assert_array_equal(corrected.values[~is_l8], obs.values[~is_l8])
    kw = dict(method="whittaker", lmbda=100.0, start="2023-03-10", end="2023-10-20", weights=False)
    truth = curve(doy(pd.date_range("2023-03-10", "2023-10-20", freq="5D")))[:, None, None]
    err = lambda f: float(np.sqrt(np.mean((f.values - truth) ** 2)))  # noqa: E731
    biased = err(fill_ndvi(obs, correct_offset=False, **kw))
    fixed = err(fill_ndvi(obs, **kw))
    assert biased > 0.02 and fixed < 0.5 * biased, (biased, fixed)
    with pytest.raises(TimeSeriesError, match="prior"):
        sensor_offset(obs, prior=-1)


def test_fill_inputs_maps_in_one_pass_equal_the_separate_measures():
    """fill_inputs measures offset, disagreement and heterogeneity in one kernel (kept in memory
    for a dask input); each equals the public function it stands for, and the median kernel
    equals numpy's nanmedian (odd, even and empty series)."""
    from harmonize.timeseries import _nanmedian_last, fill_inputs, sensor_offset

    rng = np.random.default_rng(5)
    a = rng.normal(size=(40, 9)).astype(np.float32)
    a[rng.random(a.shape) < 0.4] = np.nan
    a[3] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(a, axis=-1)
    np.testing.assert_allclose(_nanmedian_last(a), expected, rtol=1e-6, equal_nan=True)

    obs, _ = _edge_scene(n_s2=30, n_l8=12, seed=7)
    obs = obs + xr.where(xr.DataArray(obs["sensor"].values == "landsat", dims="time"), 0.03, 0.0)
    obs = obs.astype(np.float32).chunk({"time": -1, "y": 3, "x": 6})
    cfg = TimeSeriesConfig(weight_scale=0.02, lmbda_by_edges=True, disagreement_scale=0.03)
    values, weights, split = fill_inputs(obs, cfg)
    assert isinstance(values.data, dsa.Array) and isinstance(weights.data, dsa.Array)
    is_l8 = obs["sensor"].values == "landsat"
    off = sensor_offset(obs, prior=cfg.offset_prior).compute()
    corrected = obs - xr.where(xr.DataArray(is_l8, dims="time"), off, 0.0)
    np.testing.assert_allclose(values.values, corrected.transpose(*obs.dims).values, atol=1e-6)
    s2 = obs.isel(time=np.flatnonzero(~is_l8))
    het = heterogeneity(s2).compute()
    want = observation_weights(corrected.astype(np.float32), het=het).compute()
    np.testing.assert_allclose(weights.values, want.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(split.values, ~(het.values < cfg.weight_scale))


def test_sharpening_solves_three_guides_in_closed_form_as_lapack_does():
    """The per-pixel 3 x 3 solve of the nir sharpening (closed form) equals numpy.linalg.solve,
    and a block with no valid pixel keeps its input."""
    from harmonize.sharpen import _solve_spd, sharpen_block

    rng = np.random.default_rng(3)
    m = rng.normal(size=(3, 3, 4, 5)) * 0.01
    a = np.einsum("ikyx,jkyx->ijyx", m, m) + 1e-6 * np.eye(3)[:, :, None, None]
    b = rng.normal(size=(3, 2, 4, 5))
    lapack = np.linalg.solve(np.moveaxis(a, (0, 1), (-2, -1)), np.moveaxis(b, (0, 1), (-2, -1)))
    want = np.moveaxis(lapack, (-2, -1), (0, 1))
    np.testing.assert_allclose(_solve_spd(a, b), want, rtol=1e-7, atol=1e-9)
    targets, guides = rng.uniform(0.1, 0.4, (1, 16, 16)), rng.uniform(0.02, 0.2, (3, 16, 16))
    out = sharpen_block(targets, guides, np.zeros((16, 16), bool))
    np.testing.assert_array_equal(out, targets.astype(np.float32))
