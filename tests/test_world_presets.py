"""World presets against their own truth: the wet season's gaps, the land's texture, determinism."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from skimage.measure import regionprops

from harmonize.errors import WorldError
from harmonize.world import World, WorldConfig, create_world, open_world
from harmonize.world.clouds import wet_season_opacity
from harmonize.world.landscape import LANDCOVER, landscape_of
from harmonize.world.presets import PRESETS, preset_config, preset_names

_FOREST = next(k for k, v in LANDCOVER.items() if v == "forest")


def _clear_looks_per_month(world: World, sensor: str) -> dict[str, np.ndarray]:
    """Per calendar month, how often each quality-grid pixel was seen clear (the injected masks)."""
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((), np.int32))
    for s in world.scenes:
        if s["sensor"] == sensor:
            counts[s["date"][:7]] = counts[s["date"][:7]] + world.injected_masks(s["id"])["clear"].values
    return dict(counts)


@pytest.fixture(scope="module")
def wet_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """cloudy-season on 0.96 km from May (dry) to July (wet season since 1 June)."""
    cfg = preset_config("cloudy-season", size_km=0.96, start="2023-05-01", end="2023-07-31")
    return create_world(tmp_path_factory.mktemp("wet") / "world", cfg, progress=False)


def test_cloudy_season_leaves_sentinel2_month_long_gaps(wet_world: World) -> None:
    s2 = _clear_looks_per_month(wet_world, "sentinel-2")
    landsat = _clear_looks_per_month(wet_world, "landsat")
    for month in ("2023-06", "2023-07"):  # whole months inside the wet season
        assert s2[month].mean() < 1.0, f"{month}: fewer than one clear Sentinel-2 look per pixel"
        assert (s2[month] == 0).mean() > 0.4, f"{month}: many pixels go the whole month unseen"
        assert landsat[month].mean() < 1.0
    assert s2["2023-05"].mean() > 2.0, "before the season clouds are drawn per scene, as in the demo"
    # The deck is one sky: the same-day Landsat and Sentinel-2 scenes agree on it (no independent draw).
    by_date = defaultdict(dict)
    for s in wet_world.scenes:
        by_date[s["date"]][s["sensor"]] = s["cloud_fraction"]
    same_day = [d for d, v in by_date.items() if len(v) == 2 and d >= "2023-06-01"]
    assert same_day
    for d in same_day:
        assert by_date[d]["landsat"] == pytest.approx(by_date[d]["sentinel-2"], abs=0.02), d


def test_wet_season_clouds_persist_and_drift_slowly() -> None:
    cfg = preset_config("cloudy-season")
    shape = (552, 552)  # the deck is drawn on at least 5.52 km; this is all of it
    t0 = dt.datetime(2023, 7, 1, 10, 30, tzinfo=dt.timezone.utc)

    def clear(days: float) -> np.ndarray:
        when = t0 + dt.timedelta(days=days)
        return wet_season_opacity(shape, when, seed=cfg.seed, res=10.0, cover=cfg.wet_season_cover) == 0

    now = clear(0)
    assert 0.02 < now.mean() < 0.35, "a wet-season sky is mostly cloud, with breaks"

    def still_clear(days: float) -> float:
        return float((now & clear(days)).sum() / now.sum())

    assert still_clear(1) > 0.7 and still_clear(1) > 2.5 * clear(1).mean(), "breaks persist for days"
    assert still_clear(30) < 0.5 * still_clear(1), "and drift away over weeks"
    assert np.array_equal(now, clear(0)), "the deck depends only on seed and time"
    assert not cfg.in_wet_season(dt.date(2023, 5, 31)) and cfg.in_wet_season(dt.date(2023, 8, 15))
    wrap = WorldConfig(wet_season=("12-01", "02-15"))
    assert wrap.in_wet_season(dt.date(2023, 1, 10)) and not wrap.in_wet_season(dt.date(2023, 3, 1))


def _within_field_cv(land, date: dt.date) -> float:  # noqa: ANN001 - a Landscape
    """Mean over fields of the coefficient of variation of red reflectance inside each field."""
    red = land.reflectance(date)[2]
    fid = land.field_id
    return float(np.mean([red[fid == f].std() / red[fid == f].mean() for f in np.unique(fid[fid > 0])]))


def test_realistic_land_has_texture_hedgerows_and_small_irregular_fields() -> None:
    shape = (160, 160)
    flat = landscape_of(preset_config("demo"), shape)
    real = landscape_of(preset_config("realistic-land"), shape)
    june = dt.date(2023, 6, 20)
    assert _within_field_cv(flat, june) < 0.06, "the demo's fields stay flat up to management zones"
    assert _within_field_cv(real, june) > 0.08, "realistic fields vary inside"
    ndvi = lambda r: (r[3] - r[2]) / (r[3] + r[2])  # noqa: E731
    n = ndvi(real.reflectance(june))
    inside = [n[real.field_id == f].std() for f in np.unique(real.field_id[real.field_id > 0])]
    assert np.median(inside) > 0.02, "texture shows in NDVI (vigour, rows, wet patches), not just brightness"
    assert (real.wet > 0.5).any() and real.vigor.min() < 0.8 < 1.1 < real.vigor.max()
    # Hedgerows: tree lines (forest pixels) along field edges, absent from the flat world's edges.
    fid = real.field_id
    edge = np.zeros(shape, bool)
    edge[:, 1:] |= (fid[:, 1:] > 0) & (fid[:, 1:] != fid[:, :-1])
    edge[:, :-1] |= (fid[:, :-1] > 0) & (fid[:, :-1] != fid[:, 1:])
    beside = np.zeros(shape, bool)
    beside[:, :-1] |= edge[:, 1:]
    beside[:, 1:] |= edge[:, :-1]
    assert (real.landcover[beside & (fid == 0)] == _FOREST).mean() > 0.2
    # Small, irregular fields: about 2 ha instead of 5, no longer convex Voronoi polygons.
    area_ha = [r.area / 100 for r in regionprops(real.field_id)]
    assert np.mean(area_ha) < 0.5 * np.mean([r.area / 100 for r in regionprops(flat.field_id)])

    def solidity(land) -> float:  # noqa: ANN001 - median field area / its convex hull's
        return float(np.median([r.solidity for r in regionprops(land.field_id) if r.area > 20]))

    assert solidity(flat) > 0.9 and solidity(real) < 0.87


def test_same_seed_same_arrays_other_seed_other_land() -> None:
    shape = (120, 120)
    cfg = preset_config("cloudy-season")
    a, b = landscape_of(cfg, shape), landscape_of(cfg, shape)
    day = dt.date(2023, 7, 1)
    assert np.array_equal(a.unit, b.unit) and np.array_equal(a.vigor, b.vigor)
    assert np.array_equal(a.reflectance(day), b.reflectance(day))
    other = landscape_of(cfg.model_copy(update={"seed": 1}), shape)
    assert not np.array_equal(a.reflectance(day), other.reflectance(day))


def test_demo_preset_is_the_default_world() -> None:
    assert preset_config("demo") == WorldConfig() == preset_config(None)
    assert preset_config("demo", tiny=True) == WorldConfig.tiny()
    assert preset_config("cloudy-season", seed=4, size_km=1.28).seed == 4
    assert set(preset_names()) >= {"demo", "cloudy-season", "realistic-land"}


def test_unknown_preset_is_a_named_error_listing_the_presets(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match="unknown world preset 'rainy'") as err:
        preset_config("rainy")
    assert all(name in str(err.value) for name in PRESETS)
    from pipelines.cli import main

    result = CliRunner().invoke(main, ["world", "create", str(tmp_path / "w"), "--preset", "rainy"])
    assert result.exit_code == 2 and "cloudy-season" in result.output
    assert not (tmp_path / "w").exists()
    listed = CliRunner().invoke(main, ["world", "presets"])
    assert listed.exit_code == 0 and all(name in listed.output for name in PRESETS)


def test_world_create_takes_a_preset(tmp_path: Path) -> None:
    from pipelines.cli import main

    out = tmp_path / "w"
    args = ["world", "create", str(out), "--preset", "realistic-land", "--tiny"]
    result = CliRunner().invoke(main, [*args, "--size-km", "0.64", "--end", "2023-05-10"])
    assert result.exit_code == 0, result.output
    w = open_world(out)
    assert w.config == preset_config("realistic-land", tiny=True, size_km=0.64, end="2023-05-10")
    assert w.config.field_texture == 1.0 and (w.truth["landcover"].values == _FOREST).any()


def test_demo_takes_a_world_preset() -> None:
    from pipelines.core.config import read_mapping
    from pipelines.demo.run import DemoConfig, world_config

    config = DemoConfig(**read_mapping(Path(__file__).parents[1] / "pipelines/configs/demo.yaml"))
    assert config.world_preset == "demo"
    wcfg = world_config(size_km=1.28, tiny=False, world={"seed": 2}, preset="cloudy-season")
    assert wcfg == preset_config("cloudy-season", size_km=1.28, seed=2)
    with pytest.raises(WorldError, match="unknown world preset"):
        world_config(size_km=None, tiny=True, world=None, preset="monsoon")


def _rasters_and_truth(root: Path) -> dict[str, bytes]:
    """Every COG and truth chunk of a world (items hold the folder's path, so they differ)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (p.suffix.lower() == ".tif" or "truth.zarr" in p.parts)
    }


