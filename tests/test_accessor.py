"""The ``.hz`` accessor forwards to the free functions and holds no state."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import harmonize.accessor  # noqa: F401 - registers .hz
from harmonize.bandpass import fit_linear_adjustment, hls_adjust
from harmonize.errors import HarmonizeError, UnknownBandError
from harmonize.indices import clear_fraction, ndvi


@pytest.fixture()
def cube() -> xr.Dataset:
    red = np.array([[[0.1, 0.2], [0.05, np.nan]], [[0.3, 0.0], [0.1, 0.1]]], dtype="float32")
    nir = np.array([[[0.5, 0.2], [0.05, 0.4]], [[0.1, 0.0], [0.3, 0.1]]], dtype="float32")
    clear = np.array([[[True, True], [False, True]], [[True, False], [False, False]]])
    return xr.Dataset(
        {
            "red": (("time", "y", "x"), red),
            "nir": (("time", "y", "x"), nir),
            "clear": (("time", "y", "x"), clear),
        },
        coords={
            "time": pd.to_datetime(["2024-06-01T00:00", "2024-06-01T00:30"]),
            "y": [15.0, 5.0],
            "x": [5.0, 15.0],
            "sensor": ("time", ["landsat", "sentinel-2"]),
            "platform": ("time", ["landsat-8", "sentinel-2b"]),
        },
    )


def test_ndvi_values(cube: xr.Dataset) -> None:
    v = ndvi(cube).values
    np.testing.assert_allclose(v[0, 0], [(0.5 - 0.1) / 0.6, 0.0], rtol=1e-6)
    assert v[0, 1, 0] == pytest.approx(0.0)
    assert np.isnan(v[0, 1, 1])  # red is NaN
    assert np.isnan(v[1, 0, 1])  # nir + red == 0
    np.testing.assert_allclose(v[1, 1], [0.5, 0.0], rtol=1e-6)
    assert ndvi(cube).dtype == np.float32 and ndvi(cube).name == "ndvi"
    lazy = ndvi(cube.chunk({"time": 1}))
    assert lazy.chunks is not None
    np.testing.assert_array_equal(lazy.values, v)
    with pytest.raises(UnknownBandError, match="nir"):
        ndvi(cube.drop_vars("nir"))
    # a slightly negative band (water after correction, a model's output) is no NDVI: the
    # ratio would leave [-1, 1] and explode as nir + red nears 0 (here it would be -5)
    neg = cube.copy(deep=True)
    neg["nir"][0, 0, 0] = -0.001
    neg["red"][0, 0, 0] = 0.0015
    w = ndvi(neg).values
    assert np.isnan(w[0, 0, 0]) and np.nanmax(np.abs(w)) <= 1.0


def test_clear_fraction(cube: xr.Dataset) -> None:
    cf = clear_fraction(cube)
    # time 0: valid pixels are all four (nir is finite where red is NaN); clear 3 of them.
    np.testing.assert_allclose(cf.values, [0.75, 0.25])
    # Over the red band's valid area only: 3 valid, 2 of them clear.
    np.testing.assert_allclose(clear_fraction(cube, bands=["red"]).values, [2 / 3, 0.25])
    assert clear_fraction(cube.chunk({"time": 1})).chunks is not None


def test_accessor_forwards(cube: xr.Dataset) -> None:
    xr.testing.assert_identical(cube.hz.ndvi(), ndvi(cube))
    xr.testing.assert_identical(cube.hz.clear_fraction(), clear_fraction(cube))
    xr.testing.assert_identical(cube.hz.hls_adjust(), hls_adjust(cube))
    xr.testing.assert_identical(cube.hz.hls_adjust("sentinel-2"), hls_adjust(cube, "sentinel-2"))
    rng = np.random.default_rng(0)
    big = cube.isel(y=[0] * 10 + [1] * 10, x=[0] * 10 + [1] * 10).assign_coords(
        y=np.arange(20.0), x=np.arange(20.0)
    )
    big["red"] = big["red"].copy(data=rng.uniform(0, 0.4, (2, 20, 20)).astype("float32"))
    big["clear"] = big["clear"] | True
    adj = big.hz.fit_linear_adjustment(bands=["red"])
    assert adj == fit_linear_adjustment(big, bands=["red"]) and adj.n_pixels["red"] == 400
    xr.testing.assert_identical(big.hz.apply_linear_adjustment(adj), adj.apply(big))
    # Accessors are recreated on every access: no state travels between objects.
    assert cube.hz is not cube.hz or cube.hz._obj is cube


def test_dataarray_accessor(cube: xr.Dataset) -> None:
    stacked = cube[["red", "nir"]].to_dataarray("band")
    xr.testing.assert_allclose(stacked.hz.ndvi(), ndvi(cube))
    np.testing.assert_allclose(cube["clear"].hz.clear_fraction().values, [0.75, 0.25])
    with pytest.raises(HarmonizeError, match="band"):
        cube["red"].hz.ndvi()


def test_coregister_forwarding_reaches_estimator(cube: xr.Dataset) -> None:
    # The accessor hands its object and keywords to estimate_shifts: a 2 x 2 frame has no
    # reference scene with enough clear pixels, and max_days shows up in the reason.
    tab = cube.hz.estimate_shifts(band="red", max_days=3)
    assert list(tab["item_id"]) == [""] and bool(tab["flagged"].iloc[0])
    assert "within 3 days" in tab["reason"].iloc[0]
    with pytest.raises(UnknownBandError):
        cube.hz.coregister(band="swir16")


def test_accessor_forwards_inference_and_time_series() -> None:
    """The methods added for later stages reach their free functions with the same results."""
    import dask.array as dsa
    import pandas as pd

    from harmonize.gapfill import gap_fill
    from harmonize.model import build_model
    from harmonize.phenology import phenology

    times = pd.date_range("2023-03-01", periods=24, freq="5D")
    doy = times.day_of_year.to_numpy()
    curve = 0.2 + 0.6 / (1 + np.exp(-(doy - 120) / 8)) - 0.6 / (1 + np.exp(-(doy - 200) / 8))
    values = np.broadcast_to(curve[:, None, None], (24, 4, 4)).astype("float32").copy()
    values[::3] = np.nan
    nd = xr.DataArray(
        dsa.from_array(values, chunks=(24, 2, 2)), dims=("time", "y", "x"), coords={"time": times}
    )
    xr.testing.assert_allclose(
        nd.hz.gap_fill(method="linear").compute(), gap_fill(nd, method="linear").compute()
    )
    filled = nd.hz.gap_fill(method="linear")
    xr.testing.assert_allclose(filled.hz.phenology().compute(), phenology(filled).compute())

    rng = np.random.default_rng(0)
    bands = {
        b: (("time", "y", "x"), rng.uniform(0.02, 0.4, (1, 16, 16)).astype("float32"))
        for b in ("blue", "green", "red", "nir", "swir16", "swir22", "pan")
    }
    cube = xr.Dataset(
        {**bands, "clear": (("time", "y", "x"), np.ones((1, 16, 16), bool))},
        coords={
            "time": times[:1],
            "y": 4_000_000.0 - 10 * np.arange(16),
            "x": 500_000.0 + 10 * np.arange(16),
            "sensor": ("time", ["landsat"]),
        },
    ).rio.write_crs("EPSG:32633")
    out = cube.hz.super_resolve(build_model("tiny"), device="cpu").compute()
    # An untrained tiny UNet is the identity on the six reflectance bands.
    np.testing.assert_allclose(out["red"].values, cube["red"].values, atol=1e-6)
