"""Lazy cubes of Landsat and Sentinel-2 on one common grid, loaded with odc-stac.

:func:`load_cube` takes STAC items of both sensors (Level-2 surface reflectance, plus optionally
the Landsat Collection 2 Level-1 items that carry the 15 m pan band) and returns one
``xr.Dataset`` on ``(time, y, x)``:

* canonical reflectance bands (``blue`` … ``swir22``) as float32 with NaN for no data;
* ``pan`` from the matching Level-1 scene (NaN at Sentinel-2 times);
* a boolean ``clear`` (and optionally other masks) decoded from ``QA_PIXEL`` / ``SCL``;
* per-time coordinates ``sensor``, ``platform``, ``item_id``, ``shift_x``, ``shift_y``.

Scale and offset differ per item (the Sentinel-2 processing baseline changed the offset in
2022), so raw digital numbers are loaded by odc-stac per collection and scaled lazily with a
1-D scale/offset along time, not with odc-stac's collection-level scaling.

A co-registration shift is applied by loading the scene on a shifted grid: the asset's
geotransform is overridden through a GDAL ``vrt://`` connection string, so pixels are resampled
once. The items a cube was built from travel in ``ds.attrs["stac_items"]`` (see
:func:`cube_items` and :func:`reload_cube`).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import numpy as np
import odc.geo.xr  # noqa: F401 - registers the .odc accessor
import pystac
import rasterio
import rasterio.errors
import rioxarray  # noqa: F401 - registers the .rio accessor
import shapely.affinity
import xarray as xr
from odc.geo import geom
from odc.geo.geobox import GeoBox
from odc.loader._rio import RioDriver, RioReader, rio_read

from harmonize.bands import PAN, REFLECTANCE_BANDS, check_bands
from harmonize.errors import (
    AssetReadError,
    EmptySearchError,
    HarmonizeError,
    MissingAssetError,
    NoOverlapError,
)
from harmonize.grid import (
    DEFAULT_RESOLUTION,
    common_geobox,
    geobox_from_dict,
    geobox_to_dict,
    items_overlapping,
)
from harmonize.providers import (
    CollectionProfile,
    Provider,
    Scaling,
    asset_href,
    asset_key,
    band_scaling,
    get_provider,
    normalize_platform,
    profile_for_item,
)
from harmonize.qa import MASK_NAMES, landsat_masks, scl_masks

__all__ = [
    "DEFAULT_CHUNKS",
    "AssetReadWarning",
    "load_cube",
    "to_reflectance",
    "cube_items",
    "reload_cube",
    "shift_item",
]

log = logging.getLogger(__name__)

#: Chunking used when ``chunks`` is not given: one scene per chunk, 512 x 512 pixels.
DEFAULT_CHUNKS: dict[str, int] = {"time": 1, "y": 512, "x": 512}

Groupby = Literal["solar_day", "time", "id"]

# L1 and L2 of one Landsat scene share DATE_ACQUIRED/SCENE_CENTER_TIME; allow a little slack.
_L1_MATCH_TOLERANCE = timedelta(minutes=2)


class AssetReadWarning(UserWarning):
    """An asset could not be read and was loaded as no data (``fail_on_error=False``)."""


# ---------------------------------------------------------------------------------------------
# Reading: odc-stac's rasterio driver, with named errors at compute time


def _display_href(uri: str) -> str:
    """The asset href behind a (possibly ``vrt://``-wrapped) GDAL path."""
    if uri.startswith("vrt://"):
        uri = uri[len("vrt://") :].rsplit("?", 1)[0]
    return uri


_THREAD = threading.local()


def _hold_rasterio_env() -> None:
    """Keep one rasterio environment open for the life of the calling (worker) thread.

    Every ``rasterio.open``/``reproject`` enters a GDAL environment; when none is open around
    it, rasterio builds a new one and tears it down again afterwards (re-registering drivers,
    searching GDAL/PROJ data folders), which took ~15 % of a demo ingest's busy time. Nested
    environments (odc-loader's per-task options, credentials) still set and restore their own
    options inside it.
    """
    if getattr(_THREAD, "env", None) is None and os.environ.get("HARMONIZE_NO_HELD_ENV") is None:
        env = rasterio.Env()
        env.__enter__()
        _THREAD.env = env


class _Reader(RioReader):
    """odc-loader's rasterio reader that names the href of an asset it cannot read."""

    def __init__(self, src: Any, ctx: Any, strict: bool) -> None:
        super().__init__(src, ctx)
        self._strict = strict

    def read(self, cfg: Any, dst_geobox: GeoBox, *, dst: np.ndarray | None = None, selection: Any = None):  # noqa: ANN201
        _hold_rasterio_env()
        try:
            return rio_read(self._src, cfg, dst_geobox, dst=dst, selection=selection)
        except (rasterio.errors.RasterioError, OSError) as exc:
            href = _display_href(self._src.uri)
            if self._strict:
                raise AssetReadError(
                    f"Could not read asset {href} ({exc}). Check that the file exists and is a valid "
                    "GeoTIFF (and that credentials/requester-pays are set), or pass "
                    "fail_on_error=False to load it as no data."
                ) from exc
            warnings.warn(
                f"Could not read asset {href} ({exc}); its pixels are loaded as no data (NaN).",
                AssetReadWarning,
                stacklevel=2,
            )
            out = dst[0:0, 0:0] if dst is not None else np.ndarray((0, 0), dtype=cfg.dtype)
            return np.s_[0:0, 0:0], out


class _Driver(RioDriver):
    """odc-loader's rasterio driver with :class:`_Reader` and extra GDAL options."""

    def __init__(self, strict: bool, gdal_env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._strict = strict
        self._gdal_env = dict(gdal_env or {})

    def restore_env(self, env: dict[str, Any], load_state: Any) -> Any:
        _hold_rasterio_env()
        return super().restore_env(env, load_state)

    def capture_env(self) -> dict[str, Any]:
        env = super().capture_env()
        env.update(self._gdal_env)
        return env

    def open(self, src: Any, ctx: Any) -> _Reader:
        return _Reader(src, ctx, self._strict)


# ---------------------------------------------------------------------------------------------
# Shifted grids


def _gdal_path(href: str) -> str:
    if href.startswith("file://"):
        return href[len("file://") :]
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://") :]
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    return href


def _item_crs(d: Mapping[str, Any]) -> str | None:
    props = d.get("properties", d)
    if props.get("proj:code"):
        return str(props["proj:code"])
    if props.get("proj:epsg"):
        return f"EPSG:{int(props['proj:epsg'])}"
    if props.get("proj:wkt2"):
        return str(props["proj:wkt2"])
    return None


def _translate(g: geom.Geometry, dx: float, dy: float) -> geom.Geometry:
    return geom.Geometry(shapely.affinity.translate(g.geom, dx, dy), g.crs)


def _shift_transform(t: Sequence[float], dx: float, dy: float) -> list[float]:
    t = [float(v) for v in t]
    t[2] += dx
    t[5] += dy
    return t


def shift_item(item: pystac.Item, dx: float, dy: float, assets: Iterable[str] | None = None) -> pystac.Item:
    """A copy of ``item`` whose pixels sit ``(dx, dy)`` metres from where its metadata says.

    The shift is added to the geotransform origin of the item and of each asset (``proj:transform``,
    ``proj:bbox``, ``proj:geometry``), to the footprint (``bbox``, ``geometry``), and to the
    files themselves: each raster asset's href becomes a GDAL ``vrt://`` path that overrides the
    file's geotransform, so a loader resamples the pixels once, onto the target grid.

    Parameters
    ----------
    item
        The item to shift (left untouched).
    dx, dy
        Shift in CRS units (metres) added to the origin.
    assets
        Asset keys to re-point (default: every asset with a ``proj:transform`` or raster type).

    Raises
    ------
    MissingAssetError
        If an asset to shift has no ``proj:transform`` (neither its own nor the item's).
    """
    d = copy.deepcopy(item.to_dict(include_self_link=False, transform_hrefs=False))  # to_dict shares dicts
    if dx == 0 and dy == 0:
        return pystac.Item.from_dict(d, preserve_dict=False)
    props = d["properties"]
    crs = _item_crs(d)
    for holder in [props, *d["assets"].values()]:
        if "proj:transform" in holder:
            holder["proj:transform"] = _shift_transform(holder["proj:transform"], dx, dy)
        if "proj:bbox" in holder:
            b = holder["proj:bbox"]
            holder["proj:bbox"] = [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
        if "proj:geometry" in holder:
            g = _translate(geom.Geometry(holder["proj:geometry"], crs), dx, dy)
            holder["proj:geometry"] = g.json
    if crs is not None and d.get("geometry") is not None:
        g = _translate(geom.Geometry(d["geometry"], "epsg:4326").to_crs(crs), dx, dy).to_crs("epsg:4326")
        d["geometry"] = g.json
        d["bbox"] = list(g.boundingbox)
    keys = (
        list(assets)
        if assets is not None
        else [
            k
            for k, a in d["assets"].items()
            if "proj:transform" in a or "image/tiff" in str(a.get("type", ""))
        ]
    )
    for key in keys:
        a = d["assets"][key]
        t = a.get("proj:transform") or props.get("proj:transform")
        if t is None:
            raise MissingAssetError(
                f"Asset {key!r} of item {item.id!r} has no proj:transform, so it cannot be loaded on a "
                "shifted grid; add the projection extension to the item."
            )
        gt = (t[2], t[0], t[1], t[5], t[3], t[4])  # GDAL's geotransform order
        a["href"] = f"vrt://{_gdal_path(a['href'])}?a_gt={','.join(repr(float(v)) for v in gt)}"
    return pystac.Item.from_dict(d, preserve_dict=False)


# ---------------------------------------------------------------------------------------------
# Time slices: which items make up one time step


@dataclass
class _Slice:
    """One time step of the cube: same-day scenes of one collection, platform and scaling."""

    profile: CollectionProfile
    platform: str
    scaling: Scaling
    items: list[pystac.Item] = field(default_factory=list)
    l1_items: list[pystac.Item] = field(default_factory=list)
    shift: tuple[float, float] = (0.0, 0.0)
    fill: float | int | None = None

    @property
    def time(self) -> datetime:
        return min(_item_datetime(it) for it in self.items)


def _item_datetime(item: pystac.Item) -> datetime:
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise MissingAssetError(f"Item {item.id!r} has no datetime; it cannot be placed on the time axis.")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _group_key(item: pystac.Item, groupby: str, lon: float) -> Any:
    if groupby == "solar_day":
        return (_item_datetime(item) + timedelta(hours=lon / 15.0)).date()
    if groupby == "time":
        return _item_datetime(item)
    if groupby == "id":
        return item.id
    raise ValueError(f"groupby must be 'solar_day', 'time' or 'id', not {groupby!r}.")


def _reflectance_scaling(item: pystac.Item, profile: CollectionProfile, bands: Sequence[str]) -> Scaling:
    scalings = {b: band_scaling(item, b, profile) for b in bands}
    if not scalings:
        return Scaling()
    first = next(iter(scalings.values()))
    odd = {
        b: s
        for b, s in scalings.items()
        if (s.scale, s.offset, s.nodata) != (first.scale, first.offset, first.nodata)
    }
    if odd:
        raise HarmonizeError(
            f"Item {item.id!r} scales its bands differently ({scalings}); load those bands in "
            "separate load_cube calls."
        )
    return first


def _wrs(item: pystac.Item) -> tuple[int, int] | None:
    p, r = item.properties.get("landsat:wrs_path"), item.properties.get("landsat:wrs_row")
    try:
        return (int(p), int(r)) if p is not None and r is not None else None
    except (TypeError, ValueError):
        return None


def _match_l1(l1: pystac.Item, l2_items: Sequence[pystac.Item]) -> pystac.Item | None:
    """The Level-2 scene that ``l1`` is the Level-1 product of (platform, time, WRS path/row)."""
    plat = normalize_platform(l1.properties.get("platform"))
    t = _item_datetime(l1)
    best, best_dt = None, _L1_MATCH_TOLERANCE
    for l2 in l2_items:
        if normalize_platform(l2.properties.get("platform")) != plat:
            continue
        a, b = _wrs(l1), _wrs(l2)
        if a is not None and b is not None and a != b:
            continue
        delta = abs(_item_datetime(l2) - t)
        if delta <= best_dt:
            best, best_dt = l2, delta
    return best


# ---------------------------------------------------------------------------------------------
# Loading


def _load_family(
    items: Sequence[pystac.Item],
    keys: Mapping[str, str],
    group_of: Mapping[str, int],
    *,
    geobox: GeoBox,
    chunks: Mapping[str, int],
    resampling: str,
    driver: _Driver,
    progress: Any,
) -> xr.Dataset:
    """Raw DNs of one collection, one time step per slice index (sorted), canonical names."""
    import odc.stac

    first = items[0]
    profile = profile_for_item(first)
    assets: dict[str, dict[str, Any]] = {}
    for band, key in keys.items():
        s = band_scaling(first, band, profile)
        assets[key] = {"data_type": s.dtype, "nodata": s.nodata}
    collections = {it.collection_id for it in items}
    stac_cfg = {c: {"assets": assets, "warnings": "ignore"} for c in collections}
    resamp = {key: ("nearest" if band == "qa" else resampling) for band, key in keys.items()}
    ds = odc.stac.load(
        items,
        bands=list(keys.values()),
        groupby=lambda item, parsed, idx: group_of[item.id],
        geobox=geobox,
        chunks=dict(chunks),
        resampling=resamp,
        stac_cfg=stac_cfg,
        driver=driver,
        fail_on_error=True,  # _Reader decides between raising and warning
        progress=progress,
    )
    ds = ds.rename({key: band for band, key in keys.items() if key != band})
    return ds.assign_coords(time=np.array(sorted(set(group_of[it.id] for it in items))))


def _mask_block(qa: np.ndarray, *bands: np.ndarray, kind: str, mask_name: str, fill: Any) -> np.ndarray:
    decoded = landsat_masks(qa) if kind == "qa_pixel" else scl_masks(qa)
    mask = np.asarray(decoded[mask_name], bool)
    if not bands:
        return mask
    missing = np.zeros(mask.shape, bool)
    for b in bands:
        missing |= b == fill
    return mask | missing if mask_name == "nodata" else mask & ~missing


def _masks(
    ds: xr.Dataset, kind: str, names: Sequence[str], bands: Sequence[str], fill: Any
) -> dict[str, Any]:
    """Dask masks decoded from ``ds.qa``; a pixel missing in any loaded band is no data, not clear.

    (Sentinel-2's 10 m bands end at a swath edge a 20 m SCL pixel straddles, for instance.) One
    blockwise task per chunk and mask keeps the graph small.
    """
    import dask.array as da

    arrays = [ds["qa"].data, *(ds[b].data for b in bands)]
    return {
        n: da.map_blocks(_mask_block, *arrays, kind=kind, mask_name=n, fill=fill, dtype=bool) for n in names
    }


def _scale_block(
    dn: np.ndarray, scale: np.ndarray, offset: np.ndarray, nodata: np.ndarray, block_info: dict | None = None
) -> np.ndarray:
    t0, t1 = block_info[0]["array-location"][0] if block_info else (0, dn.shape[0])
    shape = (t1 - t0,) + (1,) * (dn.ndim - 1)
    out = dn.astype(np.float32) * scale[t0:t1].astype(np.float32).reshape(shape)
    out += offset[t0:t1].astype(np.float32).reshape(shape)
    out[dn == nodata[t0:t1].reshape(shape)] = np.nan
    return out


def _scaled(dn: Any, scale: np.ndarray, offset: np.ndarray, nodata: np.ndarray) -> Any:
    """``dn * scale[t] + offset[t]`` as float32, NaN where ``dn == nodata[t]`` (dask or numpy)."""
    import dask.array as da

    if isinstance(dn, da.Array):
        return da.map_blocks(_scale_block, dn, scale=scale, offset=offset, nodata=nodata, dtype=np.float32)
    return _scale_block(np.asarray(dn), scale, offset, nodata)


# pylint: disable=too-many-arguments,too-many-locals,too-many-branches,too-many-statements
def load_cube(
    items: Iterable[pystac.Item],
    bands: str | Sequence[str] | None = None,
    *,
    # Geo selection
    geobox: GeoBox | None = None,
    bbox: Sequence[float] | None = None,
    crs: Any = None,
    resolution: float = DEFAULT_RESOLUTION,
    # Time
    groupby: Groupby = "solar_day",
    # STAC related
    provider: str | Provider | None = None,
    shifts: Mapping[str, tuple[float, float]] | None = None,
    # Values
    reflectance: bool = True,
    masks: Sequence[str] = ("clear",),
    resampling: str = "bilinear",
    # Dask
    chunks: Mapping[str, int] | None = None,
    # UI
    fail_on_error: bool = True,
    progress: Any = None,
) -> xr.Dataset:
    """Load Landsat and Sentinel-2 items into one lazy cube on a common grid.

    Parameters
    ----------
    items
        STAC items: Level-2 Landsat and/or Sentinel-2 of any known provider, plus optionally the
        Landsat Collection 2 Level-1 items (``landsat-c2l1``) that carry the pan band.
    bands
        Canonical bands to load (default: all six reflectance bands, plus ``pan`` when Level-1
        items are among ``items``).
    geobox
        Target grid; overrides ``bbox``, ``crs`` and ``resolution``.
    bbox
        Area of interest ``(west, south, east, north)`` in degrees; default: the footprint union
        of the Sentinel-2 items (the grid is theirs), or of all items when there are none.
    crs
        Output CRS; default: the UTM zone of the AOI centre.
    resolution
        Pixel size; the default 10 m with edges on 10 m multiples is the Sentinel-2 grid.
    groupby
        ``"solar_day"`` fuses same-day scenes of one collection and platform into one time step;
        ``"time"`` and ``"id"`` keep every scene.
    provider
        Provider profile (name or :class:`~harmonize.providers.Provider`) used to recognise
        items, sign hrefs and set GDAL options; default: whichever profile matches.
    shifts
        Per Level-2 item id, ``(dx, dy)`` in metres added to that scene's geotransform origin
        (and to its matching Level-1 pan scene) before loading; recorded as ``shift_x`` and
        ``shift_y`` time coordinates.
    reflectance
        ``True``: float32 reflectance with NaN for no data. ``False``: raw digital numbers with
        per-time ``scale``, ``offset``, ``nodata`` (and ``pan_scale`` …) coordinates; see
        :func:`to_reflectance`.
    masks
        Boolean masks to decode from QA_PIXEL/SCL, any of :data:`harmonize.qa.MASK_NAMES`.
    resampling
        Resampling of the reflectance bands onto the grid (quality bands always use nearest).
    chunks
        Dask chunks (default :data:`DEFAULT_CHUNKS`); the cube is always lazy.
    fail_on_error
        ``True``: an unreadable asset raises :class:`~harmonize.errors.AssetReadError` at compute
        time. ``False``: it warns (:class:`AssetReadWarning`, with the href) and loads as NaN.
    progress
        Passed to ``odc.stac.load`` (it only shows for eager loads; wrap ``.compute()`` in
        ``dask.diagnostics.ProgressBar`` for the lazy cube).

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``, sorted by time, with the CRS attached (``ds.odc.geobox``,
        ``ds.rio.crs``), the source items in ``attrs["stac_items"]`` and the options in
        ``attrs["harmonize_load"]``.

    Raises
    ------
    EmptySearchError
        No items (or no Level-2 items).
    UnknownCollectionError
        An item of a collection no provider profile knows.
    UnknownBandError, MissingAssetError
        A band that is not canonical or that an item lacks.
    NoOverlapError
        ``bbox``/``geobox`` does not intersect the items.
    """
    items = list(items)
    if not items:
        raise EmptySearchError(
            "load_cube got no items; widen the search (bbox, datetime, cloud cover) "
            "or check the collection ids."
        )
    prov = get_provider(provider) if provider is not None else None
    requested = None if bands is None else check_bands(bands)
    mask_names = tuple(masks)
    unknown_masks = [m for m in mask_names if m not in MASK_NAMES]
    if unknown_masks:
        raise HarmonizeError(f"Unknown mask(s) {unknown_masks}; choose from {list(MASK_NAMES)}.")

    profiles = {it.id: profile_for_item(it, prov) for it in items}
    l2 = [it for it in items if profiles[it.id].level == "L2"]
    l1 = [it for it in items if profiles[it.id].level == "L1"]
    if not l2:
        raise EmptySearchError(
            f"None of the {len(items)} items is a Level-2 scene "
            f"(only Level-1 {sorted({it.collection_id for it in l1})}); "
            "search the Level-2 collections too: pan is loaded alongside them."
        )
    if requested is None:
        requested = REFLECTANCE_BANDS + ((PAN,) if l1 else ())
    refl_bands = tuple(b for b in requested if b != PAN)
    want_pan = PAN in requested
    if want_pan and not l1:
        raise MissingAssetError(
            "Band 'pan' needs the Landsat Collection 2 Level-1 items (landsat-c2l1) among the items; "
            "search that collection too, or leave 'pan' out of bands."
        )

    # Every asset must be there before anything is loaded (metadata only).
    for it in l2:
        for b in (*refl_bands, "qa"):
            asset_key(it, b, profiles[it.id])
    if want_pan:
        for it in l1:
            asset_key(it, PAN, profiles[it.id])

    gbox = common_geobox(l2, bbox=bbox, crs=crs, resolution=resolution, geobox=geobox)
    l2_in = items_overlapping(l2, gbox)
    if not l2_in:
        raise NoOverlapError(
            f"The grid {gbox.extent.to_crs('epsg:4326').boundingbox} does not intersect any of the "
            f"{len(l2)} Level-2 items; pass a bbox or geobox inside their footprints."
        )
    if len(l2_in) < len(l2):
        log.info("dropping %d item(s) outside the grid", len(l2) - len(l2_in))
    l2 = l2_in

    shifts = {k: (float(v[0]), float(v[1])) for k, v in (shifts or {}).items()}
    unknown_ids = sorted(set(shifts) - {it.id for it in l2})
    if unknown_ids:
        raise MissingAssetError(
            f"shifts name item(s) {unknown_ids} that are not among the Level-2 items on this grid; "
            "key shifts by the Level-2 item id."
        )

    # Level-1 pan scenes follow their Level-2 scene.
    l1_of: dict[str, list[pystac.Item]] = {}
    if want_pan:
        landsat_l2 = [it for it in l2 if profiles[it.id].sensor == "landsat"]
        for it in l1:
            match = _match_l1(it, landsat_l2)
            if match is None:
                log.warning(
                    "Level-1 item %s matches no Level-2 scene on the grid; its pan is not loaded", it.id
                )
                continue
            l1_of.setdefault(match.id, []).append(it)

    # Time slices.
    ((lon, _),) = gbox.extent.centroid.to_crs("epsg:4326").points
    slices: dict[Any, _Slice] = {}
    slice_of: dict[str, Any] = {}
    for it in sorted(l2, key=lambda i: (_item_datetime(i), i.id)):
        prof = profiles[it.id]
        scaling = _reflectance_scaling(it, prof, refl_bands)
        plat = normalize_platform(it.properties.get("platform"))
        key = (
            prof.collection,
            prof.assets.get("blue"),
            plat,
            (scaling.scale, scaling.offset, scaling.nodata),
            _group_key(it, groupby, lon),
        )
        sl = slices.setdefault(key, _Slice(profile=prof, platform=plat, scaling=scaling))
        sl.items.append(it)
        sl.l1_items.extend(l1_of.get(it.id, []))
        if it.id in shifts:
            if sl.shift != (0.0, 0.0) and sl.shift != shifts[it.id]:
                log.warning("same-day scenes of slice %s have different shifts; recording the first", key)
            else:
                sl.shift = shifts[it.id]
        slice_of[it.id] = key
    ordered = sorted(slices.values(), key=lambda s: (s.time, s.items[0].id))
    index = {id(s): i for i, s in enumerate(ordered)}
    group_of = {it.id: index[id(s)] for s in ordered for it in s.items}
    group_of.update({l1.id: index[id(s)] for s in ordered for l1 in s.l1_items})

    # Copies of the items to read: shifted and signed as needed.
    def _prepared(it: pystac.Item, keys: Mapping[str, str], l2_id: str) -> pystac.Item:
        if prov is not None and (prov.sign is not None or prov.prefer_alternate):
            d = copy.deepcopy(it.to_dict(include_self_link=False, transform_hrefs=False))
            for band, key in keys.items():
                d["assets"][key]["href"] = asset_href(it, band, prov)
            it = pystac.Item.from_dict(d, preserve_dict=False)
        dx, dy = shifts.get(l2_id, (0.0, 0.0))
        if dx or dy:
            it = shift_item(it, dx, dy, assets=keys.values())
        return it

    driver = _Driver(strict=fail_on_error, gdal_env=prov.gdal_env() if prov is not None else None)
    chunks = dict(DEFAULT_CHUNKS if chunks is None else chunks)
    common = dict(geobox=gbox, chunks=chunks, resampling=resampling, driver=driver, progress=progress)

    import dask.array as da

    n = len(ordered)
    # Per variable, per slice index: a (1, y, x) dask array; families are merged in time order
    # by chunk-aligned slicing, which adds no work to the graph.
    pieces: dict[str, list[Any]] = {}
    template: xr.Dataset | None = None
    families: dict[tuple[str, str], list[_Slice]] = {}
    for s in ordered:
        families.setdefault((s.profile.collection, str(s.profile.assets.get("blue"))), []).append(s)
    for fam in families.values():
        prof = fam[0].profile
        keys = {b: prof.assets[b] for b in refl_bands} | {"qa": prof.qa_asset}
        fam_items = [_prepared(it, keys, it.id) for s in fam for it in s.items]
        ds = _load_family(fam_items, keys, group_of, **common)
        template = ds if template is None else template
        fills = {ds[b].attrs.get("nodata") for b in refl_bands}
        if len(fills) > 1:
            raise HarmonizeError(f"Items of {prof.collection!r} mark no data differently per band ({fills}).")
        fill = next(iter(fills), None)
        for s in fam:  # the value odc-stac fills missing pixels with, which is what to mask
            s.fill = fill if fill is not None else s.scaling.nodata
        variables = {b: ds[b].data for b in refl_bands}
        variables.update(_masks(ds, prof.qa_kind, mask_names, refl_bands, fill))
        for k, i in enumerate(ds.time.values):
            for name, arr in variables.items():
                pieces.setdefault(name, [None] * n)[int(i)] = arr[k : k + 1]
    assert template is not None

    coords: dict[str, Any] = {
        "sensor": ("time", [s.profile.sensor for s in ordered]),
        "platform": ("time", [s.platform for s in ordered]),
        "item_id": ("time", [",".join(it.id for it in s.items) for s in ordered]),
        "shift_x": ("time", np.array([s.shift[0] for s in ordered], "float64")),
        "shift_y": ("time", np.array([s.shift[1] for s in ordered], "float64")),
        "scale": ("time", np.array([s.scaling.scale for s in ordered], "float64")),
        "offset": ("time", np.array([s.scaling.offset for s in ordered], "float64")),
        "nodata": ("time", np.array([np.nan if s.fill is None else s.fill for s in ordered], "float64")),
    }

    if want_pan:
        pan_scale, pan_offset, pan_nodata = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        pan_fams: dict[str, list[_Slice]] = {}
        for s in ordered:
            if s.l1_items:
                pan_fams.setdefault(s.l1_items[0].collection_id or "", []).append(s)
        pan_pieces: list[Any] = [None] * n
        for fam in pan_fams.values():
            prof = profiles[fam[0].l1_items[0].id]
            keys = {PAN: prof.assets[PAN]}
            fam_items = [_prepared(l1, keys, _l2_of(l1, s)) for s in fam for l1 in s.l1_items]
            part = _load_family(fam_items, keys, group_of, **common)
            nd = part[PAN].attrs.get("nodata")
            for k, i in enumerate(part.time.values):
                pan_pieces[int(i)] = part[PAN].data[k : k + 1]
            for s in fam:
                ps = band_scaling(s.l1_items[0], PAN, prof)
                i = index[id(s)]
                pan_scale[i], pan_offset[i] = ps.scale, ps.offset
                value = nd if nd is not None else ps.nodata
                pan_nodata[i] = np.nan if value is None else value
        fill = int(np.nanmax(pan_nodata)) if np.isfinite(pan_nodata).any() else 0
        pan_nodata[np.isnan(pan_nodata)] = fill
        ny, nx = gbox.shape.y, gbox.shape.x
        empty = da.full(
            (1, ny, nx), fill, dtype="uint16", chunks=(1, chunks.get("y", ny), chunks.get("x", nx))
        )
        pieces[PAN] = [p if p is not None else empty for p in pan_pieces]
        coords.update(
            pan_scale=("time", pan_scale), pan_offset=("time", pan_offset), pan_nodata=("time", pan_nodata)
        )

    var_order = [*refl_bands, *([PAN] if want_pan else []), *mask_names]
    spatial = {c: template.coords[c] for c in template.coords if c != "time"}
    tchunk = int(chunks.get("time", 1) or 1)

    def _stacked(parts: list[Any]) -> Any:
        arr = da.concatenate(parts, axis=0) if n > 1 else parts[0]
        return arr.rechunk({0: tchunk}) if tchunk > 1 else arr

    cube = xr.Dataset(
        {v: (("time", "y", "x"), _stacked(pieces[v])) for v in var_order},
        coords={"time": np.arange(n), **spatial},
    )
    for v in var_order:
        if v in template.data_vars:
            cube[v].attrs = dict(template[v].attrs)
        elif v == PAN:
            cube[v].attrs = {"nodata": fill}

    times = np.array(
        [np.datetime64(s.time.astimezone(timezone.utc).replace(tzinfo=None), "ns") for s in ordered]
    )
    cube = cube.assign_coords(time=times).assign_coords(coords)
    for name in mask_names:
        cube[name].attrs = {"long_name": f"{name} (decoded from QA_PIXEL / SCL)"}

    used = [it for s in ordered for it in (*s.items, *s.l1_items)]
    cube.attrs["stac_items"] = [
        copy.deepcopy(it.to_dict(include_self_link=False, transform_hrefs=False)) for it in used
    ]
    cube.attrs["harmonize_load"] = {
        "bands": list(requested),
        "geobox": geobox_to_dict(gbox),
        "groupby": groupby,
        "provider": prov.name if prov is not None else None,
        "shifts": {k: list(v) for k, v in shifts.items()},
        "reflectance": bool(reflectance),
        "masks": list(mask_names),
        "resampling": resampling,
        "chunks": chunks,
        "fail_on_error": bool(fail_on_error),
    }
    return to_reflectance(cube) if reflectance else cube


def _l2_of(l1: pystac.Item, s: _Slice) -> str:
    """Id of the Level-2 scene in ``s`` that ``l1`` was matched to (for its shift)."""
    match = _match_l1(l1, s.items)
    return match.id if match is not None else s.items[0].id


# ---------------------------------------------------------------------------------------------
# Digital numbers to reflectance, and back to the items


_SCALE_COORDS = {"scale", "offset", "nodata", "pan_scale", "pan_offset", "pan_nodata"}


def to_reflectance(ds: xr.Dataset) -> xr.Dataset:
    """Apply the per-time scale and offset of a raw-DN cube (``load_cube(..., reflectance=False)``).

    Reflectance bands use the ``scale``, ``offset`` and ``nodata`` time coordinates, ``pan`` uses
    ``pan_scale``, ``pan_offset`` and ``pan_nodata``. Lazy; the result is float32 with NaN where
    the DN is the no-data value, and the scaling coordinates are dropped.

    Raises
    ------
    HarmonizeError
        If ``ds`` lacks the scaling coordinates (for instance because it already is reflectance).
    """
    if "scale" not in ds.coords:
        raise HarmonizeError(
            "This cube has no 'scale'/'offset' coordinates: it is already reflectance, or was not "
            "made by load_cube(..., reflectance=False)."
        )
    out = ds.copy()
    for var in ds.data_vars:
        prefix = "" if var in REFLECTANCE_BANDS else ("pan_" if var == PAN else None)
        if prefix is None:
            continue
        dn = ds[var]
        vectors = [np.asarray(ds[f"{prefix}{c}"].values, "float64") for c in ("scale", "offset", "nodata")]
        out[var] = dn.copy(data=_scaled(dn.transpose("time", ...).data, *vectors)).assign_attrs(
            units="1", long_name=f"{var} reflectance"
        )
        out[var].attrs.pop("nodata", None)
    out = out.drop_vars([c for c in _SCALE_COORDS if c in out.coords])
    if "harmonize_load" in out.attrs:
        out.attrs["harmonize_load"] = {**out.attrs["harmonize_load"], "reflectance": True}
    return out


def cube_items(ds: xr.Dataset) -> list[pystac.Item]:
    """The STAC items a cube was built from (Level-2 and Level-1), as pystac Items.

    Raises
    ------
    HarmonizeError
        If ``ds`` does not record its items (it was not made by :func:`load_cube`).
    """
    docs = ds.attrs.get("stac_items")
    if docs is None:
        raise HarmonizeError(
            "This dataset does not record its STAC items; build it with harmonize.cube.load_cube."
        )
    return [pystac.Item.from_dict(d) for d in docs]


def reload_cube(ds: xr.Dataset, **overrides: Any) -> xr.Dataset:
    """Load the items of ``ds`` again on its grid with its options, changing ``overrides``.

    Co-registration uses it to reload scenes on shifted grids:
    ``reload_cube(ds, shifts={"LC08_…": (12.0, -7.5)})``.
    """
    opts = dict(ds.attrs.get("harmonize_load") or {})
    if not opts:
        raise HarmonizeError(
            "This dataset does not record its load options; build it with harmonize.cube.load_cube."
        )
    opts["geobox"] = geobox_from_dict(opts["geobox"])
    opts.update(overrides)
    return load_cube(cube_items(ds), **opts)
