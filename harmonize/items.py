"""STAC items parsed once into small frozen records, and the one rule that pairs pan scenes.

Every later step (the grid, the loader, co-registration, the jobs) reads a :class:`Scene`, never
the raw item again: which sensor, platform and collection profile it is, when it was taken and
on which local solar day, where (WRS path/row or MGRS tile, CRS, grid, footprint), how its
digital numbers scale, and, for a Landsat Level-2 scene, its Level-1 pan companion.

:func:`parse_items` builds them, as odc-stac's ``parse_items`` builds ``ParsedItem`` records::

    scenes = parse_items(search(url, include_pan=True))
    l2 = [s for s in scenes if s.level == "L2"]
    l2[0].pan            # the Level-1 scene carrying its 15 m pan band, or None

The pan rule (:func:`is_pan_companion`): a Level-1 scene is the pan companion of a Level-2 scene
when both are Landsat, of the same platform, of the same WRS path/row (when both say), and
acquired within :data:`PAN_MATCH_TOLERANCE` of each other (the two products of one acquisition
share ``DATE_ACQUIRED``/``SCENE_CENTER_TIME``). Each Level-1 scene goes to the nearest such
Level-2 scene, and each Level-2 scene takes at most one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pystac
from odc.geo import geom

from harmonize.bands import Sensor
from harmonize.errors import FootprintMismatchWarning, MissingAssetError, NoOverlapError
from harmonize.providers import (
    CollectionProfile,
    Level,
    Provider,
    Scaling,
    asset_href,
    asset_key,
    band_scaling,
    get_provider,
    normalize_platform,
    profile_for_item,
)

__all__ = [
    "PAN_MATCH_TOLERANCE",
    "Scene",
    "parse_item",
    "parse_items",
    "is_pan_companion",
    "attach_pan",
    "item_datetime",
    "item_crs",
    "local_href",
]

log = logging.getLogger(__name__)

#: How far apart in time the Level-1 and Level-2 products of one Landsat acquisition may be
#: stamped (they share DATE_ACQUIRED/SCENE_CENTER_TIME; a little slack for rounding).
PAN_MATCH_TOLERANCE = timedelta(minutes=2)


def local_href(href: str) -> str:
    """The file path of a ``file://`` href, percent-decoded (``file:///a%20b/x.tif`` is
    ``/a b/x.tif``); any other href unchanged.

    GDAL opens ``file://`` URIs as written, so an archive in a folder with spaces or non-ASCII
    characters (which a correct URI percent-encodes) would be unreadable without this.
    """
    if not href.startswith("file://"):
        return href
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(href).path)


def item_datetime(item: pystac.Item) -> datetime:
    """The item's acquisition time, timezone-aware UTC (``datetime``, else ``start_datetime``).

    Raises
    ------
    MissingAssetError
        If the item has neither.
    """
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise MissingAssetError(f"Item {item.id!r} has no datetime; it cannot be placed on the time axis.")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def item_crs(item: pystac.Item | Mapping[str, Any]) -> str | None:
    """The item's CRS as ``"EPSG:n"`` or WKT (``proj:code``, ``proj:epsg``, ``proj:wkt2``), or None."""
    d = item.properties if isinstance(item, pystac.Item) else item.get("properties", item)
    if d.get("proj:code"):
        return str(d["proj:code"])
    if d.get("proj:epsg"):
        return f"EPSG:{int(d['proj:epsg'])}"
    if d.get("proj:wkt2"):
        return str(d["proj:wkt2"])
    return None


def _footprint(item: pystac.Item) -> geom.Geometry:
    if item.geometry is not None:
        return geom.Geometry(item.geometry, "epsg:4326")
    if item.bbox is not None:
        return geom.box(*item.bbox[:4], "epsg:4326")
    raise NoOverlapError(
        f"Item {item.id!r} has neither geometry nor bbox, so it cannot be placed on a grid; "
        "fix the item document or pass it with a geometry."
    )


def _wrs(props: Mapping[str, Any]) -> tuple[int, int] | None:
    p, r = props.get("landsat:wrs_path"), props.get("landsat:wrs_row")
    try:
        return (int(p), int(r)) if p is not None and r is not None else None
    except (TypeError, ValueError):
        return None


def _mgrs(props: Mapping[str, Any]) -> str | None:
    if props.get("s2:mgrs_tile"):
        return str(props["s2:mgrs_tile"])
    zone, band, square = (props.get(f"mgrs:{k}") for k in ("utm_zone", "latitude_band", "grid_square"))
    if zone is not None and band and square:
        return f"{int(zone):02d}{band}{square}"
    return None