def test_a_cloudy_season_world_is_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    cfg = preset_config("cloudy-season", size_km=0.64, start="2023-06-01", end="2023-06-10")
    a = create_world(tmp_path / "a", cfg, progress=False)
    b = create_world(tmp_path / "b", cfg, progress=False)
    assert _rasters_and_truth(a.root) and _rasters_and_truth(a.root) == _rasters_and_truth(b.root)
    assert any(s["cloud_fraction"] > 0.5 for s in a.scenes), "the wet season's deck is in the scenes"


# --- two-zones: an AOI across the UTM zone 14/15 boundary (issue 17 item 3) ---


@pytest.fixture(scope="module")
def two_zone_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The tiny two-zones world, noise-free, cloud-free and unshifted so pixels compare with truth:
    Sentinel-2 passes on 1, 6 and 11 May; path 27 on 3 and 11 May, path 28 on 4 and 12 May."""
    cfg = preset_config(
        "two-zones",
        tiny=True,
        end="2023-05-12",
        noise=0.0,
        clear_probability=1.0,
        cirrus_probability=0.0,
        edge_nodata_probability=0.0,
        max_shift_px=0.0,
    )
    return create_world(tmp_path_factory.mktemp("zones") / "world", cfg, progress=False)


def _uniform(truth_band: np.ndarray, size: int) -> np.ndarray:
    """Pixels whose ``size`` x ``size`` neighbourhood in the truth is one reflectance: there the
    sensors' resolution and resampling cannot change the value."""
    from scipy import ndimage

    return ndimage.maximum_filter(truth_band, size) - ndimage.minimum_filter(truth_band, size) < 3e-3


