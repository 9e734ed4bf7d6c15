"""Bandpass adjustment: HLS coefficients per platform, and a fitted linear baseline that must
recover a known relation between the sensors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from harmonize.bandpass import LinearAdjustment, apply_linear_adjustment, fit_linear_adjustment, hls_adjust
from harmonize.bands import bandpass_coefficients
from harmonize.errors import HarmonizeError, UnknownBandError

BANDS = ("red", "nir")


def two_sensor_cube(
    relation: dict[str, tuple[float, float]], *, n: int = 40, seed: int = 0, noise: float = 0.002
) -> xr.Dataset:
    """Landsat and Sentinel-2 on the same days; s2 = slope * landsat + offset + noise.

    Times: L8 day 1, S2A day 1, S2B day 6, L9 day 6, S2A day 11 (no Landsat that day).
    Clouds in one scene of each pair are filled with garbage reflectance that a fit ignoring the
    clear mask would swallow.
    """
    rng = np.random.default_rng(seed)
    times = pd.to_datetime(
        ["2024-06-01T10:00", "2024-06-01T10:30", "2024-06-06T10:20", "2024-06-06T10:05", "2024-06-11T10:30"]
    )
    sensors = ["landsat", "sentinel-2", "sentinel-2", "landsat", "sentinel-2"]
    platforms = ["landsat-8", "sentinel-2a", "sentinel-2b", "landsat-9", "sentinel-2a"]
    data, clear = {}, np.ones((5, n, n), bool)
    clear[1, :10] = False  # S2 cloud on day 1
    clear[3, :, :8] = False  # Landsat cloud on day 6
    for b, (slope, offset) in relation.items():
        base = rng.uniform(0.02, 0.5, size=(2, n, n))  # surface of day 1 and day 6
        arr = np.empty((5, n, n))
        arr[0] = base[0]
        arr[1] = slope * base[0] + offset + rng.normal(0, noise, (n, n))
        arr[3] = base[1]
        arr[2] = slope * base[1] + offset + rng.normal(0, noise, (n, n))
        arr[4] = rng.uniform(0.02, 0.5, size=(n, n))
        arr[~clear] = 0.9  # clouds
        arr[0, -1, :] = np.nan  # a nodata edge
        data[b] = (("time", "y", "x"), arr.astype("float32"))
    data["clear"] = (("time", "y", "x"), clear)
    return xr.Dataset(
        data,
        coords={
            "time": times,
            "y": 4_000_000.0 - 10 * np.arange(n) - 5,
            "x": 500_000.0 + 10 * np.arange(n) + 5,
            "sensor": ("time", sensors),
            "platform": ("time", platforms),
        },
    )


RELATION = {"red": (0.95, 0.012), "nir": (1.04, -0.008)}


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return two_sensor_cube(RELATION).chunk({"time": 1, "y": 20, "x": 20})


def test_fit_recovers_known_relation(cube: xr.Dataset) -> None:
    adj = fit_linear_adjustment(cube)
    assert adj.source == "landsat" and adj.target == "sentinel-2"
    for b, (slope, offset) in RELATION.items():
        assert adj.slope[b] == pytest.approx(slope, abs=0.005)
        assert adj.offset[b] == pytest.approx(offset, abs=0.002)
        assert adj.r2[b] > 0.99
    # Pairs: day 1 (40x40 minus S2 cloud rows minus the nodata row) and day 6 (minus L cloud).
    n = 40
    assert adj.n_pixels["red"] == (n - 10 - 1) * n + n * (n - 8)


def test_fit_with_two_cubes_and_max_days(cube: xr.Dataset) -> None:
    land = cube.isel(time=[0, 3])
    s2 = cube.isel(time=[1, 2, 4])
    same = fit_linear_adjustment(land, s2, bands=["red"])
    assert same.bands == ("red",)
    assert same.slope["red"] == pytest.approx(0.95, abs=0.005)
    with pytest.raises(HarmonizeError, match="No landsat/sentinel-2"):
        fit_linear_adjustment(cube.isel(time=[0, 4]))
    # Within 10 days the day-11 scene is farther than day 1's partner, so nothing changes.
    near = fit_linear_adjustment(land, s2, bands=["red"], max_days=10)
    assert near.slope["red"] == pytest.approx(same.slope["red"])


def test_apply_round_trip_and_json(cube: xr.Dataset, tmp_path) -> None:
    adj = fit_linear_adjustment(cube)
    out = apply_linear_adjustment(cube, adj)
    assert out["red"].chunks is not None  # lazy
    land = cube.isel(time=0)
    s2 = cube.isel(time=1)
    ok = (land["clear"] & s2["clear"]).values & np.isfinite(land["red"].values)
    resid = out["red"].isel(time=0).values[ok] - s2["red"].values[ok]
    assert np.sqrt(np.mean(resid**2)) < 0.004  # noise level, not the bandpass difference
    np.testing.assert_array_equal(
        out["red"].isel(time=1).values, cube["red"].isel(time=1).values
    )  # S2 untouched
    back = adj.inverse().apply(
        out.assign_coords(sensor=("time", np.where(cube.sensor == "landsat", "sentinel-2", "x")))
    )
    np.testing.assert_allclose(back["red"].isel(time=0).values, cube["red"].isel(time=0).values, atol=1e-6)
    # JSON round trip, to a string and to a file.
    again = LinearAdjustment.from_json(adj.to_json())
    assert again == adj
    path = tmp_path / "adj.json"
    adj.to_json(path)
    assert LinearAdjustment.from_json(path) == adj
    assert json.loads(path.read_text())["slope"]["nir"] == pytest.approx(adj.slope["nir"])


def test_hls_adjust_both_ways(cube: xr.Dataset) -> None:
    to_oli = hls_adjust(cube, "landsat")
    a, b = bandpass_coefficients("sentinel-2a")["red"], bandpass_coefficients("sentinel-2b")["red"]
    src = cube["red"].values
    got = to_oli["red"].values
    np.testing.assert_allclose(got[1], src[1] * a.slope + a.offset, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[2], src[2] * b.slope + b.offset, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[0], src[0])  # Landsat untouched
    assert to_oli.attrs["harmonize_bandpass"] == "hls:landsat"
    to_msi = hls_adjust(cube, "sentinel-2")
    np.testing.assert_array_equal(to_msi["red"].values[1], src[1])
    # Landsat made MSI-like, then MSI -> OLI again, is the identity.
    np.testing.assert_allclose(a.apply(to_msi["red"].values[0]), src[0], rtol=1e-5, atol=1e-6)
    assert to_msi["red"].dtype == np.float32


def test_bad_inputs(cube: xr.Dataset) -> None:
    with pytest.raises(HarmonizeError):
        hls_adjust(cube, "modis")  # type: ignore[arg-type]
    with pytest.raises(UnknownBandError):
        hls_adjust(cube, bands=["swir16"])
    with pytest.raises(HarmonizeError, match="sensor"):
        hls_adjust(cube.drop_vars("sensor"))
    with pytest.raises(UnknownBandError):
        hls_adjust(
            cube.assign_coords(
                platform=("time", ["landsat-8", "sentinel-3a", "sentinel-2b", "landsat-9", "x"])
            )
        )


def _rmse(a: xr.DataArray, b: xr.DataArray) -> float:
    return float(np.sqrt(np.nanmean((a.values - b.values) ** 2)))


def test_on_simulated_spectral_responses(request: pytest.FixtureRequest) -> None:
    """The simulator's truth seen by Sentinel-2B and by Landsat-8 on the same days: HLS brings
    S2B towards OLI where the bandpasses differ most, and the fitted baseline (which can absorb
    the simulator's small non-linear OLI term only linearly) does better still."""
    pytest.importorskip("harmonize.world")
    world = request.getfixturevalue("tiny_world")
    days = [0, 7]
    s2b = world.truth_as_seen_by("sentinel-2b").isel(time=days).compute()
    l8 = world.truth_as_seen_by("landsat-8").isel(time=days).compute()
    s2b = s2b.assign_coords(sensor=("time", ["sentinel-2"] * 2), platform=("time", ["sentinel-2b"] * 2))
    l8 = l8.assign_coords(sensor=("time", ["landsat"] * 2), platform=("time", ["landsat-8"] * 2))
    to_oli = hls_adjust(s2b, "landsat")
    for band in ("blue", "red", "nir"):
        assert _rmse(to_oli[band], l8[band]) < 0.8 * _rmse(s2b[band], l8[band]), band
    fitted = fit_linear_adjustment(l8, s2b)
    hls_to_msi = hls_adjust(l8, "sentinel-2", platform="sentinel-2b")
    out = fitted.apply(l8)
    for band in fitted.bands:
        assert _rmse(out[band], s2b[band]) < _rmse(hls_to_msi[band], s2b[band]), band
        assert fitted.r2[band] > 0.999
