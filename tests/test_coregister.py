"""Co-registration against known shifts.

Synthetic cubes: a sharp Voronoi landscape (fields with hard edges) is integrated over each
sensor's pixels. The Sentinel-2 scene samples it on the 10 m grid; each Landsat scene samples it
on a 30 m grid whose declared origin is offset from the 10 m grid, at positions misregistered by
a known ``(dx, dy)``, and is then resampled bilinearly onto the 10 m grid at its *declared*
positions, as a loader would. The correction convention says the estimate must equal
``(dx, dy)``.

With the simulator (``tiny_world``) the same is checked end to end, one way: a probe cube gives
the shift table, ``load_cube(items, shifts=table)`` loads the scenes once on corrected grids,
and both are checked against the manifest's injected shifts and the truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from scipy import ndimage
from scipy.spatial import cKDTree

from harmonize.coregister import (
    SHIFT_COLUMNS,
    coregister,
    estimate_shift_pair,
    estimate_shifts,
    load_coregistered,
    shift_cube,
)
from harmonize.errors import HarmonizeError, UnknownBandError

X0, Y0, RES = 500_000.0, 4_001_280.0, 10.0


def landscape(seed: int, extent: float, n_cells: int = 120):
    """A piecewise-constant reflectance field f(x, y) with sharp edges (Voronoi cells)."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(-100, extent + 100, size=(n_cells, 2))
    values = rng.uniform(0.03, 0.3, size=n_cells)
    tree = cKDTree(seeds)

    def f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        _, k = tree.query(np.column_stack([x.ravel() - X0, Y0 - y.ravel()]))
        return values[k].reshape(x.shape)

    return f


def pixel_means(f, x0: float, y0: float, res: float, ny: int, nx: int, ss: int) -> np.ndarray:
    """Mean of f over each pixel of a north-up grid with upper-left corner (x0, y0)."""
    o = (np.arange(ss) + 0.5) / ss * res
    cx = x0 + np.arange(nx)[None, :, None, None] * res + o[None, None, None, :]
    cy = y0 - np.arange(ny)[:, None, None, None] * res - o[None, None, :, None]
    shape = (ny, nx, ss, ss)
    return f(np.broadcast_to(cx, shape), np.broadcast_to(cy, shape)).mean(axis=(2, 3))


def synthetic_cube(
    shifts: list[tuple[float, float]],
    *,
    n: int = 96,
    seed: int = 0,
    cloudy_rows: dict[int, float] | None = None,
    noise: float = 0.002,
) -> tuple[xr.Dataset, callable]:
    """One Sentinel-2 scene (time 0) then one Landsat scene per shift, a day apart each."""
    f = landscape(seed, n * RES)
    gbox = GeoBox.from_bbox((X0, Y0 - n * RES, X0 + n * RES, Y0), crs="EPSG:32633", resolution=RES)
    rng = np.random.default_rng(seed + 1)
    layers = [pixel_means(f, X0, Y0, RES, n, n, 3) + rng.normal(0, noise, (n, n))]
    lx0, ly0 = X0 - 15.0, Y0 + 15.0  # Landsat's declared grid, offset from the 10 m one
    nl = int(n * RES / 30) + 3
    centres = (np.arange(n) + 0.5) * RES
    rows, cols = np.meshgrid(
        (ly0 - (Y0 - centres)) / 30.0 - 0.5, (X0 + centres - lx0) / 30.0 - 0.5, indexing="ij"
    )
    for dx, dy in shifts:
        native = pixel_means(f, lx0 + dx, ly0 + dy, 30.0, nl, nl, 6)
        native = ndimage.gaussian_filter(native, 0.4) + rng.normal(0, noise, native.shape)
        layers.append(ndimage.map_coordinates(native, [rows, cols], order=1))
    data = np.stack(layers).astype("float32")
    clear = np.ones(data.shape, dtype=bool)
    for k, frac in (cloudy_rows or {}).items():
        clear[k, : int(n * frac), :] = False
    m = len(shifts)
    ds = xr.Dataset(
        {"red": (("time", "y", "x"), data), "clear": (("time", "y", "x"), clear)},
        coords={
            **dict(xr_coords(gbox, crs_coord_name="spatial_ref")),
            "time": pd.date_range("2024-06-01", periods=m + 1, freq="D"),
            "sensor": ("time", ["sentinel-2"] + ["landsat"] * m),
            "platform": ("time", ["sentinel-2a"] + ["landsat-8"] * m),
            "item_id": ("time", ["S2_0"] + [f"LC_{k}" for k in range(m)]),
        },
    )
    return ds, f


