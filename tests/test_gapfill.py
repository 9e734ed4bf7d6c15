"""gap_fill against series whose answer is known: lines, sines, constants, smoothing limits."""

from __future__ import annotations

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from scipy import sparse
from scipy.sparse.linalg import spsolve

from harmonize.gapfill import METHODS, TimeSeriesError, gap_fill

GEOBOX = GeoBox.from_bbox((500000, 4000000, 500060, 4000040), crs="EPSG:32633", resolution=10)  # 4 x 6
ORIGIN = pd.Timestamp("2023-01-01")


def days(times) -> np.ndarray:
    return np.asarray((pd.DatetimeIndex(times) - ORIGIN) / pd.Timedelta("1D"), dtype=float)


def cube(values: np.ndarray, times, *, chunks=(-1, 2, 3), sensor="sentinel-2") -> xr.DataArray:
    """(time, y, x) float32 DataArray on GEOBOX, dask-backed."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        values = np.broadcast_to(values[:, None, None], (values.size, *GEOBOX.shape)).copy()
    coords = {"time": pd.DatetimeIndex(times), **xr_coords(GEOBOX)}
    da = xr.DataArray(values, dims=("time", "y", "x"), coords=coords, name="ndvi")
    da = da.assign_coords(sensor=("time", [sensor] * len(times)))
    return da.chunk(dict(zip(da.dims, chunks, strict=True)))


def irregular_times(rng: np.random.Generator, n: int, span: int = 360) -> pd.DatetimeIndex:
    d = np.sort(rng.choice(np.arange(1, span), size=n, replace=False)).astype(float)
    return ORIGIN + pd.to_timedelta(d, "D") + pd.Timedelta("10h30min")


def knock_out(values: np.ndarray, rng: np.random.Generator, frac: float) -> np.ndarray:
    v = np.broadcast_to(values[:, None, None], (values.size, *GEOBOX.shape)).astype(np.float32).copy()
    v[rng.random(v.shape) < frac] = np.nan
    return v


def test_linear_fills_a_linear_series_exactly():
    rng = np.random.default_rng(1)
    t = irregular_times(rng, 50)
    line = lambda d: 0.1 + 0.002 * d  # noqa: E731
    obs = knock_out(line(days(t)), rng, 0.3)
    out = gap_fill(cube(obs, t), method="linear", max_gap=1000).compute()
    d = days(out.time.values)
    inside = (d >= days(t).min() + 30) & (d <= days(t).max() - 30)
    truth = line(d)[inside][:, None, None]
    np.testing.assert_allclose(
        out.values[inside], np.broadcast_to(truth, out.values[inside].shape), atol=1e-5
    )


def test_harmonic_one_mode_recovers_a_sine():
    rng = np.random.default_rng(2)
    t = irregular_times(rng, 40)
    sine = lambda d: 0.45 + 0.3 * np.sin(2 * np.pi * d / 365.25 + 0.7)  # noqa: E731
    obs = knock_out(sine(days(t)), rng, 0.4)
    out = gap_fill(cube(obs, t), method="harmonic", n_harmonics=1, max_gap=1000).compute()
    truth = sine(days(out.time.values))[:, None, None]
    np.testing.assert_allclose(out.values, np.broadcast_to(truth, out.shape), atol=1e-4)


def test_harmonic_equals_least_squares_on_noisy_data():
    rng = np.random.default_rng(15)
    t = irregular_times(rng, 60)
    obs = (0.4 + rng.normal(0, 0.1, (60, *GEOBOX.shape))).astype(np.float32)
    obs[rng.random(obs.shape) < 0.3] = np.nan
    out = gap_fill(cube(obs, t), method="harmonic", n_harmonics=2, period=200.0, max_gap=1000).compute()
    d_in, d_out = days(t), days(out.time.values)

    def design(d):
        w = 2 * np.pi * d / 200.0
        return np.stack([np.ones_like(d), np.cos(w), np.sin(w), np.cos(2 * w), np.sin(2 * w)], axis=1)

    for yy, xx in [(0, 0), (1, 4), (3, 2)]:
        y = obs[:, yy, xx].astype(float)
        ok = np.isfinite(y)
        coef = np.linalg.lstsq(design(d_in[ok]), y[ok], rcond=None)[0]
        np.testing.assert_allclose(out.values[:, yy, xx], design(d_out) @ coef, atol=1e-5)


def _whittaker_reference(y_daily: np.ndarray, w: np.ndarray, lmbda: float) -> np.ndarray:
    L = y_daily.size
    d = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(L - 2, L))
    a = sparse.diags(w) + lmbda * (d.T @ d)
    return spsolve(a.tocsc(), w * np.nan_to_num(y_daily))


def test_whittaker_limits_and_reference_solution():
    rng = np.random.default_rng(3)
    d_obs = np.sort(rng.choice(np.arange(0, 200), size=45, replace=False)).astype(float)
    t = ORIGIN + pd.to_timedelta(d_obs, "D")
    y = (0.5 + 0.2 * np.sin(d_obs / 15.0) + rng.normal(0, 0.03, d_obs.size)).astype(np.float32)
    series = cube(y, t)
    kw = dict(method="whittaker", freq="1D", max_gap=1000, start=ORIGIN, end=t[-1])

    # Tiny lambda: the smoother passes through every observation.
    tiny = gap_fill(series, lmbda=1e-6, **kw).compute()
    at_obs = tiny.sel(time=t).values[:, 0, 0]
    np.testing.assert_allclose(at_obs, y, atol=1e-4)

    # Huge lambda: the second-difference penalty forces the least-squares straight line.
    huge = gap_fill(series, lmbda=1e10, **kw).compute()
    slope, icpt = np.polyfit(d_obs, y.astype(float), 1)
    line = icpt + slope * days(huge.time.values)
    np.testing.assert_allclose(huge.values[:, 1, 2], line, atol=2e-3)

    # Moderate lambda: the vectorised banded solver equals a sparse direct solve.
    mid = gap_fill(series, lmbda=50.0, **kw).compute()
    L = int(d_obs.max()) + 1
    y_daily = np.full(L, np.nan)
    y_daily[d_obs.astype(int)] = y
    ref = _whittaker_reference(y_daily, np.isfinite(y_daily).astype(float), 50.0)
    np.testing.assert_allclose(mid.values[:, 3, 4], ref, atol=1e-5)


def test_rbf_reproduces_a_constant_and_smooths_towards_data():
    rng = np.random.default_rng(4)
    t = irregular_times(rng, 60)
    obs = knock_out(np.full(60, 0.62), rng, 0.5)
    out = gap_fill(cube(obs, t), method="rbf", max_gap=60).compute()
    finite = np.isfinite(out.values)
    assert finite.mean() > 0.9
    np.testing.assert_allclose(out.values[finite], 0.62, atol=1e-6)


def _rbf_reference(t_obs, y, t_out, sigmas, half_width=1.959964):
    """One pixel, loops: FORCE's ensemble of truncated Gaussian kernel means."""
    out = []
    for t in t_out:
        num = den = 0.0
        for s in sigmas:
            k = np.exp(-0.5 * ((t - t_obs) / s) ** 2) * (np.abs(t - t_obs) <= half_width * s)
            ok = np.isfinite(y)
            if k[ok].sum() == 0:
                continue
            est = (k[ok] * y[ok]).sum() / k[ok].sum()
            avail = k[ok].sum() / k.sum()
            num += avail * est
            den += avail
        out.append(num / den if den > 0 else np.nan)
    return np.array(out)