def _grid(item: pystac.Item) -> tuple[tuple[float, ...] | None, tuple[int, int] | None]:
    """The item's ``proj:transform`` (6 values) and ``proj:shape``, from the item or its first asset."""
    holders = [item.properties, *(a.extra_fields for a in item.assets.values())]
    for h in holders:
        if "proj:transform" in h and "proj:shape" in h:
            t, s = h["proj:transform"], h["proj:shape"]
            return tuple(float(v) for v in t[:6]), (int(s[0]), int(s[1]))
    return None, None


@dataclass(frozen=True, eq=False)
class Scene:
    """One STAC item, parsed once.

    Attributes
    ----------
    item
        The item itself, to read its assets (never modified).
    id, collection
        Item and collection ids.
    profile
        The provider collection profile that describes it (asset keys, QA kind, fallbacks).
    sensor, level
        ``"landsat"`` / ``"sentinel-2"``; ``"L2"`` (surface reflectance) or ``"L1"`` (Landsat
        top of atmosphere, where the pan band lives).
    platform
        Normalised platform (``"landsat-8"``, ``"sentinel-2a"`` …).
    time
        Acquisition time, timezone-aware UTC.
    footprint
        Footprint in EPSG:4326 (the geometry, else the bbox).
    crs
        ``"EPSG:n"`` or WKT from the projection extension, or ``None``.
    transform, shape
        ``proj:transform`` (6 values) and ``proj:shape`` of the item (or of its first asset that
        has them), or ``None``.
    wrs, mgrs_tile
        Landsat WRS-2 ``(path, row)`` / Sentinel-2 MGRS tile (``"14SNH"``), where the item says.
    scaling
        Canonical band (and ``"qa"``) -> :class:`~harmonize.providers.Scaling`, for every band
        of the profile whose asset the item carries.
    pan
        For a Landsat Level-2 scene, its Level-1 pan companion (:func:`is_pan_companion`).
    """

    item: pystac.Item
    id: str
    collection: str
    profile: CollectionProfile
    sensor: Sensor
    level: Level
    platform: str
    time: datetime
    footprint: geom.Geometry
    crs: str | None = None
    transform: tuple[float, ...] | None = None
    shape: tuple[int, int] | None = None
    wrs: tuple[int, int] | None = None
    mgrs_tile: str | None = None
    scaling: Mapping[str, Scaling] = dataclasses.field(default_factory=dict)
    pan: Scene | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scaling", MappingProxyType(dict(self.scaling)))

    def __repr__(self) -> str:
        pan = f", pan={self.pan.id!r}" if self.pan is not None else ""
        when = f"{self.time:%Y-%m-%dT%H:%M:%SZ}"
        return f"Scene({self.id!r}, {self.sensor} {self.level}, {self.platform}, {when}{pan})"

    def __dask_tokenize__(self) -> tuple[str, str, str | None]:
        return ("harmonize.Scene", self.collection, self.id + (f"+{self.pan.id}" if self.pan else ""))

    @property
    def solar_day(self) -> date:
        """The local solar date at the footprint's centre (UTC time + longitude / 15 h)."""
        ((lon, _),) = self.footprint.centroid.points
        return (self.time + timedelta(hours=lon / 15.0)).date()

    @property
    def bands(self) -> tuple[str, ...]:
        """Canonical bands (not ``"qa"``) whose asset the item carries."""
        return tuple(b for b in self.scaling if b != "qa")

    def asset_key(self, band: str) -> str:
        """The asset key of canonical ``band`` (or ``"qa"``).

        Raises
        ------
        UnknownBandError, MissingAssetError
            If the collection has no such band, or the item lacks its asset.
        """
        return asset_key(self.item, band, self.profile)

    def href(self, band: str, provider: str | Provider | None = None) -> str:
        """The href to read for ``band``, signed or re-pointed as ``provider`` asks."""
        return asset_href(self.item, band, provider, self.profile)

    def with_pan(self, pan: Scene | None) -> Scene:
        """A copy of this scene with ``pan`` as its pan companion."""
        return dataclasses.replace(self, pan=pan)


def _check_footprint(
    item_id: str,
    footprint: geom.Geometry,
    crs: str | None,
    transform: tuple[float, ...] | None,
    shape: tuple[int, int] | None,
) -> None:
    """Compare the footprint with the file's bounds as the projection extension gives them
    (``proj:code`` + ``proj:transform`` + ``proj:shape``): a wrong ``proj:code`` puts the file
    somewhere else, and the loader would then read nothing (an all-NaN cube, silently)."""
    if not crs or transform is None or shape is None:
        return
    from affine import Affine
    from odc.geo.geobox import GeoBox

    try:
        extent = GeoBox(shape, Affine(*transform), crs).extent.to_crs("epsg:4326")
    except Exception:  # an unknown CRS or a degenerate grid: nothing to compare
        return
    overlap = extent.intersection(footprint).area / max(footprint.area, 1e-12)
    bounds = tuple(round(v, 3) for v in extent.boundingbox)
    where = tuple(round(v, 3) for v in footprint.boundingbox)
    if overlap < 0.5:
        import warnings

        warnings.warn(
            FootprintMismatchWarning(
                f"Item {item_id!r}: its files, placed by proj:code {crs} and proj:transform, cover "
                f"{bounds} (lon/lat) but its footprint is {where} ({100 * overlap:.0f} % of it "
                "inside), so it loads as no data where they differ. Its proj:code (or geometry) is "
                "wrong: fix the item, or leave it out."
            ),
            stacklevel=3,
        )


