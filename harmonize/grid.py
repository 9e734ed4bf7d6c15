"""The common grid both sensors are loaded onto.

The default target is the Sentinel-2 MGRS convention: 10 m pixels whose edges sit on 10 m
multiples, in the UTM zone of the area of interest (from the bbox centre, or from the centre of
the items' footprint union when no bbox is given). Items from another UTM zone are reprojected
onto it, never dropped. A caller may give a CRS, a resolution or a whole :class:`GeoBox` instead.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from odc.geo import geom
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox

from harmonize.errors import EmptySearchError, InvalidBBoxError, NoOverlapError
from harmonize.items import Scene

__all__ = [
    "DEFAULT_RESOLUTION",
    "footprint_union",
    "aoi_crs",
    "native_crs",
    "common_geobox",
    "scenes_overlapping",
    "geobox_to_dict",
    "geobox_from_dict",
]

log = logging.getLogger(__name__)

#: Resolution of the harmonized product (metres): the Sentinel-2 10 m grid.
DEFAULT_RESOLUTION = 10.0


def footprint_union(scenes: Iterable[Scene]) -> geom.Geometry:
    """Union of the scenes' footprints in EPSG:4326."""
    shapes = [s.footprint for s in scenes]
    if not shapes:
        raise EmptySearchError("No items to take a footprint from; search a wider area or time range.")
    return geom.unary_union(shapes)


def _check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    if len(bbox) != 4:
        raise InvalidBBoxError(f"bbox must be (west, south, east, north) in degrees, got {bbox!r}.")
    w, s, e, n = (float(v) for v in bbox)
    if not (w < e and s < n and -180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise InvalidBBoxError(
            f"bbox {bbox!r} is not (west, south, east, north) in degrees with west < east and south < north."
        )
    return w, s, e, n


def aoi_crs(aoi: geom.Geometry) -> CRS:
    """The UTM CRS of the zone holding the centre of ``aoi`` (any CRS)."""
    centre = aoi.to_crs("epsg:4326").centroid
    ((lon, lat),) = centre.points
    return CRS.utm(lon, lat)


def _is_utm(crs: Any) -> bool:
    if not crs:
        return False
    epsg = CRS(crs).epsg
    return epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760)


def native_crs(scenes: Sequence[Scene], aoi: geom.Geometry) -> CRS:
    """The CRS the scenes are in, so that loading them reprojects nothing it need not: the most
    common UTM CRS of the Sentinel-2 scenes, else of the Landsat scenes (ties go to the zone of
    the AOI centre, then to the lowest code), else the UTM zone of the AOI centre (also for
    scenes in another projection, like Landsat's polar stereographic: the product is on UTM)."""
    centre = aoi_crs(aoi)
    for sensor in ("sentinel-2", "landsat"):
        counts = Counter(str(s.crs).upper() for s in scenes if s.sensor == sensor and _is_utm(s.crs))
        if counts:
            top = max(counts.values())
            best = sorted(c for c, n in counts.items() if n == top)
            chosen = next((c for c in best if CRS(c) == centre), best[0])
            if CRS(chosen) != centre:
                log.info("grid CRS: %s, the native CRS of the %s scenes (the AOI centre is in %s)",
                         chosen, sensor, centre.epsg or centre)
            return CRS(chosen)
    return centre


def common_geobox(
    scenes: Sequence[Scene] | None = None,
    *,
    bbox: Sequence[float] | None = None,
    crs: Any = None,
    resolution: float = DEFAULT_RESOLUTION,
    geobox: GeoBox | None = None,
) -> GeoBox:
    """The GeoBox a cube is loaded onto.

    Parameters
    ----------
    scenes
        Parsed items (:func:`harmonize.items.parse_items`) whose footprint union sets the extent
        (and the UTM zone) when ``bbox`` is absent: the Sentinel-2 scenes' union when there are
        any, else all scenes'.
    bbox
        Area of interest ``(west, south, east, north)`` in degrees.
    crs
        Output CRS (anything odc-geo accepts); default: the scenes' native CRS
        (:func:`native_crs`: Sentinel-2's, else Landsat's), else the UTM zone of the AOI centre.
    resolution
        Pixel size in CRS units; pixel edges are anchored on multiples of it, which for 10 m
        in UTM is the Sentinel-2 MGRS grid.
    geobox
        A ready GeoBox; returned as is (the other parameters must then be left out).

    Returns
    -------
    GeoBox

    Raises
    ------
    InvalidBBoxError
        If ``bbox`` is malformed.
    NoOverlapError
        If ``bbox`` does not intersect the scenes' footprints.
    EmptySearchError
        If neither scenes nor a bbox nor a geobox are given.
    """
    if geobox is not None:
        return geobox
    if bbox is not None:
        aoi = geom.box(*_check_bbox(bbox), "epsg:4326")
        if scenes:
            union = footprint_union(scenes)
            if not union.intersects(aoi):
                raise NoOverlapError(
                    f"bbox {tuple(bbox)} does not intersect the footprints of the {len(scenes)} items "
                    f"(which cover {tuple(round(v, 4) for v in union.boundingbox)}); pass a bbox inside them."
                )
    elif scenes:
        # The harmonized grid is Sentinel-2's: where Sentinel-2 scenes are given, their footprint
        # sets the extent (a Landsat scene is far larger than an MGRS tile); otherwise all scenes'.
        s2 = [s for s in scenes if s.sensor == "sentinel-2"]
        aoi = footprint_union(s2 or scenes)
    else:
        raise EmptySearchError("No items and no bbox: nothing to build a grid from; pass items or a bbox.")
    out_crs = CRS(crs) if crs is not None else native_crs(scenes or (), aoi)
    extent = aoi.to_crs(out_crs)
    return GeoBox.from_bbox(extent.boundingbox, out_crs, resolution=resolution, anchor="edge")


def scenes_overlapping(scenes: Sequence[Scene], geobox: GeoBox) -> list[Scene]:
    """The scenes whose footprint intersects ``geobox``."""
    extent = geobox.extent.to_crs("epsg:4326")
    return [s for s in scenes if s.footprint.intersects(extent)]


def geobox_to_dict(geobox: GeoBox) -> dict[str, Any]:
    """A JSON-serialisable description of ``geobox`` (inverse: :func:`geobox_from_dict`)."""
    t = geobox.transform
    crs = geobox.crs
    return {
        "crs": f"EPSG:{crs.epsg}" if crs is not None and crs.epsg is not None else (crs.wkt if crs else None),
        "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "shape": [int(geobox.shape.y), int(geobox.shape.x)],
    }


def geobox_from_dict(d: dict[str, Any]) -> GeoBox:
    """Rebuild a GeoBox from :func:`geobox_to_dict`'s output."""
    from affine import Affine

    a, b, c, dd, e, f = d["transform"]
    return GeoBox(tuple(d["shape"]), Affine(a, b, c, dd, e, f), d["crs"])
