"""Pixel grids of the simulated world: the 10 m truth, Sentinel-2's and Landsat's own lattices.

Sentinel-2 MGRS grids sit on 10 m (and 20 m) multiples; Landsat WRS-2 grids on 15 m multiples that
are odd multiples of 15 m, i.e. 5 m off the 10 m lattice, as in real Collection 2 products.

A grid may carry its CRS (``epsg``): a world across a UTM zone boundary has tiles in the
neighbouring zone, whose pixel centres :func:`centres_in` maps onto the world's own CRS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from pyproj import Transformer

__all__ = [
    "Geometry",
    "Grid",
    "aoi_grid",
    "domain_grid",
    "sentinel2_grid",
    "landsat_grid",
    "grid_over",
    "centres_in",
    "DOMAIN_MARGIN_PX",
]

#: The simulated ground extends this many 10 m pixels beyond the AOI on every side, enough for
#: Landsat scenes that overhang the AOI, their misregistration and their point-spread function.
DOMAIN_MARGIN_PX = 20


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: upper-left corner ``(x0, y0)``, square pixels of ``res`` metres,
    in the CRS ``epsg`` (``None``: the world's own)."""

    x0: float
    y0: float
    res: float
    ny: int
    nx: int
    epsg: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return (self.ny, self.nx)

    @property
    def transform(self) -> Affine:
        """The GDAL geotransform as an :class:`affine.Affine`."""
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in metres."""
        return (self.x0, self.y0 - self.ny * self.res, self.x0 + self.nx * self.res, self.y0)

    def xs(self, dx: float = 0.0) -> np.ndarray:
        """Pixel-centre eastings, displaced by ``dx`` metres."""
        return self.x0 + dx + (np.arange(self.nx) + 0.5) * self.res

    def ys(self, dy: float = 0.0) -> np.ndarray:
        """Pixel-centre northings, displaced by ``dy`` metres."""
        return self.y0 + dy - (np.arange(self.ny) + 0.5) * self.res

    def stac_transform(self) -> list[float]:
        """``proj:transform`` as STAC writes it (the first six affine coefficients)."""
        return [self.res, 0.0, self.x0, 0.0, -self.res, self.y0]


def aoi_grid(origin: tuple[float, float], size_px: int, epsg: int | None = None) -> Grid:
    """The 10 m grid of the area of interest (also the Sentinel-2 10 m grid)."""
    return Grid(origin[0], origin[1], 10.0, size_px, size_px, epsg)


def domain_grid(aoi: Grid, margin_px: int = DOMAIN_MARGIN_PX) -> Grid:
    """The 10 m grid on which the ground is simulated: the AOI plus a margin."""
    m = margin_px * aoi.res
    return Grid(aoi.x0 - m, aoi.y0 + m, aoi.res, aoi.ny + 2 * margin_px, aoi.nx + 2 * margin_px, aoi.epsg)


def sentinel2_grid(aoi: Grid, res: float) -> Grid:
    """Sentinel-2 grid at ``res`` (10 or 20 m) covering the AOI, on the MGRS lattice."""
    k = int(round(res / aoi.res))
    return Grid(aoi.x0, aoi.y0, res, aoi.ny // k, aoi.nx // k, aoi.epsg)


def grid_over(
    bounds: tuple[float, float, float, float], res: float, epsg: int | None, lattice: float = 20.0
) -> Grid:
    """The ``res`` grid whose edges sit on ``lattice`` multiples and that covers ``bounds``
    (``left, bottom, right, top``) in CRS ``epsg``; ``lattice`` must be a multiple of ``res``."""
    left, bottom, right, top = bounds
    x0 = lattice * math.floor(left / lattice)
    y0 = lattice * math.ceil(top / lattice)
    x1 = lattice * math.ceil(right / lattice)
    y1 = lattice * math.floor(bottom / lattice)
    return Grid(x0, y0, res, int(round((y0 - y1) / res)), int(round((x1 - x0) / res)), epsg)


@lru_cache(maxsize=32)
def _centres(grid: Grid, epsg: int, shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(grid.xs(shift[0]), grid.ys(shift[1]))
    if grid.epsg is None or grid.epsg == epsg:
        return xs, ys
    x, y = Transformer.from_crs(grid.epsg, epsg, always_xy=True).transform(xs, ys)
    return np.asarray(x), np.asarray(y)


def centres_in(
    grid: Grid, epsg: int | None, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` of ``grid`` (each ``(ny, nx)``), displaced by ``shift``
    metres in the grid's own CRS, then expressed in CRS ``epsg`` (``None``: left as they are)."""
    if epsg is None:
        epsg = grid.epsg or 0
    return _centres(grid, epsg, (float(shift[0]), float(shift[1])))