SHIFTS = [(18.3, 0.9), (-26.8, -5.5), (-4.0, 27.0), (9.1, -23.9), (3.3, 3.3), (0.0, 0.0)]


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    # Landsat scene k is at time k + 1; scene 4 is 80 % cloudy, scene 2 half cloudy.
    ds, _ = synthetic_cube(SHIFTS, cloudy_rows={5: 0.8, 3: 0.5})
    return ds


@pytest.fixture(scope="module")
def table(cube: xr.Dataset) -> pd.DataFrame:
    return estimate_shifts(cube, max_days=30)


def test_recovers_known_shifts(table: pd.DataFrame) -> None:
    assert list(table.columns) == list(SHIFT_COLUMNS)
    truth = np.array(SHIFTS)
    ok = ~table["flagged"].to_numpy()
    assert ok.all(), table  # the 80 %-cloudy scene too: the robust fit needs 2 % common clear
    err = np.hypot(table["dx"].to_numpy() - truth[:, 0], table["dy"].to_numpy() - truth[:, 1])
    rmse = float(np.sqrt(np.mean(err**2)))
    assert rmse < 1.0, (rmse, table[["dx", "dy"]])
    assert (table["sigma"] < 3.0).all()
    assert (table["residual_dx"] == table["dx"]).all()  # the cube had no shift applied yet


def test_strict_min_clear_flags_the_low_overlap_scene_and_keeps_zero(cube: xr.Dataset) -> None:
    strict = estimate_shifts(cube, max_days=30, min_clear=0.3)
    row = strict.iloc[4]
    assert row["flagged"]
    assert row["dx"] == 0.0 and row["dy"] == 0.0
    assert row["common_clear"] == pytest.approx(0.2, abs=0.02)
    assert "common clear" in row["reason"]
    half = strict.iloc[2]  # 50 % cloudy: still estimated
    assert not half["flagged"] and half["common_clear"] == pytest.approx(0.5, abs=0.02)


def test_fifteen_percent_clear_scene_far_from_any_clear_s2_is_registered() -> None:
    """No Sentinel-2 scene within 10 days: the composite reference (<= 60 days) still serves."""
    ds, _ = synthetic_cube([(12.4, -7.7)], cloudy_rows={1: 0.85}, seed=5)
    ds = ds.assign_coords(time=pd.DatetimeIndex(["2024-06-01", "2024-06-25"]))
    tab = estimate_shifts(ds)
    row = tab.iloc[0]
    assert not row["flagged"], row
    assert np.hypot(row["dx"] - 12.4, row["dy"] + 7.7) <= 3.0, row
    old = estimate_shifts(ds, composite=False, max_days=10)  # the near-date rule found nothing
    assert old["flagged"].all()


def test_scene_with_no_clear_land_is_flagged() -> None:
    ds, _ = synthetic_cube([(12.4, -7.7)], cloudy_rows={1: 1.0}, seed=5)
    row = estimate_shifts(ds).iloc[0]
    assert row["flagged"] and row["dx"] == 0.0 and row["dy"] == 0.0


def test_min_clear_threshold_controls_flagging(cube: xr.Dataset) -> None:
    tab = estimate_shifts(cube.isel(time=[0, 3]), max_days=30, min_clear=0.6)
    assert tab["flagged"].all()