def test_two_zones_has_tiles_and_paths_in_two_zones(two_zone_world: World) -> None:
    from harmonize.world.zones import boundary_fraction

    items = two_zone_world.items()
    s2 = [i for i in items if i["collection"] == "sentinel-2-l2a"]
    landsat = [i for i in items if i["collection"] == "landsat-c2-l2"]
    tiles = {(i["properties"]["s2:mgrs_tile"], i["properties"]["proj:code"]) for i in s2}
    assert tiles == {("14SQJ", "EPSG:32614"), ("15STD", "EPSG:32615")}
    by_time: dict[str, set] = defaultdict(set)
    for i in s2:
        by_time[i["properties"]["datetime"]].add(i["properties"]["s2:mgrs_tile"])
    assert len(by_time) == 3 and all(v == {"14SQJ", "15STD"} for v in by_time.values()), "one pass, two tiles"
    paths = defaultdict(set)
    for i in landsat:
        p = i["properties"]
        paths[(p["landsat:wrs_path"], p["proj:code"])].add(p["datetime"][:10])
    assert paths == {
        ("028", "EPSG:32614"): {"2023-05-04", "2023-05-12"},
        ("027", "EPSG:32615"): {"2023-05-03", "2023-05-11"},
    }, "neighbouring paths, each in its own zone, imaged on different days"
    assert 0.3 < boundary_fraction(two_zone_world.config) < 0.8
    # The manifest's masks carry each scene's CRS: the eastern tile's are on EPSG:32615.
    east = next(s for s in two_zone_world.scenes if s["tile"] == "15STD")
    assert two_zone_world.injected_masks(east["id"]).rio.crs.to_epsg() == 32615


