"""A world across a UTM zone boundary: two MGRS tiles in two zones, two overlapping WRS-2 paths.

Real Sentinel-2 tiles near a zone boundary overlap it, each in its own zone's CRS; a place there is
seen by both tiles of one pass. Neighbouring Landsat WRS-2 paths overlap (sidelap, about 30 % at
mid latitudes) and image the overlap on different days. With ``WorldConfig(two_zones=True)`` the
simulator writes exactly that (:func:`tiles`):

- tile 0 (west): Sentinel-2 tile in ``epsg`` from the AOI's west edge to :data:`OVERLAP` of the
  AOI's width past the boundary; Landsat path ``wrs_path`` in ``epsg``, covering the western
  :data:`SWATH` of the AOI (its swath edge, tilted as real ones are, cuts the rest as nodata);
- tile 1 (east): Sentinel-2 tile in the next zone's CRS from :data:`OVERLAP` west of the boundary
  to the AOI's east edge (its raster is a box of the other zone, rotated by the grid convergence;
  its item's footprint is that part of the AOI, and its pixels beyond hold nodata, so the tiles'
  footprints together are the AOI); Landsat path ``wrs_path - 1`` in that CRS, covering the eastern
  :data:`SWATH`, imaged 7 days after the western path.

The ground and the truth stay on the world's own grid (``epsg``); a tile in the other zone sees
them through :func:`harmonize.world.sensors.foreign_view`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyproj import Transformer

from harmonize.world.grids import (
    DOMAIN_MARGIN_PX,
    Geometry,
    Grid,
    aoi_grid,
    domain_grid,
    grid_over,
    landsat_grid,
    origin_for_zone_boundary,
    sentinel2_grid,
    zone_boundary_fraction,
    zone_boundary_x,
)

if TYPE_CHECKING:
    from harmonize.world.config import WorldConfig

__all__ = [
    "Tile",
    "tiles",
    "OVERLAP",
    "SWATH",
    "TWO_ZONE_MARGIN_PX",
    "east_epsg",
    "boundary_fraction",
    "origin_for_boundary",
    "mgrs_name",
]

#: Each Sentinel-2 tile reaches this share of the AOI's width past the zone boundary.
OVERLAP = 0.1
#: Each Landsat path covers this share of the AOI's width (the middle 2 * SWATH - 1 is sidelap).
SWATH = 0.7
#: Tilt of the Landsat swath edges from north-south (radians; a descending pass at mid latitudes).
SWATH_TILT = 0.17
#: Margin of the simulated ground around the AOI in a two-zone world: a tile in the other zone is
#: rotated by the grid convergence (about 4 degrees), so its box reaches further past the AOI.
TWO_ZONE_MARGIN_PX = 60
_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMNS = {1: "ABCDEFGH", 2: "JKLMNPQR", 0: "STUVWXYZ"}
_ROWS = "ABCDEFGHJKLMNPQRSTUV"


@dataclass(frozen=True)
class Tile:
    """One footprint of the world: a Sentinel-2 tile and the Landsat path imaging the same side.

    Attributes
    ----------
    index
        0 (the world's own zone; the only tile of a one-zone world) or 1 (the next zone east).
    mgrs_tile
        The Sentinel-2 tile's MGRS name (in item ids and ``s2:mgrs_tile``).
    wrs_path
        The Landsat WRS-2 path of that side.
    geometry
        The grids of both sensors on that side, in the tile's CRS (``domain`` and ``aoi`` are the
        world's own), and the Landsat path's swath edge (``swath``).
    """

    index: int
    mgrs_tile: str
    wrs_path: int
    geometry: Geometry

    @property
    def epsg(self) -> int:
        """EPSG code of the tile's rasters."""
        return int(self.geometry.s2_10.epsg)  # type: ignore[arg-type]


def east_epsg(epsg: int) -> int:
    """The WGS 84 / UTM code of the zone east of ``epsg``'s (same hemisphere)."""
    return epsg + 1


def _aoi(cfg: WorldConfig) -> Grid:
    return aoi_grid(cfg.origin, cfg.size_px, cfg.epsg)


def boundary_fraction(cfg: WorldConfig) -> float:
    """Where the zone boundary crosses the AOI, as a share of its width from the west edge."""
    return zone_boundary_fraction(cfg.origin, cfg.size_px, cfg.epsg)


def origin_for_boundary(cfg: WorldConfig, fraction: float) -> float:
    """An origin easting (on the 20 m lattice) that puts the boundary at ``fraction`` of the width."""
    return origin_for_zone_boundary(cfg.origin, cfg.size_px, cfg.epsg, fraction)


def _boundary_x(cfg: WorldConfig) -> float:
    return zone_boundary_x(cfg.origin, cfg.size_px, cfg.epsg)


def mgrs_name(epsg: int, x: float, y: float) -> str:
    """The MGRS 100 km square (``"15STC"``) holding the point ``(x, y)`` of UTM CRS ``epsg``."""
    zone = epsg % 100
    _, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    band = _LAT_BANDS[min(max(int((lat + 80) // 8), 0), len(_LAT_BANDS) - 1)]
    column = _COLUMNS[zone % 3][min(max(int(x // 100_000) - 1, 0), 7)]
    row_index = int(y // 100_000) % 20
    row = _ROWS[(row_index + 5) % 20 if zone % 2 == 0 else row_index]
    return f"{zone:02d}{band}{column}{row}"


def _box_in(epsg_from: int, epsg_to: int, bounds: tuple[float, float, float, float]) -> tuple[float, ...]:
    """The bounding box in ``epsg_to`` of the box ``bounds`` of ``epsg_from`` (edges densified)."""
    left, bottom, right, top = bounds
    n = 9
    xs = [left + (right - left) * i / (n - 1) for i in range(n)]
    ys = [bottom + (top - bottom) * i / (n - 1) for i in range(n)]
    ring_x = xs + [right] * n + xs + [left] * n
    ring_y = [bottom] * n + ys + [top] * n + ys
    px, py = Transformer.from_crs(epsg_from, epsg_to, always_xy=True).transform(ring_x, ring_y)
    return (min(px), min(py), max(px), max(py))


def _swath(aoi: Grid, east: bool) -> tuple[float, float, float, float]:
    """A swath edge as :func:`harmonize.world.scenes` cuts nodata: ``(cx, cy, phi, d)``; pixels
    with ``(x - cx) cos phi + (y - cy) sin phi > d`` (world coordinates) lie beyond it."""
    left, bottom, right, top = aoi.bounds
    phi = SWATH_TILT + (math.pi if east else 0.0)
    return ((left + right) / 2, (bottom + top) / 2, phi, (SWATH - 0.5) * (right - left))


def tiles(cfg: WorldConfig) -> list[Tile]:
    """The footprints of the world ``cfg`` describes: one, or two across a zone boundary."""
    aoi = _aoi(cfg)
    if not cfg.two_zones:
        geo = Geometry(
            domain=domain_grid(aoi, DOMAIN_MARGIN_PX),
            aoi=aoi,
            s2_10=sentinel2_grid(aoi, 10.0),
            s2_20=sentinel2_grid(aoi, 20.0),
            l30=landsat_grid(aoi, 30.0),
            l15=landsat_grid(aoi, 15.0),
        )
        return [Tile(0, cfg.mgrs_tile, cfg.wrs_path, geo)]
    domain = domain_grid(aoi, TWO_ZONE_MARGIN_PX)
    left, bottom, right, top = aoi.bounds
    width = right - left
    xb = _boundary_x(cfg)
    # West: the world's own zone, from the AOI's west edge to OVERLAP past the boundary.
    east_edge = min(right, 20.0 * math.ceil((xb + OVERLAP * width) / 20.0))
    west10 = grid_over((left, bottom, east_edge, top), 10.0, cfg.epsg)
    west = Geometry(
        domain=domain,
        aoi=aoi,
        s2_10=west10,
        s2_20=sentinel2_grid(west10, 20.0),
        l30=landsat_grid(aoi, 30.0),
        l15=landsat_grid(aoi, 15.0),
        swath=_swath(aoi, east=False),
    )
    # East: the next zone, from OVERLAP west of the boundary to the AOI's east edge.
    e = east_epsg(cfg.epsg)
    east10 = grid_over(_box_in(cfg.epsg, e, (xb - OVERLAP * width, bottom, right, top)), 10.0, e)
    east_aoi = grid_over(_box_in(cfg.epsg, e, aoi.bounds), 10.0, e)
    east = Geometry(
        domain=domain,
        aoi=aoi,
        s2_10=east10,
        s2_20=sentinel2_grid(east10, 20.0),
        l30=landsat_grid(east_aoi, 30.0),
        l15=landsat_grid(east_aoi, 15.0),
        swath=_swath(aoi, east=True),
        valid=(xb - OVERLAP * width, bottom, right, top),
    )
    wx, wy = (west10.bounds[0] + west10.bounds[2]) / 2, (west10.bounds[1] + west10.bounds[3]) / 2
    ex, ey = (east10.bounds[0] + east10.bounds[2]) / 2, (east10.bounds[1] + east10.bounds[3]) / 2
    return [
        Tile(0, mgrs_name(cfg.epsg, wx, wy), cfg.wrs_path, west),
        Tile(1, mgrs_name(e, ex, ey), cfg.wrs_path - 1, east),
    ]
