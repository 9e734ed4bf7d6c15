"""Sharpening Sentinel-2's 20 m bands with its 10 m bands, checked against the simulator's truth."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from harmonize.errors import HarmonizeError, UnknownBandError
from harmonize.sharpen import (
    EXTRA_SIGMA_PX,
    GUIDE_BANDS,
    SHARPEN_BANDS,
    degrade,
    grid_phase,
    sharpen_20m,
    sharpen_block,
)


def psnr(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b)[m] ** 2)))


def _no_compute(*args, **kwargs):
    raise AssertionError("something was computed")


# --------------------------------------------------------------------------------------------
# the tiny simulated world


@pytest.fixture(scope="module")
def cube(tiny_world):
    import pystac

    from harmonize.cube import load_cube

    items = [pystac.Item.from_dict(d) for d in tiny_world.items()]
    return load_cube(items, geobox=tiny_world.geobox, chunks={"time": 1, "y": 64, "x": 64})


@pytest.fixture(scope="module")
def clear_scene(cube, tiny_world):
    """The clearest Sentinel-2 scene of the tiny world (loaded) and the truth of its date."""
    s2 = cube.isel(time=np.flatnonzero(cube["sensor"].values == "sentinel-2"))
    frac = s2["clear"].mean(("y", "x")).values
    scene = s2.isel(time=int(np.argmax(frac))).compute()
    assert frac.max() > 0.95  # the tiny world (seed 0) has cloud-free Sentinel-2 scenes
    lon_hours = pd.Timedelta(hours=float(tiny_world.geobox.extent.centroid.to_crs(4326).points[0][0]) / 15)
    day = (pd.Timestamp(scene.time.values) + lon_hours).normalize()
    truth = tiny_world.truth.sel(time=day, y=scene.y, x=scene.x).compute()
    return scene, truth


def _interior(shape: tuple[int, int], margin: int = 6) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[margin:-margin, margin:-margin] = True
    return m


def test_degrade_models_the_sensor_20m_bands(clear_scene):
    """Degrading the truth (cell-uniform ground: 2x2 cell + 0.8 px blur) reproduces the 20 m band."""
    scene, truth = clear_scene
    m = scene["clear"].values & _interior(scene["clear"].shape)
    for b in SHARPEN_BANDS:
        seen = scene[b].values
        raw = psnr(truth[b].values, seen, m)
        model = psnr(degrade(truth[b].values[None], sigma=0.8)[0], seen, m)
        wrong_phase = psnr(degrade(truth[b].values[None], phase=(1, 1), sigma=0.8)[0], seen, m)
        # measured on seed 0: raw 30-35 dB, model 50-53 dB (the sensor noise), wrong phase 46-50
        assert model > raw + 12, (b, raw, model)
        assert model > wrong_phase + 2, (b, model, wrong_phase)


def test_sharpened_bands_are_closer_to_truth(clear_scene):
    scene, truth = clear_scene
    out = sharpen_20m(scene)
    m = scene["clear"].values & _interior(scene["clear"].shape)
    for b in SHARPEN_BANDS:
        raw = psnr(scene[b].values, truth[b].values, m)
        sharp = psnr(out[b].values, truth[b].values, m)
        # measured on the tiny world (seed 0): nir 30.3 -> 34.3, swir16 33.8 -> 38.4,
        # swir22 35.0 -> 40.2 dB (partly cloudy scenes gain as much on their clear pixels)
        assert sharp > raw + 3.0, (b, raw, sharp)
    for b in GUIDE_BANDS:  # the guides are untouched
        np.testing.assert_array_equal(out[b].values, scene[b].values)
    import harmonize  # noqa: F401 - registers .hz

    np.testing.assert_array_equal(scene.hz.sharpen_20m()["nir"].values, out["nir"].values)


# --------------------------------------------------------------------------------------------
# synthetic scenes with known truth


def _two_class_scene(n: int = 48, phase: tuple[int, int] = (0, 0)):
    """Two materials split by an L-shaped edge through the middle of 20 m cells."""
    cls = np.zeros((n, n), bool)
    cls[:, 23:] = True  # column 23 starts the second half of a 20 m cell
    cls[31:, :] = True
    guides = np.where(
        cls, np.array([0.04, 0.08, 0.05])[:, None, None], np.array([0.10, 0.12, 0.15])[:, None, None]
    )
    truth = np.where(
        cls, np.array([0.45, 0.25, 0.12])[:, None, None], np.array([0.20, 0.30, 0.25])[:, None, None]
    )
    seen = degrade(truth, phase=phase, sigma=EXTRA_SIGMA_PX)
    return guides, truth, seen


@pytest.mark.parametrize("phase", [(0, 0), (1, 0), (1, 1)])
def test_two_class_edge_is_recovered(phase):
    guides, truth, seen = _two_class_scene(phase=phase)
    out = sharpen_block(seen, guides, phase=phase)
    edge = np.abs(seen - truth).max(axis=0) > 1e-3
    assert edge.sum() > 100  # the 20 m band is blurred along the edge
    assert np.abs(seen - truth)[:, edge].max() > 0.05
    np.testing.assert_allclose(out, truth, atol=2e-3)
    # the wrong cell phase leaves a visible error
    wrong = sharpen_block(seen, guides, phase=(1 - phase[0], 1 - phase[1]))
    assert np.abs(wrong - truth).max() > 5 * np.abs(out - truth).max()


def test_masked_pixels_do_not_enter_the_regression():
    guides, truth, seen = _two_class_scene()
    valid = np.ones(seen.shape[1:], bool)
    valid[10:18, 5:20] = False  # a cloud
    results = []
    for junk in (0.9, 0.0):
        g, t = guides.copy(), seen.copy()
        g[:, ~valid] = junk
        t[:, ~valid] = junk + 0.1
        t[0, 40:, 40:] = np.nan  # missing data in one band
        results.append(sharpen_block(t, g, valid))
    a, b = results
    ok = valid.copy()
    ok[40:, 40:] = False
    assert np.isfinite(a[:, ok]).all()
    np.testing.assert_array_equal(a[:, ok], b[:, ok])  # the cloud's values never reach clear pixels
    assert np.isnan(a[0, 40:, 40:]).all()
    np.testing.assert_allclose(a[:, ~valid], 0.9 + 0.1)  # masked pixels keep their input
    # clear pixels next to the cloud are still sharpened (the guides there explain them)
    np.testing.assert_allclose(a[:, ok], truth[:, ok], atol=5e-3)


def _dataset(
    guides: np.ndarray, seen: np.ndarray, *, x0: float = 600000.0, y0: float = 5000040.0
) -> xr.Dataset:
    n = seen.shape[-1]
    coords = {"y": y0 - 5.0 - 10.0 * np.arange(n), "x": x0 + 5.0 + 10.0 * np.arange(n)}
    data = {b: (("y", "x"), seen[k].astype(np.float32)) for k, b in enumerate(SHARPEN_BANDS)}
    data |= {b: (("y", "x"), guides[k].astype(np.float32)) for k, b in enumerate(GUIDE_BANDS)}
    return xr.Dataset(data, coords=coords)


def test_grid_phase_from_coordinates():
    g, _, s = _two_class_scene(8)
    assert grid_phase(_dataset(g, s)) == (0, 0)
    assert grid_phase(_dataset(g, s, x0=600010.0, y0=5000030.0)) == (1, 1)
    assert grid_phase(_dataset(g, s, x0=600010.0)) == (0, 1)
    with pytest.raises(HarmonizeError, match="10 m grid"):
        grid_phase(_dataset(g, s).coarsen(x=2, y=2).mean())


def test_sharpen_20m_uses_the_grid_phase():
    guides, truth, seen = _two_class_scene(phase=(1, 1))
    ds = _dataset(guides, seen, x0=600010.0, y0=5000030.0)  # pixel (0, 0) is a cell's second half
    out = sharpen_20m(ds)
    got = np.stack([out[b].values for b in SHARPEN_BANDS])
    np.testing.assert_allclose(got, truth, atol=2e-3)


# --------------------------------------------------------------------------------------------
# dask


def test_chunked_equals_whole_and_only_sentinel2_changes(cube):
    sub = cube[[*SHARPEN_BANDS, *GUIDE_BANDS, "clear"]].isel(time=slice(0, 6))
    assert {"landsat", "sentinel-2"} <= set(sub["sensor"].values)
    with dask.config.set(scheduler=_no_compute):
        lazy = sharpen_20m(sub)
        assert all(isinstance(lazy[b].data, da.Array) for b in SHARPEN_BANDS)
    lazy = lazy.compute(scheduler="threads")
    whole = sharpen_20m(sub.compute())
    for b in SHARPEN_BANDS:
        np.testing.assert_allclose(lazy[b].values, whole[b].values, rtol=0, atol=1e-6)
        assert lazy[b].dtype == np.float32
    s2 = sub["sensor"].values == "sentinel-2"
    raw = sub.compute()
    for b in SHARPEN_BANDS:
        np.testing.assert_array_equal(lazy[b].values[~s2], raw[b].values[~s2])
        assert not np.allclose(lazy[b].values[s2], raw[b].values[s2], equal_nan=True)
    assert lazy.odc.geobox == sub.odc.geobox
    assert list(lazy["time"].values) == list(sub["time"].values)


def test_small_chunks_are_widened_to_the_halo(clear_scene):
    scene, _ = clear_scene
    small = scene.chunk({"y": 16, "x": 16})
    np.testing.assert_allclose(
        sharpen_20m(small)["nir"].values, sharpen_20m(scene)["nir"].values, rtol=0, atol=1e-6
    )


def test_bad_input_is_a_named_error(clear_scene):
    scene, _ = clear_scene
    with pytest.raises(UnknownBandError, match="blue"):
        sharpen_20m(scene.drop_vars("blue"))
    with pytest.raises(HarmonizeError, match="odd"):
        sharpen_20m(scene, window=4)


def test_scene_smaller_than_the_halo_is_sharpened_in_one_block():
    """A lazy cube smaller than the halo (a few pixels) gives the in-memory result, not an error."""
    import dask.array as dsk

    rng = np.random.default_rng(3)
    n = 6
    data = {b: rng.uniform(0.02, 0.4, (1, n, n)).astype("float32") for b in (*SHARPEN_BANDS, *GUIDE_BANDS)}
    coords = {
        "time": [np.datetime64("2023-06-01")],
        "y": 4_000_005.0 - 10 * np.arange(n),
        "x": 500_005.0 + 10 * np.arange(n),
    }
    dims = ("time", "y", "x")
    mem = xr.Dataset({b: (dims, v) for b, v in data.items()}, coords=coords)
    lazy = xr.Dataset(
        {b: (dims, dsk.from_array(v, chunks=(1, 3, 3))) for b, v in data.items()}, coords=coords
    )
    got = sharpen_20m(lazy, mask=None)["nir"].values
    np.testing.assert_allclose(got, sharpen_20m(mem, mask=None)["nir"].values, atol=1e-6)