def test_max_days_limits_the_reference(cube: xr.Dataset) -> None:
    tab = estimate_shifts(cube.isel(time=[0, 1, 2]), max_days=1.5)
    assert list(tab["flagged"]) == [False, True]
    assert "within" in tab["reason"].iloc[1]


def test_pair_is_unbiased_by_mask_edges() -> None:
    """Identical masks in both images must not pull the estimate towards zero."""
    rng = np.random.default_rng(3)
    ref = ndimage.gaussian_filter(rng.normal(size=(96, 96)), 2.0)
    moving = ndimage.shift(ref, (-0.6, 1.3), order=3, mode="nearest")  # moving(p) = ref(p + (0.6, -1.3))
    mask = np.ones(ref.shape, bool)
    mask[20:60, 10:50] = False
    est = estimate_shift_pair(moving, ref, mask, mask, reference_sigma=0, moving_sigma=0)
    assert est.converged
    assert est.row == pytest.approx(0.6, abs=0.03)
    assert est.col == pytest.approx(-1.3, abs=0.03)


def test_pair_rejects_too_little_overlap() -> None:
    img = np.ones((32, 32))
    with pytest.raises(HarmonizeError, match="clear in both"):
        estimate_shift_pair(img, img, np.zeros((32, 32), bool), None)


def test_missing_inputs_raise_named_errors(cube: xr.Dataset) -> None:
    with pytest.raises(UnknownBandError):
        estimate_shifts(cube, band="nir")
    with pytest.raises(HarmonizeError, match="sentinel-2"):
        estimate_shifts(cube.isel(time=[1, 2]))


def test_shift_cube_aligns_landsat_with_reference(cube: xr.Dataset) -> None:
    table = estimate_shifts(cube, max_days=30, min_clear=0.3)  # scene 4 flagged: zero applied
    out = coregister(cube.chunk({"time": 1}), shifts=table)
    assert out["red"].chunks is not None  # still lazy
    np.testing.assert_array_equal(
        out["shift_flagged"].values, [False, False, False, False, False, True, False]
    )
    np.testing.assert_allclose(out["shift_x"].values[1:], table["dx"].to_numpy())
    ref = cube["red"].isel(time=0).values
    inner = (slice(8, -8), slice(8, -8))
    for k in (1, 2, 4):  # the shifted, clear scenes
        before = cube["red"].isel(time=k).values[inner]
        after = out["red"].isel(time=k).values[inner]
        ok = np.isfinite(after)
        r_before = np.corrcoef(before[ok], ref[inner][ok])[0, 1]
        r_after = np.corrcoef(after[ok], ref[inner][ok])[0, 1]
        assert r_after > r_before + 0.02, (k, r_before, r_after)
    # A second estimate on the corrected cube finds (almost) nothing left to correct.
    again = estimate_shifts(out.compute(), max_days=30, min_clear=0.3)
    ok = ~again["flagged"]
    assert np.abs(again["residual_dx"][ok]).max() < 1.5
    assert np.abs(again["residual_dy"][ok]).max() < 1.5


def test_shift_cube_sign_matches_convention() -> None:
    ds, _ = synthetic_cube([(0.0, 0.0)], n=64)
    tab = pd.DataFrame(
        {
            "residual_dx": [10.0],
            "residual_dy": [-20.0],
            "dx": [10.0],
            "dy": [-20.0],
            "flagged": [False],
            "quality": [1.0],
        },
        index=pd.DatetimeIndex([ds.time.values[1]], name="time"),
    )
    out = shift_cube(ds, tab)
    src = ds["red"].isel(time=1).values
    got = out["red"].isel(time=1).values
    # Adding (10, -20) m to the origin: source column c shows the ground of column c + 1 and
    # source row r that of row r + 2 (y runs down), so output (r, c) comes from (r - 2, c - 1).
    np.testing.assert_allclose(got[10:40, 10:40], src[8:38, 9:39], atol=1e-6)


# --- the simulator, end to end -----------------------------------------------------------------