def test_two_zones_mosaic_has_no_gap_and_matches_truth_on_both_sides(two_zone_world: World) -> None:
    import pystac

    from harmonize.cube import load_cube
    from harmonize.world.zones import _boundary_x

    w = two_zone_world
    items = [pystac.Item.from_dict(d) for d in w.items() if d["collection"] == "sentinel-2-l2a"]
    cube = load_cube(items, bands=["red", "blue"]).compute()
    assert cube.odc.geobox.crs.epsg == 32614, "the AOI centre's zone (the tiles tie 3 to 3)"
    # The tiles' footprints together are the AOI: the default grid is the truth's, pixel for pixel.
    assert cube.odc.geobox.shape == w.geobox.shape
    assert cube.odc.geobox.transform.almost_equals(w.geobox.transform)
    assert cube.sizes["time"] == 3, "each pass's two tiles are one mosaic"
    xb = _boundary_x(w.config)
    for i in range(3):
        platform = str(cube["platform"].values[i])
        day = np.datetime64(str(cube["time"].values[i])[:10])
        truth = w.truth_as_seen_by(platform).sel(time=day)
        truth = truth.reindex(y=cube["y"], x=cube["x"], method="nearest", tolerance=1.0).compute()
        for band in ("red", "blue"):
            got, want = cube[band].isel(time=i).values, truth[band].values
            aoi = ~np.isnan(want)
            assert not np.isnan(got[aoi]).any(), f"{platform} {band}: NaN in the AOI (a gap between tiles)"
            flat = aoi & _uniform(np.nan_to_num(want), 5)
            x = np.broadcast_to(cube["x"].values[None, :], got.shape)
            for side, where in (("west", x < xb - 150), ("east", x > xb + 150), ("seam", abs(x - xb) <= 150)):
                sel = flat & where
                assert sel.sum() > 50, side
                err = np.abs(got[sel] - want[sel])
                assert np.median(err) < 5e-4 and np.quantile(err, 0.99) < 2e-3, (platform, band, side)


def test_two_zones_landsat_paths_cover_their_sides_and_the_sidelap(two_zone_world: World) -> None:
    import pystac

    from harmonize.cube import load_cube

    w = two_zone_world
    items = [pystac.Item.from_dict(d) for d in w.items() if d["collection"] == "landsat-c2-l2"]
    cube = load_cube(items, bands=["red"], geobox=w.geobox).compute()
    assert cube.sizes["time"] == 4, "the two paths' scenes are separate dates"
    valid = ~np.isnan(cube["red"].values)
    share = valid.mean(axis=(1, 2))
    assert np.all((share > 0.6) & (share < 0.8)), share  # each path covers 70 % of the AOI
    path = np.array([str(i)[10:13] for i in cube["item_id"].values])
    west, east = valid[path == "028"].all(axis=0), valid[path == "027"].all(axis=0)
    assert (west | east).all(), "together the paths cover the whole AOI"
    assert 0.3 < (west & east).mean() < 0.5, "the middle 40 % is sidelap"
    assert west[:, 0].all() and east[:, -1].all() and not west[:, -1].any() and not east[:, 0].any()
    truth = w.truth_as_seen_by("landsat-8").compute()
    for i, t in enumerate(cube["time"].values):
        want = truth["red"].sel(time=np.datetime64(str(t)[:10])).values
        ok = valid[i] & _uniform(want, 11)
        err = np.abs(cube["red"].values[i][ok] - want[ok])
        assert ok.sum() > 100 and np.median(err) < 1e-3, (path[i], np.median(err))


def test_two_zones_needs_the_boundary_inside_the_aoi_and_says_where_to_put_it() -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError, match=r"crosses the AOI at .* origin=\(7\d{5}, 4321000\)"):
        WorldConfig(two_zones=True)  # the demo's origin: 200 km west of the zone boundary
    hint = WorldConfig(two_zones=True, origin=(756_920.0, 4_321_000.0))
    assert hint == preset_config("two-zones")
    with pytest.raises(pydantic.ValidationError, match="wrs_path >= 2"):
        preset_config("two-zones", wrs_path=1)