def parse_item(item: pystac.Item, provider: str | Provider | None = None) -> Scene:
    """Parse one item into a :class:`Scene` (without a pan companion).

    Raises
    ------
    UnknownCollectionError
        If no provider profile describes the item.
    MissingAssetError
        If it has no datetime.
    NoOverlapError
        If it has neither geometry nor bbox.

    Warns
    -----
    FootprintMismatchWarning
        If less than half its footprint lies within its files' bounds (from ``proj:code`` and
        ``proj:transform``): a wrong ``proj:code`` would otherwise give an all-NaN cube silently.
    """
    prov = get_provider(provider) if provider is not None else None
    profile = profile_for_item(item, prov)
    keys = {**{b: k for b, k in profile.assets.items()}, "qa": profile.qa_asset}
    scaling = {b: band_scaling(item, b, profile) for b, k in keys.items() if k in item.assets}
    transform, shape = _grid(item)
    props = item.properties
    footprint = _footprint(item)
    _check_footprint(item.id, footprint, item_crs(item), transform, shape)
    return Scene(
        item=item,
        id=item.id,
        collection=item.collection_id or profile.collection,
        profile=profile,
        sensor=profile.sensor,
        level=profile.level,
        platform=normalize_platform(props.get("platform")),
        time=item_datetime(item),
        footprint=footprint,
        crs=item_crs(item),
        transform=transform,
        shape=shape,
        wrs=_wrs(props) if profile.sensor == "landsat" else None,
        mgrs_tile=_mgrs(props) if profile.sensor == "sentinel-2" else None,
        scaling=scaling,
    )


def is_pan_companion(l1: Scene, l2: Scene) -> bool:
    """Whether Level-1 ``l1`` can be the pan companion of Level-2 ``l2`` (see the module docstring)."""
    if l1.level != "L1" or l2.level != "L2" or l1.sensor != "landsat" or l2.sensor != "landsat":
        return False
    if l1.platform != l2.platform:
        return False
    if l1.wrs is not None and l2.wrs is not None and l1.wrs != l2.wrs:
        return False
    return abs(l1.time - l2.time) <= PAN_MATCH_TOLERANCE


def attach_pan(scenes: Sequence[Scene]) -> list[Scene]:
    """``scenes`` with each Landsat Level-2 scene given its pan companion among the Level-1 ones.

    Level-2 scenes that already have one keep it. Each Level-1 scene goes to the nearest
    matching Level-2 scene; a Level-2 scene with several candidates takes the nearest in time.
    Level-1 scenes stay in the list (matched or not), in their places.
    """
    taken = {id(s.pan) for s in scenes if s.pan is not None}
    l1 = [s for s in scenes if s.level == "L1" and id(s) not in taken]
    l2 = [s for s in scenes if s.level == "L2" and s.sensor == "landsat" and s.pan is None]
    best: dict[int, tuple[timedelta, Scene]] = {}  # id(l2) -> (time difference, l1)
    for pan in l1:
        cands = [s for s in l2 if is_pan_companion(pan, s)]
        if not cands:
            continue
        match = min(cands, key=lambda s: abs(s.time - pan.time))
        delta = abs(match.time - pan.time)
        if id(match) not in best or delta < best[id(match)][0]:
            best[id(match)] = (delta, pan)
    return [s.with_pan(best[id(s)][1]) if id(s) in best else s for s in scenes]


def parse_items(items: Iterable[pystac.Item | Scene], provider: str | Provider | None = None) -> list[Scene]:
    """Parse items into :class:`Scene` records and pair each Landsat Level-2 scene with its pan.

    Parameters
    ----------
    items
        STAC items (Level-2 of either sensor, Level-1 Landsat for pan), or scenes already parsed
        (kept as they are).
    provider
        Provider profile used to recognise the items; default whichever profile matches.

    Returns
    -------
    list of Scene
        One per item, in the input order; Level-2 Landsat scenes carry ``pan`` where a Level-1
        companion is among ``items``.
    """
    scenes = [it if isinstance(it, Scene) else parse_item(it, provider) for it in items]
    return attach_pan(scenes)