def test_rbf_matches_a_per_pixel_reference():
    rng = np.random.default_rng(14)
    t = irregular_times(rng, 50)
    y = (0.5 + 0.3 * np.sin(days(t) / 30.0) + rng.normal(0, 0.05, 50)).astype(np.float32)
    y[(days(t) > 150) & (days(t) < 185)] = np.nan  # a cloudy month empties the narrow kernel
    out = gap_fill(cube(y, t), method="rbf", max_gap=1000).compute()
    ref = _rbf_reference(days(t), y.astype(float), days(out.time.values), (8.0, 16.0, 32.0))
    np.testing.assert_allclose(out.values[:, 2, 1], ref, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_max_gap_leaves_long_gaps_empty(method):
    # Observations every 5 days, except a 60-day hole between day 100 and day 160.
    d_obs = np.r_[np.arange(0, 101, 5), np.arange(160, 300, 5)].astype(float)
    t = ORIGIN + pd.to_timedelta(d_obs, "D")
    y = 0.3 + 0.001 * d_obs
    series = cube(y, t)
    out = gap_fill(series, method=method, max_gap="45D", lmbda=10.0, n_harmonics=2).compute()
    d = days(out.time.values)
    hole = (d > 100) & (d < 160)
    assert np.isnan(out.values[hole]).all()
    assert np.isfinite(out.values[~hole]).all()
    wide = gap_fill(series, method=method, max_gap=61, lmbda=10.0, n_harmonics=2).compute()
    assert np.isfinite(wide.values).all()
    # Beyond the last observation: allowed for max_gap / 2 only.
    ext = gap_fill(series, method=method, max_gap=20, end=ORIGIN + pd.Timedelta("330D")).compute()
    d = days(ext.time.values)
    assert np.isfinite(ext.values[(d > 295) & (d <= 305)]).all()
    assert np.isnan(ext.values[d > 306]).all()


def test_n_obs_counts_clear_observations():
    rng = np.random.default_rng(5)
    t = irregular_times(rng, 30)
    obs = knock_out(np.linspace(0.2, 0.8, 30), rng, 0.45)
    obs[:, 0, 0] = np.nan  # a pixel never seen
    out = gap_fill(cube(obs, t), method="linear")
    np.testing.assert_array_equal(out["n_obs"].values, np.isfinite(obs).sum(axis=0))
    assert np.isnan(out.values[:, 0, 0]).all()


def _boom(block):
    raise RuntimeError("a chunk was computed")


def test_gap_fill_is_lazy_and_chunked_over_space():
    rng = np.random.default_rng(6)
    t = irregular_times(rng, 12)
    base = dsa.zeros((12, *GEOBOX.shape), chunks=(3, 2, 3), dtype=np.float32)
    poisoned = base.map_blocks(_boom, dtype=np.float32)
    coords = {"time": t, **xr_coords(GEOBOX)}
    da = xr.DataArray(poisoned, dims=("time", "y", "x"), coords=coords)
    for method, kw in [*((m, {}) for m in METHODS), ("whittaker", {"lmbda": "gcv"})]:
        out = gap_fill(da, method=method, **kw)  # builds the graph only, GCV's sample included
        assert isinstance(out.data, dsa.Array)
        assert out.chunks[0] == (out.sizes["time"],)  # time whole in a chunk
        with pytest.raises(RuntimeError, match="a chunk was computed"):
            out.compute()
    # A real cube: computing one spatial chunk reads only the blocks it needs.
    ok = cube(np.linspace(0, 1, 12), t, chunks=(3, 2, 3))
    with dask.config.set(scheduler="sync"):
        part = gap_fill(ok, method="linear").isel(y=slice(0, 2), x=slice(0, 3)).compute()
    assert part.shape[1:] == (2, 3)
    assert out.odc.geobox == GEOBOX  # CRS and grid carried


def test_dataset_masks_with_clear_and_keeps_crs():
    rng = np.random.default_rng(7)
    t = irregular_times(rng, 25)
    red = cube(np.full(25, 0.1), t)
    nir = cube(np.full(25, 0.5), t)
    clear = xr.DataArray(rng.random(red.shape) > 0.3, dims=red.dims, coords=red.coords)
    nir = nir.where(~(rng.random(red.shape) < 0.05))  # an extra missing value in one band
    ds = xr.Dataset({"red": red, "nir": nir, "clear": clear})
    ds["red"] = xr.where(clear, ds["red"], 9.9)  # garbage where not clear must be ignored
    for method in METHODS:
        out = gap_fill(ds, method=method, max_gap=1000).compute()
        assert set(out.data_vars) == {"red", "nir", "n_obs"}
        np.testing.assert_allclose(out["red"].values[np.isfinite(out["red"].values)], 0.1, atol=1e-5)
    expected = (clear.values & np.isfinite(nir.values)).sum(axis=0)
    np.testing.assert_array_equal(out["n_obs"].values, expected)
    assert out.odc.geobox == GEOBOX


def test_same_day_duplicates_and_unsorted_input():
    t = pd.DatetimeIndex(["2023-03-01T10:00", "2023-03-01T10:00", "2023-02-01", "2023-04-01"])
    y = np.array([0.4, 0.6, 0.2, 0.8])
    out = gap_fill(cube(y, t), method="linear", freq="1D").compute()
    assert np.isfinite(out.values).all()
    assert out.time.values[0] == np.datetime64("2023-02-01")
    # Between 2023-02-01 (0.2) and the same-day pair: linear towards one of the pair.
    v = float(out.sel(time="2023-02-15").values[0, 0])
    assert 0.2 < v < 0.6


def test_bad_arguments_raise_named_errors():
    t = pd.date_range("2023-01-01", periods=5, freq="5D")
    series = cube(np.arange(5.0), t)
    with pytest.raises(TimeSeriesError, match="choose one of"):
        gap_fill(series, method="cubic")
    with pytest.raises(TimeSeriesError, match="time"):
        gap_fill(series.isel(time=0), method="linear")
    with pytest.raises(TimeSeriesError, match="duration"):
        gap_fill(series, max_gap="a while")


def test_benchmark_runs_and_fills_close_to_truth():
    from pipelines.benchmarks.timeseries import run

    res = run(["--dates", "36", "--size", "16", "--chunk", "8", "--workers", "1"])
    assert res["cube"]["pixel_time_steps"] == 36 * 16 * 16
    assert set(res["methods"]) == set(METHODS)
    for method, fig in res["methods"].items():
        assert fig["pixel_time_steps_per_s"] > 0
        # Noise sigma is 0.02 NDVI; every method must stay within a few sigma of the true curve.
        assert fig["rmse_vs_truth"] < 0.06, method
        assert fig["filled_fraction"] > 0.9


# --------------------------------------------------------------------------------------------
# observation weights


def _noisy_series(seed: int, n: int = 50):
    rng = np.random.default_rng(seed)
    t = irregular_times(rng, n)
    y = (0.5 + 0.2 * np.sin(days(t) / 40.0) + rng.normal(0, 0.02, n)).astype(np.float32)
    return t, y


@pytest.mark.parametrize("method", METHODS)
def test_uniform_weights_equal_the_unweighted_fit(method):
    t, y = _noisy_series(20)
    obs = knock_out(y, np.random.default_rng(21), 0.3)
    da = cube(obs, t)
    kw = dict(method=method, max_gap=1000, lmbda=50.0)
    plain = gap_fill(da, **kw).compute()
    ones = gap_fill(da, weights=xr.DataArray(np.ones(len(t)), dims="time"), **kw).compute()
    by_sensor = gap_fill(da, weights={"sentinel-2": 1.0}, **kw).compute()
    np.testing.assert_allclose(ones.values, plain.values, atol=1e-6)
    np.testing.assert_allclose(by_sensor.values, plain.values, atol=1e-6)
    if method in ("harmonic", "rbf"):  # only relative weights matter there
        scaled = gap_fill(da, weights={"sentinel-2": 7.0}, **kw).compute()
        np.testing.assert_allclose(scaled.values, plain.values, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_weight_zero_observation_has_no_effect(method):
    t, y = _noisy_series(22)
    k = 25
    spoiled = y.copy()
    spoiled[k] = 5.0  # an outlier the weights must switch off
    w = np.ones((len(t), *GEOBOX.shape))
    w[k] = 0.0
    kw = dict(method=method, max_gap=1000, lmbda=50.0)
    cloudy = y.copy()
    cloudy[k] = np.nan  # weight 0 means "as if not clear" (rbf's availability still counts it)
    without = gap_fill(cube(cloudy, t), **kw)
    zeroed = gap_fill(cube(spoiled, t), weights=xr.DataArray(w, dims=("time", "y", "x")), **kw).compute()
    np.testing.assert_allclose(zeroed.values, without.compute().values, atol=1e-5)
    assert int(zeroed["n_obs"].max()) == len(t) - 1


@pytest.mark.parametrize("method", ["whittaker", "harmonic", "rbf"])
def test_down_weighted_outlier_moves_the_fit_less(method):
    t, y = _noisy_series(23)
    k = 25
    spoiled = y.copy()
    spoiled[k] += 0.5
    sensors = np.array(["sentinel-2"] * len(t), dtype=object)
    sensors[k] = "landsat"
    da = cube(spoiled, t).assign_coords(sensor=("time", sensors.astype(str)))
    kw = dict(method=method, max_gap=1000, lmbda=50.0)
    clean = gap_fill(cube(y, t), **kw).compute()
    full = gap_fill(da, **kw).compute()
    light = gap_fill(da, weights={"sentinel-2": 1.0, "landsat": 0.1}, **kw).compute()
    err_full = np.abs(full - clean).max()
    err_light = np.abs(light - clean).max()
    assert float(err_light) < 0.3 * float(err_full)


def test_weights_stay_lazy_chunked_and_check_their_shape():
    rng = np.random.default_rng(24)
    t = irregular_times(rng, 12)
    base = dsa.zeros((12, *GEOBOX.shape), chunks=(3, 2, 3), dtype=np.float32)
    da = xr.DataArray(base.map_blocks(_boom, dtype=np.float32), dims=("time", "y", "x"),
                      coords={"time": t, **xr_coords(GEOBOX)})
    w = xr.DataArray(dsa.ones((12, *GEOBOX.shape), chunks=(12, 4, 6)), dims=("time", "y", "x"))
    for method in METHODS:
        out = gap_fill(da, method=method, weights=w)
        assert isinstance(out.data, dsa.Array)
        assert out.chunks[0] == (out.sizes["time"],)
        assert out.chunks == gap_fill(da, method=method).chunks  # the data's chunks, not the weights'
        with pytest.raises(RuntimeError, match="a chunk was computed"):
            out.compute()
    # A (y, x) weight map applies to every date; unsorted input keeps weights with their step.
    vals = np.linspace(0, 1, 12)
    ok = cube(vals, t)
    shuffled = ok.isel(time=np.r_[6:12, 0:6])
    wmap = xr.DataArray(np.where(np.arange(12) == 3, 0.0, 1.0), dims="time")
    a = gap_fill(ok, method="linear", weights=wmap).compute()
    b = gap_fill(shuffled, method="linear", weights=wmap.isel(time=np.r_[6:12, 0:6])).compute()
    np.testing.assert_allclose(a.values, b.values)
    assert int(a["n_obs"].max()) == 11
    with pytest.raises(TimeSeriesError, match="steps along 'time'"):
        gap_fill(ok, weights=xr.DataArray(np.ones(5), dims="time"))
    with pytest.raises(TimeSeriesError, match="No weight for sensor 'sentinel-2'"):
        gap_fill(ok, weights={"landsat": 0.5})
    with pytest.raises(TimeSeriesError, match="dimensions"):
        gap_fill(ok, weights=xr.DataArray(np.ones(3), dims="band"))


# --------------------------------------------------------------------------------------------
# lambda by generalized cross-validation


def test_gcv_terms_equal_the_explicit_hat_matrix():
    # white-box: the banded kernels behind whittaker_gcv are gapfill's own, read off the module
    from harmonize import gapfill
    from harmonize.gapfill import whittaker_gcv

    _inverse_diagonal = gapfill._inverse_diagonal
    _pentadiagonal_factor = gapfill._pentadiagonal_factor
    _second_difference_bands = gapfill._second_difference_bands
    rng = np.random.default_rng(40)
    L = 30
    p0, p1, p2 = _second_difference_bands(L)
    w = (rng.random((L, 2)) < 0.5) * rng.uniform(0.3, 2.0, (L, 2))
    lam = 20.0
    diag = w + lam * p0[:, None]
    inv = _inverse_diagonal(*_pentadiagonal_factor(diag.copy(), lam * p1, lam * p2))
    for j in range(2):
        a = sparse.diags([diag[:, j], lam * p1, lam * p1, lam * p2, lam * p2], [0, 1, -1, 2, -2]).toarray()
        np.testing.assert_allclose(inv[:, j], np.diag(np.linalg.inv(a)), rtol=1e-9)
    # whittaker_gcv on daily observations: rss and trace of H = (W + lam P)^-1 W.
    t_obs = np.flatnonzero(w[:, 0] > 0).astype(float)
    y = rng.normal(0.5, 0.1, t_obs.size)
    wts = w[t_obs.astype(int), 0]
    rss, tr, m = whittaker_gcv(y[None], t_obs, [lam], wts[None])
    length = int(t_obs.max() - t_obs.min()) + 1
    q0, q1, q2 = _second_difference_bands(length)
    wd = np.zeros(length)
    wd[(t_obs - t_obs.min()).astype(int)] = wts
    yd = np.zeros(length)
    yd[(t_obs - t_obs.min()).astype(int)] = y
    a = np.diag(wd) + lam * sparse.diags([q0, q1, q1, q2, q2], [0, 1, -1, 2, -2]).toarray()
    hat = np.linalg.solve(a, np.diag(wd))
    z = hat @ yd
    # the effective number of observations (Kish): the count for equal weights, less for unequal
    assert m[0] == pytest.approx(wts.sum() ** 2 / (wts**2).sum())
    assert whittaker_gcv(y[None], t_obs, [lam])[2][0] == t_obs.size
    np.testing.assert_allclose(tr[0, 0], np.trace(hat), rtol=1e-9)
    np.testing.assert_allclose(rss[0, 0], np.sum(wd * (yd - z) ** 2), rtol=1e-9)


def test_gcv_is_not_lowered_by_observations_weighted_near_zero():
    """A second sensor's observations weighted ~0 (a blurred view the weights distrust) carry
    no information: the chosen smoothing stays that of the first sensor alone. Counting them
    as whole observations made GCV choose a rougher fit."""
    from harmonize.gapfill import select_lmbda

    rng = np.random.default_rng(42)
    t_a = ORIGIN + pd.to_timedelta(np.arange(0, 360, 5), "D")
    t_b = ORIGIN + pd.to_timedelta(np.arange(2, 360, 8), "D")
    signal = lambda d: 0.5 + 0.3 * np.sin(2 * np.pi * d / 365.0)  # noqa: E731
    shape_a, shape_b = (t_a.size, *GEOBOX.shape), (t_b.size, *GEOBOX.shape)
    a = cube(signal(days(t_a))[:, None, None] + rng.normal(0, 0.03, shape_a), t_a)
    b = cube(signal(days(t_b))[:, None, None] + rng.normal(0, 0.03, shape_b), t_b, sensor="landsat")
    alone = select_lmbda(a)
    both = xr.concat([a, b], dim="time").sortby("time")
    faint = xr.where(both["sensor"] == "landsat", 1e-3, 1.0).broadcast_like(both)
    assert select_lmbda(both, weights=faint) == alone
    # trusted as much as the first sensor, they are more data: never more smoothing than alone
    assert select_lmbda(both) <= alone


def test_gcv_does_not_choose_a_fit_with_more_freedom_than_observations():
    """A pixel seen on 6 dates by a trusted sensor and on 40 by one weighted 0.05 (a cloudy
    season's field edge): with little smoothing the fit follows every observed day, its trace
    exceeds the effective number of observations, and GCV's denominator turned positive again
    (it chose lambda 1, the roughest fit). Such candidates are not eligible."""
    from harmonize.gapfill import GCV_LMBDAS, select_lmbda

    rng = np.random.default_rng(3)
    t_a = ORIGIN + pd.to_timedelta(np.linspace(0, 360, 6).round(), "D")
    t_b = ORIGIN + pd.to_timedelta(np.setdiff1d(np.linspace(1, 359, 40).round(), days(t_a)), "D")
    signal = lambda d: 0.5 + 0.3 * np.sin(2 * np.pi * d / 365.0)  # noqa: E731
    parts = [
        cube(signal(days(tt))[:, None, None] + rng.normal(0, 0.03, (tt.size, *GEOBOX.shape)), tt, sensor=s)
        for tt, s in ((t_a, "sentinel-2"), (t_b, "landsat"))
    ]
    both = xr.concat(parts, dim="time").sortby("time")
    faint = xr.where(both["sensor"] == "landsat", 0.05, 1.0).broadcast_like(both)
    lam = select_lmbda(both, weights=faint)
    assert lam >= 100 and lam in GCV_LMBDAS
    # and the choice is the better one against the signal
    def err(v):
        f = gap_fill(both, method="whittaker", lmbda=v, weights=faint, freq="5D", max_gap=1000)
        return float(np.sqrt(np.nanmean((f.values - signal(days(f["time"].values))[:, None, None]) ** 2)))

    assert err(lam) < err(min(GCV_LMBDAS))
    # the per-group choice runs the same rule
    split = xr.DataArray(np.arange(GEOBOX.shape[1])[None, :].repeat(GEOBOX.shape[0], 0) >= 3, dims=("y", "x"))
    grouped = gap_fill(both, method="whittaker", lmbda="gcv", weights=faint, lmbda_split=split)
    assert np.all(grouped["gap_fill_lmbda"].values >= 100)


def test_gcv_picks_little_smoothing_for_signal_and_much_for_noise():
    from harmonize.gapfill import GCV_LMBDAS, select_lmbda

    rng = np.random.default_rng(41)
    t = ORIGIN + pd.to_timedelta(np.arange(0, 360, 3), "D")
    d = days(t)
    shape = (d.size, *GEOBOX.shape)
    wiggle = (0.5 + 0.3 * np.sin(2 * np.pi * d / 40.0))[:, None, None] + rng.normal(0, 0.01, shape)
    noise = 0.5 + rng.normal(0, 0.1, (d.size, *GEOBOX.shape))
    lam_signal = select_lmbda(cube(wiggle, t))
    lam_noise = select_lmbda(cube(noise, t))
    assert lam_signal <= 10.0
    assert lam_noise == max(GCV_LMBDAS)
    out = gap_fill(cube(wiggle, t), method="whittaker", lmbda="gcv", max_gap=1000)
    # the choice is a task of the graph: the same lmbda, and the same fill as giving it
    assert isinstance(out.data, dsa.Array) and out.attrs["gap_fill_lmbda"] == "gcv"
    assert isinstance(out["gap_fill_lmbda"].data, dsa.Array)
    done = out.compute()
    assert float(done["gap_fill_lmbda"]) == lam_signal
    fixed = gap_fill(cube(wiggle, t), method="whittaker", lmbda=lam_signal, max_gap=1000)
    np.testing.assert_array_equal(done.values, fixed.values)
    assert float(fixed["gap_fill_lmbda"]) == fixed.attrs["gap_fill_lmbda"] == lam_signal
    # the lazy choice reads a few spatial chunks, not all: a fill block need not wait for
    # (and hold) the whole input
    seen = set()

    def record(block, block_info=None):
        seen.add(tuple(block_info[0]["chunk-location"][1:]))
        return block

    many = cube(wiggle, t, chunks=(1, 1, 2))
    many = many.copy(data=many.data.map_blocks(record, dtype=many.dtype))
    lam = gap_fill(many, method="whittaker", lmbda="gcv")["gap_fill_lmbda"]
    assert not seen  # nothing read yet
    with dask.config.set(scheduler="sync"):
        assert float(lam) in GCV_LMBDAS
    n_spatial = len(many.chunks[1]) * len(many.chunks[2])
    assert n_spatial == 12 and 1 <= len(seen) <= 4
    # in memory the choice is made at once
    eager = gap_fill(cube(wiggle, t).compute(), method="whittaker", lmbda="gcv", max_gap=1000)
    assert eager.attrs["gap_fill_lmbda"] == lam_signal
    with pytest.raises(TimeSeriesError, match="gcv"):
        gap_fill(cube(wiggle, t), method="whittaker", lmbda="best")


def test_gcv_per_split_gives_each_group_its_own_smoothing():
    """Noisy smooth pixels and clean step-like pixels side by side: one lambda for all fits
    neither; with lmbda_split each half gets its own (much smoothing for the noise, little for
    the steps) and the fill equals filling each half with its lambda."""
    from harmonize.gapfill import GCV_LMBDAS

    rng = np.random.default_rng(5)
    t = pd.date_range("2023-01-01", periods=80, freq="4D")
    d = np.arange(80) * 4.0
    ny, nx = 16, 16
    y = np.empty((80, ny, nx))
    truth_smooth = 0.5 + 0.3 * np.sin(2 * np.pi * d / 365)
    truth_steps = 0.5 + 0.3 * np.sign(np.sin(2 * np.pi * d / 60))
    y[:, :, 8:] = truth_smooth[:, None, None] + rng.normal(0, 0.1, (80, ny, 8))  # True: noisy
    y[:, :, :8] = truth_steps[:, None, None] + rng.normal(0, 0.01, (80, ny, 8))
    obs = xr.DataArray(y, dims=("time", "y", "x"), coords={"time": t, "y": np.arange(ny), "x": np.arange(nx)})
    split = xr.DataArray(np.arange(nx)[None, :].repeat(ny, 0) >= 8, dims=("y", "x"))
    for data in (obs, obs.chunk({"y": 8, "x": 8})):
        one = gap_fill(data, method="whittaker", lmbda="gcv", freq="4D")
        two = gap_fill(data, method="whittaker", lmbda="gcv", freq="4D", lmbda_split=split)
        assert isinstance(two.data, dsa.Array) == (data.chunks is not None)
        lam = two["gap_fill_lmbda"].values
        assert lam.shape == (ny, nx) and two.attrs["gap_fill_lmbda"] == "gcv per group"
        lam_noise, lam_steps = float(lam[0, -1]), float(lam[0, 0])
        assert np.all(lam[:, 8:] == lam_noise) and np.all(lam[:, :8] == lam_steps)
        assert lam_noise >= 100 * lam_steps and {lam_noise, lam_steps} <= set(GCV_LMBDAS)
        halves = [
            gap_fill(data, method="whittaker", lmbda=v, freq="4D").values for v in (lam_noise, lam_steps)
        ]
        np.testing.assert_allclose(two.values, np.where(split.values[None], halves[0], halves[1]), atol=1e-6)
        # against truth both halves are closer than with the one pooled lambda
        def err(f, sl, tr):
            return float(np.sqrt(np.mean((f.values[:, :, sl] - tr[:, None, None]) ** 2)))

        assert err(two, slice(8, None), truth_smooth) <= err(one, slice(8, None), truth_smooth)
        assert err(two, slice(0, 8), truth_steps) <= err(one, slice(0, 8), truth_steps)
        assert err(two, slice(8, None), truth_smooth) + err(two, slice(0, 8), truth_steps) < 0.95 * (
            err(one, slice(8, None), truth_smooth) + err(one, slice(0, 8), truth_steps)
        )
    # the True group is the noisier one: never smoothed less than the other (here the steps
    # would want little smoothing, so they get the noisy half's)
    flipped = gap_fill(obs, method="whittaker", lmbda="gcv", freq="4D", lmbda_split=~split)
    assert np.unique(flipped["gap_fill_lmbda"].values).tolist() == [lam_noise]
    with pytest.raises(TimeSeriesError, match="lmbda_split"):
        gap_fill(obs, method="whittaker", lmbda="gcv", lmbda_split=split.astype(int))
    with pytest.raises(TimeSeriesError, match="lmbda_split"):
        gap_fill(obs, method="whittaker", lmbda="gcv", lmbda_split=split[:4])