def _simulator_ready() -> bool:
    try:
        from harmonize.cube import load_cube  # noqa: F401
        from harmonize.world import create_world  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def world_cube(request: pytest.FixtureRequest):
    if not _simulator_ready():
        pytest.skip("harmonize.cube / harmonize.world not in this checkout yet")
    import pystac

    from harmonize.cube import load_cube

    world = request.getfixturevalue("tiny_world")
    items = [pystac.Item.from_dict(d) for d in world.items()]
    items = [it for it in items if it.collection_id in ("sentinel-2-l2a", "landsat-c2-l2")]
    ds = load_cube(items, bands=["red", "nir"], geobox=world.geobox)
    table = estimate_shifts(ds)
    return world, ds, table, items


def _own_clear(ds: xr.Dataset) -> np.ndarray:
    landsat = ds.isel(time=np.flatnonzero(ds["sensor"].values == "landsat"))
    return ((landsat["clear"] & np.isfinite(landsat["red"])).mean(("y", "x"))).values


def test_simulator_shift_rmse_against_manifest(world_cube) -> None:
    world, ds, tab, _ = world_cube
    truth = np.array([world.scene(i)["shift"] for i in tab["item_id"]])
    own = _own_clear(ds)
    clear_enough = own >= 0.3
    assert clear_enough.sum() >= 2  # the tiny world has at least two such scenes
    assert not tab["flagged"].to_numpy()[clear_enough].any()
    est = tab[["dx", "dy"]].to_numpy()
    err = np.hypot(*(est - truth).T)
    rmse = float(np.sqrt(np.mean(err[clear_enough] ** 2)))
    assert rmse <= 2.0, tab.assign(true_dx=truth[:, 0], true_dy=truth[:, 1], err=err)
    # Every estimate the table does not flag is good, whatever the scene's clear fraction.
    ok = ~tab["flagged"].to_numpy()
    assert err[ok].max() <= 3.0, tab.assign(err=err)
    # Flagged scenes keep a zero shift (the cube was loaded without shifts).
    assert (est[~ok] == 0).all()


def _truth_corr(scene: xr.Dataset, truth: np.ndarray) -> float:
    m = scene["clear"].values & np.isfinite(scene["nir"].values)
    return float(np.corrcoef(scene["nir"].values[m], truth[m])[0, 1])


def test_simulator_one_way_load_raises_truth_correlation(world_cube) -> None:
    """The table loaded once (load_cube(items, shifts=table)) brings Landsat onto the truth."""
    from harmonize.cube import load_cube

    world, ds, tab, items = world_cube
    out = load_cube(items, bands=["red", "nir"], geobox=world.geobox, shifts=tab)
    assert out.sizes == ds.sizes
    assert out["nir"].chunks is not None  # lazy until here
    landsat = np.flatnonzero(out["sensor"].values == "landsat")
    np.testing.assert_array_equal(out["shift_flagged"].values[landsat], tab["flagged"].to_numpy())
    np.testing.assert_allclose(out["shift_quality"].values[landsat], tab["quality"].to_numpy())
    assert not out["shift_flagged"].values[out["sensor"].values == "sentinel-2"].any()
    moved = tab.index[(~tab["flagged"]) & (np.hypot(tab["dx"], tab["dy"]) > 5.0)]
    assert len(moved) >= 2
    truth = world.truth["nir"]
    resampled = coregister(ds, shifts=tab)  # the loaded cube resampled instead (twice resampled)
    for t in moved:
        ref = truth.sel(time=pd.Timestamp(t).normalize()).values
        before = ds.sel(time=t)[["nir", "clear"]].compute()
        after = out.sel(time=t)[["nir", "clear"]].compute()
        np.testing.assert_allclose(after["shift_x"].item(), tab.loc[t, "dx"])
        r_before, r_after = _truth_corr(before, ref), _truth_corr(after, ref)
        assert r_after > r_before + 0.01, (t, r_before, r_after)
        assert _truth_corr(resampled.sel(time=t)[["nir", "clear"]].compute(), ref) > r_before