def landsat_grid(aoi: Grid, res: float = 30.0) -> Grid:
    """Landsat grid at ``res`` (30 or 15 m) overhanging the AOI by 30-60 m on every side.

    The origin is an odd multiple of 15 m, so 30 m pixel edges never coincide with the 10 m
    lattice (5 m off) - as with real WRS-2 scenes.
    """
    left, bottom, right, top = aoi.bounds
    x0 = 30.0 * math.floor((left - 45.0) / 30.0) + 15.0
    y0 = 30.0 * math.ceil((top + 15.0) / 30.0) + 15.0
    nx30 = int(math.ceil((right + 45.0 - x0) / 30.0))
    ny30 = int(math.ceil((y0 - (bottom - 45.0)) / 30.0))
    k = int(round(30.0 / res))
    return Grid(x0, y0, res, ny30 * k, nx30 * k, aoi.epsg)


@dataclass(frozen=True)
class Geometry:
    """The grids of a world (of one of its tiles, :mod:`harmonize.world.zones`).

    ``domain`` and ``aoi`` are on the world's own CRS; the sensors' grids may be in another.
    ``swath``, when set, is the Landsat path's swath edge ``(cx, cy, phi, d)`` in the world's
    coordinates: pixels with ``(x - cx) cos phi + (y - cy) sin phi > d`` are nodata.
    ``valid``, when set, is the box ``(left, bottom, right, top)`` in the world's coordinates that
    the Sentinel-2 tile declares as its footprint: its pixels farther than
    :data:`harmonize.world.scenes.VALID_PAD_M` outside it are nodata (a tile in another zone is
    a rotated box).
    """

    domain: Grid
    aoi: Grid
    s2_10: Grid
    s2_20: Grid
    l30: Grid
    l15: Grid
    swath: tuple[float, float, float, float] | None = None
    valid: tuple[float, float, float, float] | None = None


def zone_boundary_x(origin: tuple[float, float], size_px: int, epsg: int) -> float:
    """Easting (in ``epsg``) of the boundary with the next zone east, at the AOI's central latitude."""
    left, bottom, right, top = aoi_grid(origin, size_px, epsg).bounds
    centre = ((left + right) / 2, (bottom + top) / 2)
    _, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(*centre)
    boundary_lon = -180.0 + 6.0 * (epsg % 100)
    x, _ = Transformer.from_crs(4326, epsg, always_xy=True).transform(boundary_lon, lat)
    return float(x)


def zone_boundary_fraction(origin: tuple[float, float], size_px: int, epsg: int) -> float:
    """Where the zone boundary crosses the AOI, as a share of its width from the west edge."""
    left, _, right, _ = aoi_grid(origin, size_px, epsg).bounds
    return (zone_boundary_x(origin, size_px, epsg) - left) / (right - left)


def origin_for_zone_boundary(origin: tuple[float, float], size_px: int, epsg: int, fraction: float) -> float:
    """An origin easting (on the 20 m lattice) that puts the boundary at ``fraction`` of the width."""
    return 20.0 * round((zone_boundary_x(origin, size_px, epsg) - fraction * size_px * 10.0) / 20.0)
