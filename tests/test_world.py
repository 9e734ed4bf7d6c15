"""The simulated archive against its own truth: radiometry, geometry, masks, metadata, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import odc.geo.xr  # noqa: F401 - the .odc accessor
import pystac
import pytest
import rasterio
from pydantic import ValidationError
from skimage.registration import phase_cross_correlation

from harmonize.bands import REFLECTANCE_BANDS
from harmonize.errors import WorldError
from harmonize.providers import asset_href, band_scaling, profile_for_item
from harmonize.qa import MASK_NAMES, landsat_masks, scl_masks
from harmonize.world import World, WorldConfig, create_world, open_world
from harmonize.world.grids import Grid
from harmonize.world.sensors import PSF_SIGMA, noise_sigma, pan_toa, project, spectral

# ---------------------------------------------------------------- helpers


def _items(world: World) -> dict[str, pystac.Item]:
    return {d["id"]: pystac.Item.from_dict(d) for d in world.items()}


def _read(item: pystac.Item, band: str) -> tuple[np.ndarray, Grid]:
    with rasterio.open(asset_href(item, band)) as ds:
        t = ds.transform
        return ds.read(1), Grid(t.c, t.f, t.a, ds.height, ds.width)


def _reflectance(item: pystac.Item, band: str) -> tuple[np.ndarray, Grid]:
    dn, grid = _read(item, band)
    return band_scaling(item, band).apply(dn), grid


def _truth_msi(world: World, date: str) -> np.ndarray:
    t = world.truth.sel(time=date)
    return np.stack([t[b].values for b in REFLECTANCE_BANDS]).astype(np.float32)


def _inner(grid: Grid, k: int) -> Grid:
    """``grid`` without ``k`` pixels on each side."""
    return Grid(grid.x0 + k * grid.res, grid.y0 - k * grid.res, grid.res, grid.ny - 2 * k, grid.nx - 2 * k)


def _clear_scene(world: World, sensor: str) -> dict:
    clear = [
        s for s in world.scenes if s["sensor"] == sensor and s["eo:cloud_cover"] == 0 and not s["nodata_edge"]
    ]
    assert clear, f"the tiny world should hold a cloud-free {sensor} scene"
    return clear[0]


def _landsat_k(world: World, res: float) -> int:
    # Pixels to drop so the PSF support of every kept pixel, shifted, lies inside the truth's AOI.
    reach = 60 + 30 * world.config.max_shift_px + res / 2 + 5 * PSF_SIGMA[("landsat", int(res))]
    return int(np.ceil(reach / res))


# ---------------------------------------------------------------- metadata


def test_items_resolve_and_look_like_the_providers(tiny_world: World) -> None:
    items = _items(tiny_world)
    scenes = tiny_world.scenes
    n_s2 = sum(s["sensor"] == "sentinel-2" for s in scenes)
    n_l = sum(s["sensor"] == "landsat" for s in scenes)
    assert len(items) == n_s2 + 2 * n_l
    by_coll: dict[str, int] = {}
    for item in items.values():
        by_coll[item.collection_id] = by_coll.get(item.collection_id, 0) + 1
        profile = profile_for_item(item)
        for band in (*profile.bands, "qa"):
            s = band_scaling(item, band)
            href = asset_href(item, band)
            assert href.startswith("file:///") and Path(href[7:]).exists()
            with rasterio.open(href) as ds:
                assert ds.dtypes[0] == s.dtype and ds.nodata == s.nodata
                # pystac migrates projection v1.1 (proj:epsg) to proj:code, as for real items.
                assert f"EPSG:{ds.crs.to_epsg()}" == item.properties["proj:code"] == tiny_world.crs
                assert ds.overviews(1), "COGs carry overviews"
                assert ds.block_shapes[0] == (256, 256)
                key = profile.qa_asset if band == "qa" else profile.assets[band]
                assert list(ds.transform)[:6] == item.assets[key].extra_fields["proj:transform"]
        props = item.properties
        assert props["created"][:10] >= item.datetime.strftime("%Y-%m-%d")  # derived, not "now"
        assert props["created"][:4] == "2023"
        assert "view:sun_azimuth" in props and 0 < props["view:sun_elevation"] < 90
    assert by_coll == {"sentinel-2-l2a": n_s2, "landsat-c2-l2": n_l, "landsat-c2l1": n_l}
    s2 = next(i for i in items.values() if i.collection_id == "sentinel-2-l2a")
    assert s2.properties["s2:processing_baseline"] == "05.09"
    assert band_scaling(s2, "red").offset == pytest.approx(-0.1)
    l2 = next(i for i in items.values() if i.collection_id == "landsat-c2-l2")
    assert l2.properties["platform"] in ("landsat-8", "landsat-9")
    assert l2.properties["landsat:wrs_path"] == "028"
    assert band_scaling(l2, "red").scale == pytest.approx(2.75e-5)
    # stac-geoparquet holds the same items; collections are documents of their own.
    import rustac

    parquet = rustac.read_sync(str(tiny_world.items_path))
    assert sorted(f["id"] for f in parquet["features"]) == sorted(items)
    for cid, path in tiny_world.collection_paths.items():
        doc = json.loads(path.read_text())
        assert doc["id"] == cid and doc["type"] == "Collection"
    assert set(tiny_world.collection_paths) == set(by_coll)
    raw = tiny_world.items()[0]["properties"]
    assert raw["proj:epsg"] == tiny_world.config.epsg and raw["proj:code"] == tiny_world.crs


def test_each_sensor_samples_its_own_lattice(tiny_world: World) -> None:
    for item in _items(tiny_world).values():
        for key, asset in item.assets.items():
            res, _, x0, _, _, y0 = asset.extra_fields["proj:transform"]
            if item.collection_id == "sentinel-2-l2a":
                assert x0 % res == 0 and y0 % res == 0, (item.id, key)
            else:
                assert res in (15, 30) and x0 % 15 == 0 and y0 % 15 == 0, (item.id, key)
                assert x0 % 10 == 5 and y0 % 10 == 5, "Landsat pixel edges lie off the 10 m lattice"
    geobox = tiny_world.geobox
    assert geobox.resolution.x == 10 and geobox.shape == (128, 128)
    assert tiny_world.truth.odc.geobox == geobox


def test_calendars_and_coincidences(tiny_world: World) -> None:
    dates = {s["sensor"]: [] for s in tiny_world.scenes}
    for s in tiny_world.scenes:
        dates[s["sensor"]].append(np.datetime64(s["date"]))
    s2, ls = np.array(dates["sentinel-2"]), np.array(dates["landsat"])
    assert set(np.diff(s2).astype(int)) == {5}
    assert set(np.diff(ls).astype(int)) == {8}
    plats = [s["platform"] for s in tiny_world.scenes if s["sensor"] == "sentinel-2"]
    assert all(a != b for a, b in zip(plats[:-1], plats[1:], strict=True)), "S2A and S2B alternate"
    assert set(s2) & set(ls), "some days are seen by both sensors"
    truth_times = tiny_world.truth.time.values.astype("datetime64[D]")
    assert sorted(set(s2) | set(ls)) == list(truth_times)


# ---------------------------------------------------------------- radiometry


def test_sentinel2_reflectance_is_truth_through_the_sensor(tiny_world: World) -> None:
    scene = _clear_scene(tiny_world, "sentinel-2")
    item = _items(tiny_world)[scene["id"]]
    msi = spectral(_truth_msi(tiny_world, scene["date"]), scene["platform"])
    aoi = tiny_world.grids.aoi
    for band in ("red", "nir", "swir22"):
        refl, grid = _reflectance(item, band)
        res = int(grid.res)
        k = 4 if res == 10 else 3
        model = project(
            msi[REFLECTANCE_BANDS.index(band)], aoi, _inner(grid, k), PSF_SIGMA[("sentinel-2", res)]
        )
        obs = refl[k:-k, k:-k]
        z = (obs - model) / noise_sigma(model, "sentinel-2")
        assert abs(float(z.mean())) < 0.1, band
        assert 0.85 < float(z.std()) < 1.15, band


def test_landsat_reflectance_and_pan_are_truth_through_the_shifted_sensor(tiny_world: World) -> None:
    scene = _clear_scene(tiny_world, "landsat")
    items = _items(tiny_world)
    shift = tuple(scene["shift"])
    oli = spectral(_truth_msi(tiny_world, scene["date"]), scene["platform"])
    aoi = tiny_world.grids.aoi
    for band in ("blue", "nir", "swir16"):
        refl, grid = _reflectance(items[scene["id"]], band)
        k = _landsat_k(tiny_world, 30)
        model = project(
            oli[REFLECTANCE_BANDS.index(band)], aoi, _inner(grid, k), PSF_SIGMA[("landsat", 30)], shift
        )
        z = (refl[k:-k, k:-k] - model) / noise_sigma(model, "landsat")
        assert abs(float(z.mean())) < 0.15 and 0.8 < float(z.std()) < 1.2, band
        # The same comparison without the recorded shift is far worse: the shift is real.
        unshifted = project(
            oli[REFLECTANCE_BANDS.index(band)], aoi, _inner(grid, k), PSF_SIGMA[("landsat", 30)]
        )
        assert float(np.abs(refl[k:-k, k:-k] - unshifted).mean()) > 2 * float(
            np.abs(refl[k:-k, k:-k] - model).mean()
        )
    pan, grid = _reflectance(items[scene["l1_id"]], "pan")
    k = _landsat_k(tiny_world, 15)
    model = project(pan_toa(oli), aoi, _inner(grid, k), PSF_SIGMA[("landsat", 15)], shift)
    z = (pan[k:-k, k:-k] - model) / noise_sigma(model, "pan")
    assert abs(float(z.mean())) < 0.15 and 0.8 < float(z.std()) < 1.2


def test_recorded_shift_is_what_registration_finds(tiny_world: World) -> None:
    from skimage.filters import window

    checked = 0
    items = _items(tiny_world)
    aoi = tiny_world.grids.aoi
    for scene in tiny_world.scenes:
        if scene["sensor"] != "landsat" or scene["eo:cloud_cover"] > 0 or scene["nodata_edge"]:
            continue
        red, grid = _reflectance(items[scene["id"]], "red")
        k = _landsat_k(tiny_world, 30)
        oli = spectral(_truth_msi(tiny_world, scene["date"]), scene["platform"])
        reference = project(
            oli[REFLECTANCE_BANDS.index("red")], aoi, _inner(grid, k), PSF_SIGMA[("landsat", 30)]
        )
        moving = red[k:-k, k:-k]
        w = window("hann", moving.shape)
        found, _, _ = phase_cross_correlation(
            (reference - reference.mean()) * w, (moving - moving.mean()) * w, upsample_factor=100
        )
        dx, dy = scene["shift"]
        # moving(row, col) = reference(row - dy/30, col + dx/30): registration finds (-dy, dx)/30.
        assert found == pytest.approx([-dy / 30, dx / 30], abs=0.1), scene["id"]
        checked += 1
    assert checked >= 1


def test_truth_has_crop_phenology_and_sharp_fields(tiny_world: World) -> None:
    t = tiny_world.truth
    assert t["red"].dtype == np.float32 and t.rio.crs.to_epsg() == tiny_world.config.epsg
    ndvi = ((t["nir"] - t["red"]) / (t["nir"] + t["red"])).compute()
    fid = t["field_id"].values
    crop = dict(zip(t["field"].values, t["field_crop"].values, strict=True))
    first, last = ndvi.isel(time=0).values, ndvi.isel(time=-1).values
    maize = np.isin(fid, [f for f, c in crop.items() if c == 1])
    wheat = np.isin(fid, [f for f, c in crop.items() if c == 3])
    assert maize.any() and wheat.any()
    assert np.median(last[maize]) > np.median(first[maize]) + 0.2, "maize greens up May -> June"
    assert np.median(first[wheat]) > 0.6, "winter wheat is green in May"
    water = t["landcover"].values == 4
    if water.any():
        assert np.median(first[water]) < 0
    # Fields are uniform up to their texture; neighbours differ: edges a 30 m pixel cannot resolve.
    red = t["red"].isel(time=-1).values
    within = np.mean([red[fid == f].std() / red[fid == f].mean() for f in np.unique(fid[fid > 0])])
    assert within < 0.06
    nir = t["nir"].isel(time=-1).values
    step = np.abs(np.diff(nir, axis=1))
    across = fid[:, 1:] != fid[:, :-1]
    inside = ~across & (fid[:, 1:] > 0)
    assert np.mean(step[across]) > 5 * np.mean(step[inside]), "field edges are one-pixel sharp"
    assert set(np.unique(fid[fid > 0])) <= set(t["field"].values.tolist())


# ---------------------------------------------------------------- masks


def test_quality_bands_decode_to_the_injected_masks(tiny_world: World) -> None:
    items = _items(tiny_world)
    for scene in tiny_world.scenes:
        injected = tiny_world.injected_masks(scene["id"])
        for item_id in filter(None, (scene["id"], scene["l1_id"])):
            item = items[item_id]
            qa, grid = _read(item, "qa")
            assert (grid.x0, grid.y0) == (
                float(injected.x[0]) - grid.res / 2,
                float(injected.y[0]) + grid.res / 2,
            )
            decoded = landsat_masks(qa) if scene["sensor"] == "landsat" else scl_masks(qa)
            for name in MASK_NAMES:
                assert np.array_equal(decoded[name], injected[name].values), (item_id, name)
            valid = ~decoded["nodata"]
            cover = 100 * float((decoded["cloud"] | decoded["cirrus"])[valid].mean())
            assert item.properties["eo:cloud_cover"] == pytest.approx(cover, abs=0.5)
        if scene["sensor"] == "landsat":  # reflectance nodata is exactly QA fill
            dn, _ = _read(items[scene["id"]], "red")
            assert np.array_equal(dn == 0, injected["nodata"].values)
    assert any(s["nodata_edge"] for s in tiny_world.scenes), "some scenes are cut by a swath edge"
    assert any(0 < s["eo:cloud_cover"] < 100 for s in tiny_world.scenes)


def test_masks_mark_what_the_pixels_show(tiny_world: World) -> None:
    """Cloudy pixels are bright, shadowed pixels dark, clear pixels agree with the truth."""
    items = _items(tiny_world)
    aoi = tiny_world.grids.aoi
    seen = {"cloud": 0, "shadow": 0}
    for scene in tiny_world.scenes:
        if scene["sensor"] != "sentinel-2" or scene["eo:cloud_cover"] in (0, 100):
            continue
        item = items[scene["id"]]
        m = tiny_world.injected_masks(scene["id"])
        nir, grid = _reflectance(item, "nir")
        k = 3
        msi = spectral(_truth_msi(tiny_world, scene["date"]), scene["platform"])
        model = project(
            msi[REFLECTANCE_BANDS.index("nir")], aoi, _inner(grid, k), PSF_SIGMA[("sentinel-2", 20)]
        )
        obs = nir[k:-k, k:-k]
        inner = {n: m[n].values[k:-k, k:-k] for n in ("clear", "cloud_high", "shadow", "cloud", "cirrus")}
        clear = inner["clear"]
        if clear.sum() > 50:
            z = (obs - model)[clear] / noise_sigma(model[clear], "sentinel-2")
            assert abs(float(np.median(z))) < 0.5 and np.percentile(np.abs(z), 90) < 2.5, scene["id"]
        high = inner["cloud_high"]
        if high.sum() > 20:
            assert np.median(obs[high]) > 0.45, "thick cloud is bright in the NIR"
            seen["cloud"] += 1
        shadow = inner["shadow"] & ~inner["cloud"] & ~inner["cirrus"]
        if shadow.sum() > 20:
            ratio = obs[shadow] / model[shadow]
            # Flagged shadow includes penumbra (the detector is conservative); its core is dark.
            assert np.median(ratio) < 0.95 and np.percentile(ratio, 10) < 0.6, "shadow darkens the ground"
            seen["shadow"] += 1
    assert seen["cloud"] and seen["shadow"]


# ---------------------------------------------------------------- lifecycle


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_config_gives_byte_identical_archives(tmp_path: Path) -> None:
    cfg = WorldConfig.tiny(size_km=0.64, end="2023-05-12")
    root = tmp_path / "w"
    create_world(root, cfg, progress=False)
    first = _checksums(root)
    create_world(root, cfg, progress=False, overwrite=True)
    assert _checksums(root) == first
    assert any(k.endswith(".tif") for k in first) and any(k.endswith(".TIF") for k in first)
    other = tmp_path / "seed1"
    create_world(other, cfg.model_copy(update={"seed": 1}), progress=False)
    differ = [k for k, v in _checksums(other).items() if first.get(k) != v]
    assert any("truth.zarr" in k for k in differ) and any(k.endswith("B04.tif") for k in differ)


def test_worker_processes_write_the_files_the_threads_write(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A large world's dates are simulated on forked worker processes, a small one's on
    threads: the same world comes out byte for byte either way (the tiny world forced onto
    the processes)."""
    import harmonize.world.archive as archive

    cfg = WorldConfig.tiny(size_km=0.64, end="2023-05-12")
    root = tmp_path / "w"
    create_world(root, cfg, progress=False)
    threads = _checksums(root)
    pools = []
    real = archive._date_pool
    monkeypatch.setattr(archive, "_date_pool", lambda *a: (pools.append(a[-1]), real(*a))[1])
    create_world(root, cfg, progress=False, overwrite=True)
    monkeypatch.setattr(archive, "_PROCESS_WORK", 0)
    create_world(root, cfg, progress=False, overwrite=True)
    assert pools == [False, True]  # threads, then worker processes
    assert _checksums(root) == threads