def test_load_coregistered_is_probe_table_then_one_load(world_cube) -> None:
    """load_coregistered = estimate_shifts on a red/nir probe, then load_cube(shifts=table)."""
    from harmonize.cube import load_cube

    world, ds, tab, items = world_cube
    out = load_coregistered(items, ["red"], geobox=world.geobox)
    want = load_cube(items, ["red"], geobox=world.geobox, shifts=tab)
    np.testing.assert_array_equal(out["shift_x"].values, want["shift_x"].values)
    np.testing.assert_array_equal(out["shift_y"].values, want["shift_y"].values)
    np.testing.assert_array_equal(out["red"].values, want["red"].values)


def test_shift_table_moves_every_scene_of_a_grouped_step() -> None:
    """A row whose item_id joins same-day scenes gives each its shift, flag and quality."""
    from harmonize.cube import shifts_by_item

    tab = pd.DataFrame(
        {
            "item_id": ["LC_a,LC_b", "LC_c"],
            "dx": [5.0, 0.0],
            "dy": [-1.0, 0.0],
            "flagged": [False, True],
            "quality": [0.97, np.nan],
        },
        index=pd.DatetimeIndex(["2023-05-01", "2023-05-09"], name="time"),
    )
    moves, verdicts = shifts_by_item(tab)
    assert moves == {"LC_a": (5.0, -1.0), "LC_b": (5.0, -1.0), "LC_c": (0.0, 0.0)}
    assert verdicts["LC_a"] == (False, 0.97) and verdicts["LC_c"][0] is True
    assert shifts_by_item({"LC_a": (1, 2)}) == ({"LC_a": (1.0, 2.0)}, {})
    with pytest.raises(HarmonizeError, match="item_id"):
        shifts_by_item(tab.drop(columns="item_id"))


def test_separate_reference_cube_gives_the_same_table(cube: xr.Dataset, table: pd.DataFrame) -> None:
    landsat = cube.isel(time=slice(1, None))
    s2 = cube.isel(time=[0])
    sep = estimate_shifts(landsat, s2, max_days=30)
    pd.testing.assert_frame_equal(sep, table)


def test_threaded_registration_gives_the_sequential_table(cube: xr.Dataset) -> None:
    sequential = estimate_shifts(cube, max_days=30, threads=1)
    threaded = estimate_shifts(cube, max_days=30, threads=3)
    pd.testing.assert_frame_equal(sequential, threaded)


def test_rows_handed_over_batch_by_batch_make_the_table(cube: xr.Dataset, table: pd.DataFrame) -> None:
    batches: list[pd.DataFrame] = []
    got = estimate_shifts(cube, max_days=30, on_rows=batches.append)
    pd.testing.assert_frame_equal(got, table)
    assert batches and sum(len(b) for b in batches) == len(table)
    pd.testing.assert_frame_equal(pd.concat(batches), table, check_dtype=False)


@pytest.mark.parametrize("shift", [(1.37, -0.62), (0.0, 0.0), (-5.999, 6.2), (2.0, -3.0), (0.1, 0.9)])
def test_spline_samples_match_scipy(shift) -> None:  # noqa: ANN001
    """The refinement's shared-weight spline sampling gives map_coordinates' values and central
    differences at every point, near the edges (where scipy takes over) too."""
    from harmonize.coregister import pair

    rng = np.random.default_rng(3)
    coeffs = ndimage.spline_filter(ndimage.gaussian_filter(rng.normal(size=(64, 80)), 2), order=3)
    rows, cols = np.nonzero(rng.random(coeffs.shape) < 0.3)
    s = np.asarray(shift)

    def at(dr: float, dc: float) -> np.ndarray:
        coords = [rows + s[0] + dr, cols + s[1] + dc]
        return ndimage.map_coordinates(coeffs, coords, order=3, mode="nearest", prefilter=False)

    h = 0.25
    want = (at(0, 0), (at(h, 0) - at(-h, 0)) / (2 * h), (at(0, h) - at(0, -h)) / (2 * h))
    for got, ref in zip(pair._samples(coeffs, rows, cols, s), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
