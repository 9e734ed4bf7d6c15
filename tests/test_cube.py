"""load_cube against real provider item shapes, pointed at tiny local COGs with known DNs.

Each real item document from /work/shared/stac-items is rewritten to a 240 m square inside its
own scene (same CRS, same pixel grid), and every asset the cube reads is written as a small COG
of the provider's dtype whose DNs are constant per 60 m block (a value known per block and band).
Expected reflectance is computed here from each provider's published rule, independently of
harmonize.providers.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from affine import Affine
from odc.geo import geom
from odc.geo.geobox import GeoBox

from harmonize import errors
from harmonize.cube import AssetReadWarning, load_cube, to_reflectance
from harmonize.qa import encode_landsat_qa, encode_scl
from harmonize.testing import make_item

STAC_DIR = Path(__file__).parents[2] / "shared" / "stac-items"

ES_S2 = "earthsearch-v1_sentinel-2-l2a_S2A_13TDE_20231008_0_L2A.json"
ES_LS = "earthsearch-v1_landsat-c2-l2_LC08_L2SP_033032_20231008_02_T1.json"
PC_S2 = "pc_sentinel-2-l2a_S2A_MSIL2A_20190101T000001_R116_T59VPE_20201007T214658.json"
PC_LS = "pc_landsat-c2-l2_LC09_L2SP_084069_20250722_02_T2.json"
USGS_LS = "landsat-c2l2-sr-LC09_L2SR_086107_20240311_20240312_02_T2_SR.json"

BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
COLORADO = (460000.0, 4450000.0)  # inside both Earth Search scenes, EPSG:32613
SIDE = 240.0  # metres: 4 x 4 blocks of 60 m
BLOCK = 60.0

# Asset key and native resolution of each canonical band, per item shape.
S2_ES_KEYS = {
    "blue": "blue",
    "green": "green",
    "red": "red",
    "nir": "nir08",
    "swir16": "swir16",
    "swir22": "swir22",
    "qa": "scl",
}
S2_PC_KEYS = {
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "nir": "B8A",
    "swir16": "B11",
    "swir22": "B12",
    "qa": "SCL",
}
LS_KEYS = {
    "blue": "blue",
    "green": "green",
    "red": "red",
    "nir": "nir08",
    "swir16": "swir16",
    "swir22": "swir22",
    "qa": "qa_pixel",
}
S2_RES = {"blue": 10, "green": 10, "red": 10, "nir": 20, "swir16": 20, "swir22": 20, "qa": 20}
LS_RES = dict.fromkeys(LS_KEYS, 30)

# Provider rules, written out here rather than taken from harmonize.providers.
RULES = {
    ES_S2: (1e-4, -0.1),  # raster:bands of a baseline 05.09 item
    PC_S2: (1e-4, 0.0),  # no raster:bands; baseline 02.12 predates BOA_ADD_OFFSET
    ES_LS: (2.75e-5, -0.2),
    PC_LS: (2.75e-5, -0.2),
    USGS_LS: (2.75e-5, -0.2),  # no raster:bands; Collection 2 L2 SR rule
}

# Quality codes per 60 m block row-major: block 0 no data, 1 cloud, 2 shadow, the rest clear.
LS_QA = {"nodata": 1, "cloud": 22280, "shadow": 23888, "clear": 21824}
SCL = {"nodata": 0, "cloud": 9, "shadow": 3, "clear": 4}
BLOCK_CLASS = ["nodata", "cloud", "shadow"] + ["clear"] * 13


def block_dn(band_index: int) -> np.ndarray:
    """Known DN per 60 m block (4 x 4) for a band; block 0 is no data (0)."""
    dn = 7000 + 1000 * band_index + 37 * np.arange(16, dtype="int64")
    dn[0] = 0
    return dn.reshape(4, 4)


def _crs(d: dict) -> str:
    p = d["properties"]
    return p.get("proj:code") or f"EPSG:{p['proj:epsg']}"


def _native_transform(d: dict, key: str) -> list[float]:
    return d["assets"][key].get("proj:transform") or d["properties"]["proj:transform"]


def localise(
    name: str, tmp_path: Path, *, corner: tuple[float, float] | None = None, fail_key: str | None = None
) -> pystac.Item:
    """The real item ``name``, shrunk to a 240 m square of its own grid with local COGs.

    ``corner`` (in the item's CRS) is snapped to the item's grid; default: 600 m in from its origin.
    """
    d = json.loads((STAC_DIR / name).read_text())
    keys = S2_ES_KEYS if name == ES_S2 else S2_PC_KEYS if name == PC_S2 else LS_KEYS
    res = S2_RES if "sentinel" in name else LS_RES
    crs = _crs(d)
    t0 = _native_transform(d, keys["blue"])
    # A corner on the scene's own pixel grid (60 m is a multiple of every native resolution).
    cx, cy = corner if corner is not None else (t0[2] + 600, t0[5] - 600)
    x0 = t0[2] + round((cx - t0[2]) / BLOCK) * BLOCK
    y0 = t0[5] + round((cy - t0[5]) / BLOCK) * BLOCK
    for band, key in keys.items():
        r = res[band]
        n = int(SIDE // r)
        rep = int(BLOCK // r)
        if band == "qa":
            table = SCL if "sentinel" in name else LS_QA
            dtype = "uint8" if "sentinel" in name else "uint16"
            blocks = np.array([table[c] for c in BLOCK_CLASS]).reshape(4, 4)
            nodata = table["nodata"]
        else:
            dtype, nodata = "uint16", 0
            blocks = block_dn(BANDS.index(band))
        arr = np.kron(blocks, np.ones((rep, rep), "int64")).astype(dtype)
        path = tmp_path / f"{d['id']}_{key}.tif"
        transform = Affine(r, 0, x0, 0, -r, y0)
        with rasterio.open(
            path,
            "w",
            driver="COG",
            width=n,
            height=n,
            count=1,
            dtype=dtype,
            crs=crs,
            transform=transform,
            nodata=nodata,
        ) as dst:
            dst.write(arr, 1)
        a = d["assets"][key]
        a["href"] = path.as_uri() if key != fail_key else (tmp_path / "missing.tif").as_uri()
        if "proj:transform" in a or "proj:transform" not in d["properties"]:
            a["proj:transform"] = list(transform)[:6]
            a["proj:shape"] = [n, n]
            a.pop("proj:bbox", None)
    p = d["properties"]
    if "proj:transform" in p:
        p["proj:transform"] = list(Affine(30, 0, x0, 0, -30, y0))[:6]
        p["proj:shape"] = [int(SIDE // 30)] * 2
    p.pop("proj:centroid", None)
    footprint = geom.box(x0, y0 - SIDE, x0 + SIDE, y0, crs).to_crs("epsg:4326")
    d["geometry"] = footprint.json
    d["bbox"] = list(footprint.boundingbox)
    d["links"] = []
    return pystac.Item.from_dict(d)


def native_geobox(item: pystac.Item, res: float) -> GeoBox:
    d = item.to_dict()
    t = _native_transform(d, "blue" if "blue" in d["assets"] else "B02")
    n = int(SIDE // res)
    return GeoBox((n, n), Affine(res, 0, t[2], 0, -res, t[5]), _crs(d))


def expected(name: str, res: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Expected reflectance per band and clear mask on the native grid at ``res``."""
    return expected_for(*RULES[name], res)


def expected_for(scale: float, offset: float, res: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Expected reflectance per band (rule ``dn * scale + offset``) and clear mask at ``res``."""
    rep = int(BLOCK // res)
    out = {}
    for i, band in enumerate(BANDS):
        dn = np.kron(block_dn(i), np.ones((rep, rep)))
        out[band] = np.where(dn == 0, np.nan, dn * scale + offset)
    clear = np.kron(np.array([c == "clear" for c in BLOCK_CLASS]).reshape(4, 4), np.ones((rep, rep), bool))
    return out, clear


needs_items = pytest.mark.skipif(
    not STAC_DIR.is_dir(), reason=f"real STAC item documents not available at {STAC_DIR}"
)


@needs_items
@pytest.mark.parametrize("name", [ES_S2, PC_S2, ES_LS, PC_LS, USGS_LS])
def test_reflectance_follows_each_provider_rule(name: str, tmp_path: Path) -> None:
    item = localise(name, tmp_path)
    res = 10.0 if "sentinel" in name else 30.0
    # Nearest keeps the 20 m bands exact on the 10 m grid (each 20 m pixel -> 2 x 2).
    ds = load_cube([item], geobox=native_geobox(item, res), resampling="nearest")
    want, clear = expected(name, res)
    assert ds.sizes["time"] == 1
    for band in BANDS:
        got = ds[band].isel(time=0).values
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want[band], rtol=0, atol=2e-7, err_msg=f"{name} {band}")
        assert np.isnan(got).sum() == np.isnan(want[band]).sum() > 0
    np.testing.assert_array_equal(ds["clear"].isel(time=0).values, clear)
    sensor = "sentinel-2" if "sentinel" in name else "landsat"
    assert ds.sensor.values.tolist() == [sensor]
    assert ds.item_id.values.tolist() == [item.id]
    assert ds.platform.values[0] in {"sentinel-2a", "landsat-8", "landsat-9"}
    assert ds.rio.crs == ds.odc.geobox.crs == native_geobox(item, res).crs


@needs_items
def test_raw_dn_and_to_reflectance(tmp_path: Path) -> None:
    item = localise(PC_S2, tmp_path)
    raw = load_cube([item], geobox=native_geobox(item, 10), resampling="nearest", reflectance=False)
    assert raw["red"].dtype == np.uint16
    assert raw.scale.values.tolist() == [1e-4] and raw.offset.values.tolist() == [0.0]
    refl = to_reflectance(raw)
    want, _ = expected(PC_S2, 10)
    np.testing.assert_allclose(refl["red"].isel(time=0).values, want["red"], atol=2e-7)
    assert "scale" not in refl.coords
    with pytest.raises(errors.HarmonizeError, match="already reflectance"):
        to_reflectance(refl)


@needs_items
def test_both_sensors_one_cube_default_grid(tmp_path: Path) -> None:
    # Same place in both scenes (Colorado, 2023-10-08); their grids are 15 m apart.
    s2, ls = localise(ES_S2, tmp_path, corner=COLORADO), localise(ES_LS, tmp_path, corner=COLORADO)
    ds = load_cube([s2, ls])
    assert ds.sizes["y"] < 40 and ds.sizes["x"] < 40
    gb = ds.odc.geobox
    assert gb.crs.epsg == 32613  # the AOI's UTM zone
    assert gb.resolution.x == 10 and gb.transform.c % 10 == 0 and gb.transform.f % 10 == 0
    # Same solar day, two sensors: two time steps, sorted (Landsat 17:37 before S2 18:02).
    assert ds.sensor.values.tolist() == ["landsat", "sentinel-2"]
    assert (np.diff(ds.time.values) > np.timedelta64(0)).all()
    assert ds.shift_x.values.tolist() == [0.0, 0.0]
    # Pixels well inside a 60 m block are exact under bilinear resampling.
    for t, (item, name) in enumerate([(ls, ES_LS), (s2, ES_S2)]):
        assert_blocks_where_exact(ds, t, item, *RULES[name])
    # Outside every footprint: NaN and not clear.
    assert not ds["clear"].values[:, ~np.isfinite(ds["red"].values).any(axis=0)].any()


def assert_blocks_where_exact(ds, t: int, item: pystac.Item, scale: float, offset: float) -> None:  # noqa: ANN001
    """Time step ``t`` of ``ds`` shows ``item``'s blocks wherever bilinear resampling is exact.

    Bilinear only mixes source pixels whose centres are within one pixel (<= 30 m): pixels at
    least 15 m inside a 60 m block see only that block, so they are exact.
    """
    xs, ys = np.meshgrid(ds.x.values, ds.y.values)
    t0 = _native_transform(item.to_dict(), "blue" if "blue" in item.assets else "B02")
    bx, by = (xs - t0[2]) / BLOCK, (t0[5] - ys) / BLOCK
    inside = (bx >= 0) & (by >= 0) & (bx < 4) & (by < 4)
    safe = (
        inside
        & (np.minimum(bx % 1, 1 - bx % 1) * BLOCK >= 15)
        & (np.minimum(by % 1, 1 - by % 1) * BLOCK >= 15)
    )
    for i, band in enumerate(BANDS):
        dn = block_dn(i)[by[safe].astype(int), bx[safe].astype(int)]
        want = np.where(dn == 0, np.nan, dn * scale + offset)
        np.testing.assert_allclose(ds[band].isel(time=t).values[safe], want, atol=2e-7)
    cls = np.array(BLOCK_CLASS).reshape(4, 4)[by[safe].astype(int), bx[safe].astype(int)]
    np.testing.assert_array_equal(ds["clear"].isel(time=t).values[safe], cls == "clear")
    assert safe.sum() > 10


@needs_items
def test_other_crs_is_reprojected_onto_utm(tmp_path: Path) -> None:
    item = localise(USGS_LS, tmp_path)  # EPSG:3031 polar stereographic
    ds = load_cube([item], bands=["red"])
    assert ds.odc.geobox.crs.epsg in range(32701, 32761)
    red = ds["red"].values
    want, _ = expected(USGS_LS, 30)
    vals = red[np.isfinite(red)]
    assert vals.size > 100
    assert np.nanmin(want["red"]) - 1e-6 <= vals.min() and vals.max() <= np.nanmax(want["red"]) + 1e-6


def assert_lazy_until_computed(items: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_cube opens no asset; computing one band does."""
    opened: list[str] = []
    real_open = rasterio.open

    def counting_open(path, *args, **kwargs):  # noqa: ANN001, ANN202
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", counting_open)
    ds = load_cube(items)
    assert all(v.chunks is not None for v in ds.data_vars.values())
    assert opened == []
    ds["red"].isel(time=0).compute()
    assert opened, "computing a band must read its asset"


@needs_items
def test_cube_is_lazy_until_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [localise(ES_S2, tmp_path, corner=COLORADO), localise(ES_LS, tmp_path, corner=COLORADO)]
    assert_lazy_until_computed(items, monkeypatch)


@needs_items
def test_shift_moves_scene_on_the_grid(tmp_path: Path) -> None:
    item = localise(ES_LS, tmp_path)
    gb = native_geobox(item, 30)
    base = load_cube([item], geobox=gb, bands=["red"], resampling="nearest")
    shifted = load_cube(
        [item], geobox=gb, bands=["red"], resampling="nearest", shifts={item.id: (60.0, -30.0)}
    )
    assert shifted.shift_x.values.tolist() == [60.0] and shifted.shift_y.values.tolist() == [-30.0]
    a, b = base["red"].isel(time=0).values, shifted["red"].isel(time=0).values
    # Pixels really sit 60 m east and 30 m south: two columns right, one row down.
    np.testing.assert_array_equal(b[1:, 2:], a[:-1, :-2])
    assert np.isnan(b[:, :2]).all() and np.isnan(b[:1, :]).all()
    assert "stac_items" not in shifted.attrs  # provenance is the item_id coordinate


# ---------------------------------------------------------------------------------------------
# Errors


def test_no_items_is_an_empty_search() -> None:
    with pytest.raises(errors.EmptySearchError, match="no items"):
        load_cube([])


@needs_items
def test_unknown_collection(tmp_path: Path) -> None:
    d = localise(ES_S2, tmp_path).to_dict()
    d["collection"] = "modis-09a1"
    with pytest.raises(errors.UnknownCollectionError, match="modis-09a1"):
        load_cube([pystac.Item.from_dict(d)])


@needs_items
def test_unknown_and_missing_bands(tmp_path: Path) -> None:
    item = localise(ES_S2, tmp_path)
    with pytest.raises(errors.UnknownBandError, match="coastal"):
        load_cube([item], bands=["coastal"])
    d = item.to_dict()
    del d["assets"]["swir22"]
    with pytest.raises(errors.MissingAssetError, match="swir22"):
        load_cube([pystac.Item.from_dict(d)])
    with pytest.raises(errors.MissingAssetError, match="landsat-c2l1"):
        load_cube([item], bands=["red", "pan"])


@needs_items
def test_bbox_outside_items(tmp_path: Path) -> None:
    item = localise(ES_S2, tmp_path)
    with pytest.raises(errors.NoOverlapError, match="does not intersect"):
        load_cube([item], bbox=(10.0, 45.0, 10.1, 45.1))


def assert_unreadable_red_strict_and_lenient(item, tmp_path: Path) -> xr.DataArray:  # noqa: ANN001
    """``item``'s red asset points at a missing file: strict loading raises a named error,
    lenient loading warns, leaves red NaN and still reads the other bands (returns green)."""
    missing = (tmp_path / "missing.tif").as_uri()
    ds = load_cube([item], geobox=native_geobox(item, 10))  # building reads nothing
    with pytest.raises(errors.AssetReadError, match="missing.tif"):
        ds["red"].compute()
    lenient = load_cube([item], geobox=native_geobox(item, 10), fail_on_error=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        red, green = lenient["red"].compute(), lenient["green"].compute()
    assert any(
        issubclass(w.category, AssetReadWarning) and missing.removeprefix("file://") in str(w.message)
        for w in caught
    )
    assert np.isnan(red.values).all()
    return green


@needs_items
def test_unreadable_asset_strict_and_lenient(tmp_path: Path) -> None:
    green = assert_unreadable_red_strict_and_lenient(localise(ES_S2, tmp_path, fail_key="red"), tmp_path)
    assert np.isfinite(green.values).any()


# ---------------------------------------------------------------------------------------------
# Landsat pan from the matching Level-1 scene


def level1_of(l2: pystac.Item, tmp_path: Path, pan_dn: int = 30000) -> pystac.Item:
    """A USGS-shaped ``landsat-c2l1`` item for Level-2 ``l2``: same scene, a 15 m pan COG."""
    d = copy.deepcopy(l2.to_dict())
    d["id"] = d["id"].replace("L2SP", "L1TP")
    d["collection"] = "landsat-c2l1"
    t = _native_transform(d, "blue")
    x0, y0 = t[2], t[5]
    n = int(SIDE // 15)
    # Row-dependent DNs so that a misplaced or flipped pan shows.
    arr = (pan_dn + 100 * np.arange(n)[:, None] + np.zeros((1, n), "int64")).astype("uint16")
    path = tmp_path / f"{d['id']}_B8.tif"
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=n,
        height=n,
        count=1,
        dtype="uint16",
        crs=_crs(d),
        transform=Affine(15, 0, x0, 0, -15, y0),
        nodata=0,
    ) as dst:
        dst.write(arr, 1)
    qa = d["assets"]["qa_pixel"]
    d["assets"] = {
        "pan": {
            "href": path.as_uri(),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "proj:shape": [n, n],
            "proj:transform": [15, 0, x0, 0, -15, y0],
        },
        "qa_pixel": qa,
    }
    return pystac.Item.from_dict(d)


@needs_items
def test_pan_comes_from_the_matching_level1_scene(tmp_path: Path) -> None:
    s2 = localise(ES_S2, tmp_path, corner=COLORADO)
    l2 = localise(ES_LS, tmp_path, corner=COLORADO)
    l1 = level1_of(l2, tmp_path)
    ds = load_cube([s2, l1, l2], resampling="nearest")
    assert "pan" in ds.data_vars and ds["pan"].dtype == np.float32
    assert ds.sensor.values.tolist() == ["landsat", "sentinel-2"]
    assert ds.item_id.values.tolist() == [l2.id, s2.id]
    assert ds.pan_item_id.values.tolist() == [l1.id, ""]
    assert np.isnan(ds["pan"].sel(time=ds.sensor == "sentinel-2").values).all()
    assert_pan_rows(ds["pan"].isel(time=0), l1, 30000)
    # bands=None without Level-1 items: no pan variable at all.
    assert "pan" not in load_cube([s2, l2]).data_vars


def assert_pan_rows(pan, l1: pystac.Item, pan_dn: int) -> None:  # noqa: ANN001
    """``pan`` (nearest-resampled) holds ``l1``'s row-dependent DNs in TOA reflectance."""
    t = _native_transform(l1.to_dict(), "pan")
    rows = np.floor((t[5] - pan.y.values) / 15).astype(int)
    valid_rows = (rows >= 0) & (rows < SIDE / 15)
    cols_in = ((pan.x.values - t[2]) >= 0) & ((pan.x.values - t[2]) < SIDE)
    want = (pan_dn + 100 * rows[valid_rows]) * 2.0e-5 - 0.1  # Collection 2 L1 TOA rule
    got = pan.values[np.ix_(valid_rows, cols_in)]
    assert got.size > 0
    np.testing.assert_allclose(got, np.repeat(want[:, None], cols_in.sum(), axis=1), atol=2e-7)


@needs_items
def test_shift_applies_to_the_level1_pan_too(tmp_path: Path) -> None:
    l2 = localise(ES_LS, tmp_path)
    l1 = level1_of(l2, tmp_path)
    gb = native_geobox(l2, 15)
    base = load_cube([l2, l1], bands=["pan"], geobox=gb, resampling="nearest")
    moved = load_cube([l2, l1], bands=["pan"], geobox=gb, resampling="nearest", shifts={l2.id: (0.0, -30.0)})
    a, b = base["pan"].isel(time=0).values, moved["pan"].isel(time=0).values
    np.testing.assert_array_equal(b[2:], a[:-2])  # 30 m south = two 15 m rows down
    assert np.isnan(b[:2]).all()


# ---------------------------------------------------------------------------------------------
# Always-on twins: the same situations from our own provider-shaped items (harmonize.testing)
#
# Each case above that reads /work/shared has a twin here built from ``make_item`` (the provider's
# asset keys, raster:bands or not, per-asset native grids) over COGs written in tmp_path with the
# same known block DNs; the QA layers are encoded from known block masks with harmonize.qa.

# Corners on each sensor's own grid, as the real Colorado scenes have them (Landsat edges sit on
# odd multiples of 15 m, Sentinel-2 edges on multiples of 10 m: the grids are 15 m apart).
OWN_S2_CORNER = (460020.0, 4450020.0)
OWN_LS_CORNER = (460005.0, 4449975.0)
OWN_POLAR_CORNER = (1517685.0, -1812285.0)  # EPSG:3031, inside the real USGS scene's grid
OWN_S2_TIME = dt.datetime(2023, 10, 8, 18, 2, 12, tzinfo=dt.timezone.utc)
OWN_LS_TIME = dt.datetime(2023, 10, 8, 17, 37, 26, tzinfo=dt.timezone.utc)
OWN_L1_KEYS = {"pan": "pan", "qa": "qa_pixel"}

# provider, sensor, make_item options, (scale, offset) by the provider's published rule.
OWN_CASES = {
    "earth-search-s2": ("earth-search", "sentinel-2", {}, (1e-4, -0.1)),
    "pc-s2-baseline-02.12": (
        "planetary-computer",
        "sentinel-2",
        {"processing_baseline": "02.12", "when": dt.datetime(2019, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)},
        (1e-4, 0.0),
    ),
    # Not in the real documents: a recent Planetary Computer item, still without raster:bands.
    "pc-s2-baseline-05.10": (
        "planetary-computer",
        "sentinel-2",
        {"processing_baseline": "05.10"},
        (1e-4, -0.1),
    ),
    "earth-search-landsat": ("earth-search", "landsat", {}, (2.75e-5, -0.2)),
    "pc-landsat": ("planetary-computer", "landsat", {}, (2.75e-5, -0.2)),
    "usgs-landsat": ("usgs", "landsat", {}, (2.75e-5, -0.2)),
}


def block_qa(sensor: str) -> np.ndarray:
    """The 4 x 4 block QA layer (no data, cloud, shadow, 13 clear), encoded with harmonize.qa."""
    cls = np.array(BLOCK_CLASS).reshape(4, 4)
    none = np.zeros((4, 4), bool)
    nodata, cloud, shadow = cls == "nodata", cls == "cloud", cls == "shadow"
    if sensor == "landsat":
        return encode_landsat_qa(
            nodata=nodata, cloud=cloud, dilated_cloud=none, cirrus=none, shadow=shadow, snow=none, water=none
        )
    return encode_scl(
        nodata=nodata,
        cloud_high=cloud,
        cloud_medium=none,
        cirrus=none,
        shadow=shadow,
        snow=none,
        water=none,
        vegetation=cls == "clear",
    )


def _write_cog(path: Path, arr: np.ndarray, crs: str, transform: Affine, nodata: int) -> None:
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(arr, 1)


def own_item(
    provider: str,
    sensor: str,
    tmp_path: Path,
    *,
    corner: tuple[float, float] | None = None,
    epsg: int = 32613,
    level: str = "L2",
    fail_key: str | None = None,
    pan_dn: int = 30000,
    **options,  # noqa: ANN003
) -> pystac.Item:
    """A ``make_item`` item shaped like ``provider``'s, 240 m square, with local COGs of known DNs.

    Reflectance bands hold :func:`block_dn` per 60 m block at their native resolution, the QA
    asset :func:`block_qa`; a Level-1 ``pan`` holds ``pan_dn + 100 * row`` at 15 m.
    """
    if corner is None:
        corner = OWN_S2_CORNER if sensor == "sentinel-2" else OWN_LS_CORNER
    res = 10.0 if sensor == "sentinel-2" else 15.0 if level == "L1" else 30.0
    n = int(SIDE // res)
    options.setdefault("when", OWN_S2_TIME if sensor == "sentinel-2" else OWN_LS_TIME)
    if sensor == "landsat":
        options.setdefault("wrs_path_row", (33, 32))
    item = make_item(
        provider,
        sensor,
        epsg=epsg,
        transform=(res, 0.0, corner[0], 0.0, -res, corner[1]),
        shape=(n, n),
        href_root=tmp_path.as_uri(),
        level=level,
        footprint_from_grid=True,
        native_resolution=True,
        **options,
    )
    if level == "L1":
        keys, native = OWN_L1_KEYS, {"pan": 15, "qa": 30}
    elif sensor == "sentinel-2":
        keys, native = (S2_PC_KEYS if provider == "planetary-computer" else S2_ES_KEYS), S2_RES
    else:
        keys, native = LS_KEYS, LS_RES
    assert set(item.assets) == set(keys.values()), "make_item's asset keys are the provider's"
    for band, key in keys.items():
        asset = item.assets[key]
        t = Affine(*asset.extra_fields["proj:transform"][:6])
        assert t.a == native[band] and t.c == corner[0] and t.f == corner[1]  # the native grid
        rep = int(BLOCK // t.a)
        if band == "pan":
            rows = np.arange(int(SIDE // 15))[:, None] + np.zeros((1, int(SIDE // 15)), "int64")
            arr, nodata = (pan_dn + 100 * rows).astype("uint16"), 0
        elif band == "qa":
            arr = np.kron(block_qa(sensor), np.ones((rep, rep), "int64"))
            arr = arr.astype("uint8" if sensor == "sentinel-2" else "uint16")
            nodata = 0 if sensor == "sentinel-2" else 1
        else:
            arr, nodata = (
                np.kron(block_dn(BANDS.index(band)), np.ones((rep, rep), "int64")).astype("uint16"),
                0,
            )
        assert list(arr.shape) == asset.extra_fields["proj:shape"]
        path = tmp_path / f"{item.id}_{key}.tif"
        assert asset.href == path.as_uri()
        _write_cog(path, arr, f"EPSG:{epsg}", t, nodata)
        if key == fail_key:
            asset.href = (tmp_path / "missing.tif").as_uri()
    return item


def own_level1(l2: pystac.Item, tmp_path: Path, pan_dn: int = 30000) -> pystac.Item:
    """A USGS-shaped ``landsat-c2l1`` item of the same scene as ``l2`` (same grid, time, WRS)."""
    t = _native_transform(l2.to_dict(), "blue")
    return own_item(
        "usgs",
        "landsat",
        tmp_path,
        corner=(t[2], t[5]),
        epsg=int(l2.properties["proj:epsg"]),
        level="L1",
        item_id=l2.id.replace("L2SP", "L1TP"),
        when=l2.datetime,
        pan_dn=pan_dn,
    )


def test_own_block_qa_is_what_the_real_products_store() -> None:
    # The encoders give the values of the real-document cases (and of real scenes).
    np.testing.assert_array_equal(block_qa("landsat").ravel(), [LS_QA[c] for c in BLOCK_CLASS])
    np.testing.assert_array_equal(block_qa("sentinel-2").ravel(), [SCL[c] for c in BLOCK_CLASS])


@pytest.mark.parametrize("case", list(OWN_CASES))
def test_own_reflectance_follows_each_provider_rule(case: str, tmp_path: Path) -> None:
    provider, sensor, options, (scale, offset) = OWN_CASES[case]
    item = own_item(provider, sensor, tmp_path, **options)
    res = 10.0 if sensor == "sentinel-2" else 30.0
    # Nearest keeps the 20 m bands exact on the 10 m grid (each 20 m pixel -> 2 x 2).
    ds = load_cube([item], geobox=native_geobox(item, res), resampling="nearest")
    want, clear = expected_for(scale, offset, res)
    assert ds.sizes["time"] == 1
    for band in BANDS:
        got = ds[band].isel(time=0).values
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want[band], rtol=0, atol=2e-7, err_msg=f"{case} {band}")
        assert np.isnan(got).sum() == np.isnan(want[band]).sum() > 0
    np.testing.assert_array_equal(ds["clear"].isel(time=0).values, clear)
    assert ds.sensor.values.tolist() == [sensor]
    assert ds.item_id.values.tolist() == [item.id]
    assert ds.platform.values.tolist() == ["sentinel-2a" if sensor == "sentinel-2" else "landsat-8"]
    assert ds.rio.crs == ds.odc.geobox.crs == native_geobox(item, res).crs


def test_own_raw_dn_and_to_reflectance(tmp_path: Path) -> None:
    provider, sensor, options, _ = OWN_CASES["pc-s2-baseline-02.12"]
    item = own_item(provider, sensor, tmp_path, **options)
    raw = load_cube([item], geobox=native_geobox(item, 10), resampling="nearest", reflectance=False)
    assert raw["red"].dtype == np.uint16
    np.testing.assert_array_equal(
        raw["red"].isel(time=0).values, np.kron(block_dn(BANDS.index("red")), np.ones((6, 6), "int64"))
    )
    assert raw.scale.values.tolist() == [1e-4] and raw.offset.values.tolist() == [0.0]
    refl = to_reflectance(raw)
    want, _ = expected_for(1e-4, 0.0, 10)
    np.testing.assert_allclose(refl["red"].isel(time=0).values, want["red"], atol=2e-7)
    assert "scale" not in refl.coords
    with pytest.raises(errors.HarmonizeError, match="already reflectance"):
        to_reflectance(refl)


def test_own_both_sensors_one_cube_default_grid(tmp_path: Path) -> None:
    s2 = own_item("earth-search", "sentinel-2", tmp_path)
    ls = own_item("earth-search", "landsat", tmp_path)
    ds = load_cube([s2, ls])
    assert ds.sizes["y"] < 40 and ds.sizes["x"] < 40
    gb = ds.odc.geobox
    assert gb.crs.epsg == 32613
    assert gb.resolution.x == 10 and gb.transform.c % 10 == 0 and gb.transform.f % 10 == 0
    assert ds.sensor.values.tolist() == ["landsat", "sentinel-2"]  # 17:37 before 18:02
    assert ds.item_id.values.tolist() == [ls.id, s2.id]
    assert ds.shift_x.values.tolist() == [0.0, 0.0]
    assert_blocks_where_exact(ds, 0, ls, 2.75e-5, -0.2)
    assert_blocks_where_exact(ds, 1, s2, 1e-4, -0.1)
    assert not ds["clear"].values[:, ~np.isfinite(ds["red"].values).any(axis=0)].any()


def test_own_polar_stereographic_is_reprojected_onto_utm(tmp_path: Path) -> None:
    from pyproj import Transformer

    item = own_item("usgs", "landsat", tmp_path, corner=OWN_POLAR_CORNER, epsg=3031)
    ds = load_cube([item], bands=["red"], resampling="nearest")
    # The UTM zone (south) of the footprint's centre, worked out here.
    lon = (item.bbox[0] + item.bbox[2]) / 2
    assert item.bbox[3] < 0
    assert ds.odc.geobox.crs.epsg == 32700 + int((lon + 180) // 6) + 1
    # Each output pixel centre, taken back to EPSG:3031, lies in a known block: nearest gives
    # that block's value exactly wherever the centre is clear of block edges.
    xs, ys = np.meshgrid(ds.x.values, ds.y.values)
    px, py = Transformer.from_crs(ds.odc.geobox.crs.to_wkt(), "EPSG:3031", always_xy=True).transform(xs, ys)
    bx, by = (px - OWN_POLAR_CORNER[0]) / BLOCK, (OWN_POLAR_CORNER[1] - py) / BLOCK
    inside = (bx >= 0) & (by >= 0) & (bx < 4) & (by < 4)
    safe = (
        inside & (np.minimum(bx % 1, 1 - bx % 1) * BLOCK >= 3) & (np.minimum(by % 1, 1 - by % 1) * BLOCK >= 3)
    )
    red = ds["red"].isel(time=0).values
    dn = block_dn(BANDS.index("red"))[by[safe].astype(int), bx[safe].astype(int)]
    np.testing.assert_allclose(red[safe], np.where(dn == 0, np.nan, dn * 2.75e-5 - 0.2), atol=2e-7)
    assert safe.sum() > 300
    assert not np.isfinite(red[~inside]).any()  # nothing outside the 240 m scene


def test_own_cube_is_lazy_until_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [own_item("earth-search", "sentinel-2", tmp_path), own_item("earth-search", "landsat", tmp_path)]
    assert_lazy_until_computed(items, monkeypatch)


def test_own_shift_moves_scene_on_the_grid(tmp_path: Path) -> None:
    item = own_item("earth-search", "landsat", tmp_path)
    gb = native_geobox(item, 30)
    base = load_cube([item], geobox=gb, bands=["red"], resampling="nearest")
    shifted = load_cube(
        [item], geobox=gb, bands=["red"], resampling="nearest", shifts={item.id: (60.0, -30.0)}
    )
    assert shifted.shift_x.values.tolist() == [60.0] and shifted.shift_y.values.tolist() == [-30.0]
    a, b = base["red"].isel(time=0).values, shifted["red"].isel(time=0).values
    want, _ = expected_for(2.75e-5, -0.2, 30)
    np.testing.assert_allclose(a, want["red"], atol=2e-7)
    np.testing.assert_array_equal(b[1:, 2:], a[:-1, :-2])  # 60 m east, 30 m south
    assert np.isnan(b[:, :2]).all() and np.isnan(b[:1, :]).all()
    assert "stac_items" not in shifted.attrs  # provenance is the item_id coordinate


def test_own_unknown_collection(tmp_path: Path) -> None:
    d = own_item("earth-search", "sentinel-2", tmp_path).to_dict()
    d["collection"] = "modis-09a1"
    with pytest.raises(errors.UnknownCollectionError, match="modis-09a1"):
        load_cube([pystac.Item.from_dict(d)])


def test_own_unknown_and_missing_bands(tmp_path: Path) -> None:
    item = own_item("earth-search", "sentinel-2", tmp_path)
    with pytest.raises(errors.UnknownBandError, match="coastal"):
        load_cube([item], bands=["coastal"])
    d = item.to_dict()
    del d["assets"]["swir22"]
    with pytest.raises(errors.MissingAssetError, match="swir22"):
        load_cube([pystac.Item.from_dict(d)])
    with pytest.raises(errors.MissingAssetError, match="landsat-c2l1"):
        load_cube([item], bands=["red", "pan"])


def test_own_bbox_outside_items(tmp_path: Path) -> None:
    item = own_item("earth-search", "sentinel-2", tmp_path)
    with pytest.raises(errors.NoOverlapError, match="does not intersect"):
        load_cube([item], bbox=(10.0, 45.0, 10.1, 45.1))
    # A bbox just inside the true footprint loads (the footprint is the grid's, not nominal).
    w, s, e, n = item.bbox
    inner = (w + (e - w) / 4, s + (n - s) / 4, e - (e - w) / 4, n - (n - s) / 4)
    assert np.isfinite(load_cube([item], bbox=inner, bands=["red"])["red"].values).any()


def test_own_unreadable_asset_strict_and_lenient(tmp_path: Path) -> None:
    item = own_item("earth-search", "sentinel-2", tmp_path, fail_key="red")
    green = assert_unreadable_red_strict_and_lenient(item, tmp_path)
    want, _ = expected_for(1e-4, -0.1, 10)
    np.testing.assert_allclose(green.isel(time=0).values, want["green"], atol=2e-7)


def test_own_pan_comes_from_the_matching_level1_scene(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s2 = own_item("earth-search", "sentinel-2", tmp_path)
    l2 = own_item("earth-search", "landsat", tmp_path)
    l1 = own_level1(l2, tmp_path)
    assert l1.collection_id == "landsat-c2l1" and l1.properties["platform"] == "LANDSAT_8"
    ds = load_cube([s2, l1, l2], resampling="nearest")
    assert "pan" in ds.data_vars and ds["pan"].dtype == np.float32
    assert ds.sensor.values.tolist() == ["landsat", "sentinel-2"]
    assert ds.item_id.values.tolist() == [l2.id, s2.id]
    assert ds.pan_item_id.values.tolist() == [l1.id, ""]
    assert np.isnan(ds["pan"].sel(time=ds.sensor == "sentinel-2").values).all()
    assert_pan_rows(ds["pan"].isel(time=0), l1, 30000)
    assert "pan" not in load_cube([s2, l2]).data_vars
    # Parsed once: scenes go in without being parsed again, and give the same cube.
    import harmonize.items

    scenes = harmonize.items.parse_items([s2, l1, l2])
    calls = []
    real = harmonize.items.profile_for_item
    monkeypatch.setattr(harmonize.items, "profile_for_item", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = load_cube(scenes, resampling="nearest")
    assert calls == []
    xr.testing.assert_identical(again.compute(), ds.compute())


def test_own_shift_applies_to_the_level1_pan_too(tmp_path: Path) -> None:
    l2 = own_item("earth-search", "landsat", tmp_path)
    l1 = own_level1(l2, tmp_path)
    gb = native_geobox(l2, 15)
    base = load_cube([l2, l1], bands=["pan"], geobox=gb, resampling="nearest")
    moved = load_cube([l2, l1], bands=["pan"], geobox=gb, resampling="nearest", shifts={l2.id: (0.0, -30.0)})
    a, b = base["pan"].isel(time=0).values, moved["pan"].isel(time=0).values
    assert_pan_rows(base["pan"].isel(time=0), l1, 30000)
    np.testing.assert_array_equal(b[2:], a[:-2])  # 30 m south = two 15 m rows down
    assert np.isnan(b[:2]).all()


# ---------------------------------------------------------------------------------------------
# Against the simulated world's truth


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The session's tiny world (tests/conftest.py), or a tiny world of our own."""
    try:
        return request.getfixturevalue("tiny_world")
    except pytest.FixtureLookupError:
        from harmonize.world import WorldConfig, create_world

        return create_world(tmp_path_factory.mktemp("cube-world"), WorldConfig.tiny(), progress=False)


@pytest.fixture(scope="module")
def world_items(world) -> list[pystac.Item]:  # noqa: ANN001
    import rustac

    return [pystac.Item.from_dict(d) for d in rustac.read_sync(str(world.items_path))["features"]]


@pytest.fixture(scope="module")
def world_cube(world_items):  # noqa: ANN001, ANN201
    return load_cube(world_items).compute()


def _truth_seen_by(world, time: np.datetime64, platform: str) -> np.ndarray:  # noqa: ANN001
    from harmonize.world.sensors import spectral

    day = np.datetime64(str(time)[:10])
    truth = world.truth.sel(time=day)
    return spectral(np.stack([truth[b].values for b in BANDS]), platform)


def test_world_default_grid_is_the_world_grid(world, world_cube) -> None:  # noqa: ANN001
    assert world_cube.odc.geobox == world.geobox
    assert set(world_cube.sensor.values) == {"landsat", "sentinel-2"}
    assert len(world_cube.time) == len(world.scenes)  # one scene per date and sensor here
    assert "pan" in world_cube.data_vars


def test_world_clear_s2_reflectance_is_truth_within_noise(world, world_cube) -> None:  # noqa: ANN001
    s2 = world_cube.sel(time=world_cube.sensor == "sentinel-2")
    checked = 0
    for i in range(s2.sizes["time"]):
        scene = s2.isel(time=i)
        clear = scene["clear"].values
        if clear.sum() < 500:
            continue
        truth = _truth_seen_by(world, scene.time.values, str(scene.platform.values))
        for j, band in enumerate(BANDS):
            got, want = scene[band].values[clear], truth[j][clear]
            diff = got - want
            sigma = 0.0015 + 0.01 * want  # the simulator's Sentinel-2 noise model
            assert abs(np.mean(diff)) < 0.002, (band, np.mean(diff))  # no offset/scale error
            if band in ("blue", "green", "red"):  # 10 m: only noise and the pixel response differ
                assert np.median(np.abs(diff)) < 1.5 * np.median(sigma)
                assert np.mean(np.abs(diff) < 3 * sigma) > 0.8
            else:  # 20 m bands upsampled to 10 m: field edges blur
                assert np.median(np.abs(diff)) < 0.01
        checked += 1
    assert checked >= 2


def test_world_clear_is_the_injected_mask_resampled(world, world_cube) -> None:  # noqa: ANN001
    from odc.geo.xr import xr_reproject

    for i in range(world_cube.sizes["time"]):
        scene = world_cube.isel(time=i)
        injected = world.injected_masks(str(scene.item_id.values))[["clear"]].astype("uint8")
        want = xr_reproject(injected, world.geobox, resampling="nearest")["clear"].values.astype(bool)
        # A pixel some band lacks (a 10 m swath edge inside a clear 20 m SCL pixel) is not clear.
        has_data = np.logical_and.reduce([np.isfinite(scene[b].values) for b in BANDS])
        assert (want & ~has_data).sum() < 0.01 * want.size
        np.testing.assert_array_equal(
            scene["clear"].values, want & has_data, err_msg=str(scene.item_id.values)
        )


def test_world_true_shifts_bring_landsat_onto_the_truth(world, world_items, world_cube) -> None:  # noqa: ANN001
    shifts = {s["id"]: tuple(s["shift"]) for s in world.scenes if s["sensor"] == "landsat"}
    moved = load_cube(world_items, bands=["red"], shifts=shifts).compute()
    ls = np.flatnonzero(world_cube.sensor.values == "landsat")
    improved = 0
    for i in ls:
        before, after = world_cube.isel(time=i), moved.isel(time=i)
        assert (after.shift_x.item(), after.shift_y.item()) == shifts[str(after.item_id.values)]
        clear = before["clear"].values & after["clear"].values
        if clear.sum() < 200:
            continue
        truth = _truth_seen_by(world, before.time.values, str(before.platform.values))[BANDS.index("red")]
        rmse0 = np.sqrt(np.mean((before["red"].values[clear] - truth[clear]) ** 2))
        rmse1 = np.sqrt(np.mean((after["red"].values[clear] - truth[clear]) ** 2))
        assert rmse1 < rmse0, (str(after.item_id.values), rmse0, rmse1)
        improved += 1
    assert improved >= 2


@pytest.fixture()
def warper_only():  # noqa: ANN201
    """Every read through GDAL's warper (the loader before scaled reads), restored afterwards."""
    from harmonize.cube.gdal import scaled_reads

    before = scaled_reads(False)
    yield
    scaled_reads(before)


def _raw(items, chunk: int, shifts=None):  # noqa: ANN001, ANN202
    chunks = {"time": 1, "y": chunk, "x": chunk}
    return load_cube(items, reflectance=False, shifts=shifts, chunks=chunks).compute(scheduler="sync")


def _away_from_no_data(valid: np.ndarray, r: int) -> np.ndarray:
    """``valid`` pixels whose ``(2r + 1)²`` neighbourhood is all valid (per leading index)."""
    p = np.pad(valid, [(0, 0)] * (valid.ndim - 2) + [(r, r), (r, r)], constant_values=False)
    out = np.ones_like(valid)
    ny, nx = valid.shape[-2:]
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out &= p[..., dy : dy + ny, dx : dx + nx]
    return out


@pytest.mark.parametrize("shifted", [False, True])
def test_world_scaled_reads_match_the_warper(world, world_items, shifted: bool, request) -> None:  # noqa: ANN001
    """The RasterIO reads of nested grids equal GDAL's warper: 10 m pixels and nearest (QA)
    exactly, bilinear within 1 DN away from a no-data rim; one chunking or another, the same."""
    shifts = (
        {s["id"]: tuple(s["shift"]) for s in world.scenes if s["sensor"] == "landsat"} if shifted else None
    )
    fast, fine = _raw(world_items, 64, shifts), _raw(world_items, 32, shifts)
    request.getfixturevalue("warper_only")
    slow = _raw(world_items, 64, shifts)
    for v in fast.data_vars:
        np.testing.assert_array_equal(fast[v].values, fine[v].values, err_msg=v)  # no seams
    ls = fast.sensor.values == "landsat"
    np.testing.assert_array_equal(fast["clear"].values[~ls], slow["clear"].values[~ls])
    for band in ("blue", "red", "swir16", "pan"):
        a, b = fast[band].values[ls].astype(int), slow[band].values[ls].astype(int)
        assert np.mean((a == 0) != (b == 0)) < 1e-3, band  # the footprint is the warper's
        inner = _away_from_no_data((a != 0) & (b != 0), 6)  # two 30 m pixels
        diff = np.abs(a - b)[inner]
        assert np.mean(diff == 0) > 0.9 and diff.max() <= 1, (band, diff.max())
    for band in ("blue", "red"):  # Sentinel-2's 10 m bands are pasted, not resampled
        np.testing.assert_array_equal(fast[band].values[~ls], slow[band].values[~ls])


@pytest.mark.parametrize("reflectance", [True, False])
def test_world_direct_reader_is_the_odc_stac_load_bit_for_bit(  # noqa: ANN001
    world, world_items, reflectance: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read task per (step, chunk) gives the cube one odc.stac.load per collection gave:
    every band, pan, mask and coordinate equal, shifted scenes and odd chunks included."""
    shifts = {s["id"]: tuple(s["shift"]) for s in world.scenes if s["sensor"] == "landsat"}
    kw = {
        "shifts": shifts,
        "reflectance": reflectance,
        "masks": ("clear", "cloud", "nodata"),
        "chunks": {"time": 1, "y": 48, "x": 80},
    }
    direct = load_cube(world_items, **kw)
    assert any(k.startswith("harmonize-read-") for k in direct.__dask_graph__().layers)
    direct = direct.compute(scheduler="sync")
    monkeypatch.setenv("HARMONIZE_ODC_LOAD", "1")
    odc = load_cube(world_items, **kw).compute(scheduler="sync")
    xr.testing.assert_identical(direct, odc)
    for v in odc.data_vars:
        assert direct[v].dtype == odc[v].dtype, v
        np.testing.assert_array_equal(direct[v].values, odc[v].values, err_msg=v)
    pan = direct["pan"].values
    assert int(direct["clear"].sum()) > 0
    assert (np.isfinite(pan) if reflectance else pan != direct["pan"].attrs["nodata"]).any()


def test_a_shift_on_the_grid_moves_a_scene_of_the_other_utm_zone_by_its_own_crs_vector(
    tmp_path: Path,
) -> None:
    """A shift table is measured on the cube's grid; a Landsat scene in the next UTM zone is moved
    by that displacement carried into its own CRS (turned by the meridian convergence), which is
    the manifest's own-CRS shift of the scene whose grid-CRS shift it is."""
    import rustac

    from harmonize.cube import plan_load
    from harmonize.cube.read import _in_item_crs
    from harmonize.world import create_world
    from harmonize.world.presets import preset_config

    cfg = preset_config("two-zones", tiny=True, end="2023-05-12")
    w = create_world(tmp_path / "world", cfg, progress=False)
    items = [pystac.Item.from_dict(d) for d in rustac.read_sync(str(w.items_path))["features"]]
    plan = plan_load(items)
    scenes = {s.id: s for st in plan.steps for s in st.scenes}
    checked = 0
    for entry in w.scenes:
        if "shift_world" not in entry or entry["id"] not in scenes:
            continue
        own = _in_item_crs(scenes[entry["id"]], tuple(entry["shift_world"]), plan)
        np.testing.assert_allclose(own, entry["shift"], atol=0.05)
        turned = np.hypot(*np.subtract(entry["shift"], entry["shift_world"]))
        checked += turned > 0.1  # the conversion is not the identity for these scenes
    assert checked > 0
    same_zone = next(s for s in scenes.values() if str(s.crs).lower() == str(plan.geobox.crs).lower())
    assert _in_item_crs(same_zone, (3.0, -4.0), plan) == (3.0, -4.0)