def test_existing_worlds_are_reused_or_refused(tiny_world: World, tmp_path: Path) -> None:
    again = create_world(tiny_world.root, tiny_world.config, progress=False)
    assert again.root == tiny_world.root and again.manifest == tiny_world.manifest
    with pytest.raises(WorldError, match="different world"):
        create_world(tiny_world.root, tiny_world.config.model_copy(update={"seed": 7}), progress=False)
    (tmp_path / "junk.txt").write_text("not a world")
    with pytest.raises(WorldError, match="no complete world"):
        create_world(tmp_path, WorldConfig.tiny(), progress=False)
    with pytest.raises(WorldError):
        open_world(tmp_path)
    with pytest.raises(WorldError, match="No scene"):
        tiny_world.injected_masks("LC08_L2SP_000000_20990101_02_T1")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size_km": 1.27}, "multiple of 0.02 km"),
        ({"origin": (552_005.0, 4_321_000.0)}, "20 m"),
        ({"epsg": 4326}, "UTM"),
        ({"start": "2023-06-01", "end": "2023-05-01"}, "before start"),
        ({"start": "2021-06-01"}, "baseline"),
        ({"max_shift_px": 3}, "less than or equal"),
        ({"unknown": 1}, "Extra inputs"),
        ({"wet_season": ("6-1", "08-15")}, "MM-DD"),
        ({"wet_season": ("02-30", "03-15")}, "MM-DD"),
        ({"wet_season_cover": (0.9, 0.5)}, "low <= high"),
        ({"field_texture": -1}, "greater than or equal"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorldConfig(**kwargs)


def test_world_api(tiny_world: World) -> None:
    w = open_world(tiny_world.root)
    assert w.config == WorldConfig.tiny()
    west, south, east, north = w.bbox
    assert -99 < west < east < -98 and 38 < south < north < 40
    left, bottom, right, top = w.bbox_utm
    assert right - left == 1280 and top - bottom == 1280
    assert "ADD" in w.manifest["shift_convention"]
    shifts = [s["shift"] for s in w.scenes if s["sensor"] == "landsat"]
    assert all(abs(v) <= 30 for s in shifts for v in s) and len({tuple(s) for s in shifts}) == len(shifts)
    oli = w.truth_as_seen_by("landsat-8")["red"].isel(time=0).values
    assert np.allclose(oli, spectral(_truth_msi(w, str(w.truth.time.values[0])[:10]), "landsat-8")[2])
