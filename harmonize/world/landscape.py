"""The truth surface: a landscape of fields, woods, meadows, water, roads and buildings, and its
Sentinel-2A reflectance on any day.

Every pixel belongs to one *unit* (a field, a wood, the lake, the road network, one building).
Units carry a green-cover curve (a double logistic in day of year, drawn per field from its crop's
sowing and harvest windows) and two spectra; a pixel's reflectance is the mix
``fc * vegetation + (1 - fc) * background`` of its unit, times a static texture. Phenology is
computed per unit, never per pixel.

:class:`LandDetail` adds what real farmland has and flat polygons lack (all of it off in the demo
world): patchy vigour, sowing rows and wet patches inside fields (per-pixel multipliers of the
unit's green cover and soil), hedgerows and tree lines on field edges, and wandering boundaries.
Its draws come from their own random stream, so the rest of the landscape stays as it was.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

if TYPE_CHECKING:
    from harmonize.world.config import WorldConfig

__all__ = ["LANDCOVER", "CROPS", "Landscape", "LandDetail", "make_landscape", "landscape_of", "green_cover"]

#: Land-cover codes of the ``landcover`` truth map.
LANDCOVER: dict[int, str] = {
    1: "cropland",
    2: "forest",
    3: "grassland",
    4: "water",
    5: "bare_soil",
    6: "road",
    7: "building",
}
_CROP, _FOREST, _GRASS, _WATER, _BARE, _ROAD, _BUILDING = range(1, 8)

#: Crop codes of fields (``field_crop`` in the truth).
CROPS: dict[int, str] = {0: "none", 1: "maize", 2: "soybean", 3: "winter_wheat", 4: "fallow"}

# Sentinel-2A surface reflectance endmembers, bands blue green red nir(B8A) swir16 swir22.
_S = dict(
    veg_crop=[0.030, 0.080, 0.035, 0.480, 0.240, 0.110],
    veg_forest=[0.020, 0.045, 0.022, 0.360, 0.170, 0.075],
    veg_grass=[0.035, 0.075, 0.045, 0.380, 0.250, 0.130],
    soil=[0.075, 0.105, 0.140, 0.210, 0.300, 0.250],
    litter=[0.055, 0.075, 0.095, 0.190, 0.260, 0.200],
    water=[0.060, 0.070, 0.045, 0.020, 0.010, 0.006],
    road=[0.085, 0.095, 0.105, 0.125, 0.150, 0.140],
    roof_bright=[0.200, 0.220, 0.240, 0.280, 0.330, 0.300],
    roof_red=[0.070, 0.090, 0.180, 0.280, 0.300, 0.250],
    roof_dark=[0.050, 0.055, 0.060, 0.070, 0.080, 0.075],
)
SPECTRA = {k: np.asarray(v, np.float32) for k, v in _S.items()}

# Phenology parameters: (b0, fmax, sos, k1, eos, k2, bend, autumn_start); ranges are (lo, hi).
_PHENO = {
    1: dict(
        b0=0.02, fmax=(0.85, 0.97), sos=(140, 160), k1=(0.07, 0.10), eos=(250, 270), k2=(0.2, 0.4), bend=0.05
    ),
    2: dict(
        b0=0.02, fmax=(0.80, 0.93), sos=(165, 185), k1=(0.08, 0.12), eos=(255, 275), k2=(0.2, 0.4), bend=0.04
    ),
    3: dict(
        b0=0.25,
        fmax=(0.80, 0.92),
        sos=(85, 105),
        k1=(0.06, 0.09),
        eos=(170, 190),
        k2=(0.25, 0.4),
        bend=0.05,
        autumn=(285, 300),
    ),
    4: dict(
        b0=0.03,
        fmax=(0.20, 0.30),
        sos=(125, 140),
        k1=(0.05, 0.08),
        eos=(225, 245),
        k2=(0.04, 0.06),
        bend=0.05,
    ),
    "forest": dict(
        b0=0.35,
        fmax=(0.85, 0.93),
        sos=(110, 125),
        k1=(0.08, 0.12),
        eos=(285, 300),
        k2=(0.06, 0.09),
        bend=0.35,
    ),
    "grass": dict(
        b0=0.30, fmax=(0.60, 0.75), sos=(95, 110), k1=(0.06, 0.08), eos=(270, 290), k2=(0.04, 0.06), bend=0.30
    ),
}
# Phenology of a unit without vegetation (water, roads, roofs) before any draw; 0 where unnamed.
_NO_PHENO = {"k1": 0.1, "k2": 0.1, "sos": 100.0, "eos": 300.0, "autumn": 400.0}
# Sowing precedes the green-up midpoint by about this many days.
_SOW_LEAD = 25.0
#: What waterlogged soil keeps of its dry reflectance, per band (water absorbs most in the SWIR).
WET_SOIL = np.array([0.72, 0.72, 0.70, 0.68, 0.50, 0.45], np.float32)


@dataclass(frozen=True)
class LandDetail:
    """Realism beyond flat polygons (see :class:`harmonize.world.WorldConfig` for each knob).

    Attributes
    ----------
    texture
        Strength of within-field texture (patchy vigour, rows, wet patches); 0: none.
    hedgerows
        Share of field boundaries that carry a 20 m hedgerow or tree line.
    irregularity
        Boundary wander (1: about 30 m standard deviation).
    seed
        Seed of the detail's own random stream.
    """

    texture: float = 0.0
    hedgerows: float = 0.0
    irregularity: float = 0.0
    seed: int = 0

    def rng(self, purpose: int) -> np.random.Generator:
        """A fresh generator for one ``purpose``, separate from the landscape's own stream."""
        return np.random.default_rng([self.seed, 5, purpose])


@dataclass
class Landscape:
    """A simulated landscape on a 10 m grid.

    Attributes
    ----------
    unit
        ``(ny, nx)`` int32 unit index of each pixel.
    landcover
        ``(ny, nx)`` uint8 land-cover code (:data:`LANDCOVER`).
    field_id
        ``(ny, nx)`` int32 field number (1..n; 0 outside fields).
    texture
        ``(ny, nx)`` float32 static multiplicative texture (management zones, soil patches).
    pheno
        Per-unit phenology parameters, each an array over units.
    veg, background
        ``(n_units, 6)`` float32 spectra.
    field_unit, field_crop, field_sow_doy, field_harvest_doy
        Per-field tables (index ``field_id - 1``).
    vigor
        ``(ny, nx)`` float32 per-pixel multiplier of the unit's green cover, or ``None`` (flat).
    wet
        ``(ny, nx)`` float32 soil wetness 0..1 (darkens the background as :data:`WET_SOIL`), or
        ``None``.
    """

    unit: np.ndarray
    landcover: np.ndarray
    field_id: np.ndarray
    texture: np.ndarray
    pheno: dict[str, np.ndarray]
    veg: np.ndarray
    background: np.ndarray
    field_unit: np.ndarray
    field_crop: np.ndarray
    field_sow_doy: np.ndarray
    field_harvest_doy: np.ndarray
    vigor: np.ndarray | None = None
    wet: np.ndarray | None = None

    def green_cover(self, dates: list[dt.date]) -> np.ndarray:
        """Fraction of green cover, ``(n_units, n_dates)`` float32."""
        return green_cover(self.pheno, dates)

    def reflectance(self, date: dt.date) -> np.ndarray:
        """Sentinel-2A surface reflectance on ``date``, ``(6, ny, nx)`` float32."""
        if self.vigor is None:
            fc = self.green_cover([date])[:, 0:1]
            table = fc * self.veg + (1.0 - fc) * self.background  # (n_units, 6)
            out = np.take(table.T.astype(np.float32), self.unit, axis=1)
        else:  # per-pixel cover and soil: mix pixel by pixel
            soil, contrast = self._pixel_spectra
            out = self.green_cover_map(date) * contrast
            out += soil
        out *= self.texture
        return out

    @cached_property
    def _pixel_spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel background (wet soil darkened) and vegetation minus it, ``(6, ny, nx)`` each."""
        soil = np.take(self.background.T, self.unit, axis=1)
        if self.wet is not None:
            soil *= 1.0 - self.wet * (1.0 - WET_SOIL)[:, None, None]
        return soil, np.take(self.veg.T, self.unit, axis=1) - soil

    def green_cover_map(self, date: dt.date) -> np.ndarray:
        """Green cover per pixel on ``date``, ``(ny, nx)`` float32."""
        fc = self.green_cover([date])[:, 0][self.unit]
        if self.vigor is not None:
            fc = np.minimum(fc * self.vigor, 1.0)
        return fc


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def green_cover(pheno: dict[str, np.ndarray], dates: list[dt.date]) -> np.ndarray:
    """Double-logistic green cover of each unit on each date (the same curve every year)."""
    doy = np.array([d.timetuple().tm_yday for d in dates], np.float64)[None, :]
    p = {k: v[:, None] for k, v in pheno.items()}
    fc = (
        p["b0"]
        + (p["fmax"] - p["b0"]) * _sig(p["k1"] * (doy - p["sos"]))
        - (p["fmax"] - p["bend"]) * _sig(p["k2"] * (doy - p["eos"]))
        + (p["b0"] - p["bend"]) * p["autumn_on"] * _sig(0.1 * (doy - p["autumn"]))
    )
    return np.clip(fc, 0.0, 1.0).astype(np.float32)


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-12)


@dataclass
class _Cells:
    """The Voronoi cells a landscape starts from: the pixel grid, each pixel's cell, each cell's class."""

    yy: np.ndarray  # (ny, nx) float32 pixel-centre row coordinate
    xx: np.ndarray  # (ny, nx) float32 pixel-centre column coordinate
    cell: np.ndarray  # (ny, nx) int32 cell index
    cell_class: np.ndarray  # (n_cells,) land-cover code of each cell
    crops: np.ndarray  # (n_cells,) crop code of each cell (0 outside cropland)

    @property
    def n(self) -> int:
        """Number of cells."""
        return len(self.cell_class)


def _draw_cells(
    shape: tuple[int, int], rng: np.random.Generator, mean_field_ha: float, detail: LandDetail
) -> _Cells:
    """Voronoi cells of about ``mean_field_ha``, elongated along x, with a class and crop each.

    With ``detail.irregularity`` the pixels are displaced by smooth noise before they look for
    their nearest seed, so boundaries wander and bend instead of running straight.
    """
    ny, nx = shape
    area_ha = ny * nx / 100.0
    n_cells = max(8, int(round(area_ha / mean_field_ha)))
    seeds = rng.uniform([-5, -5], [ny + 5, nx + 5], size=(n_cells, 2))
    # Stretch one axis per region a little so cells are elongated like real fields.
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32) + 0.5
    stretch = 1.6
    qy, qx = yy, xx
    if detail.irregularity > 0:
        drng = detail.rng(1)
        amp = 3.0 * detail.irregularity  # pixels of 10 m
        qy = yy + amp * (0.8 * _smooth_noise(shape, 12.0, drng) + 0.6 * _smooth_noise(shape, 3.0, drng))
        qx = xx + amp * (0.8 * _smooth_noise(shape, 12.0, drng) + 0.6 * _smooth_noise(shape, 3.0, drng))
    pts = np.column_stack([qy.ravel() * stretch, qx.ravel()])
    _, cell = cKDTree(seeds * [stretch, 1.0]).query(pts, workers=1)
    cell = cell.reshape(shape).astype(np.int32)

    cell_class = rng.choice([_CROP, _FOREST, _GRASS, _BARE], size=n_cells, p=[0.64, 0.13, 0.18, 0.05])
    crops = rng.choice([1, 2, 3, 4], size=n_cells, p=[0.36, 0.30, 0.24, 0.10])
    crops = np.where(cell_class == _CROP, crops, 0)
    return _Cells(yy=yy, xx=xx, cell=cell, cell_class=cell_class, crops=crops)


def _field_margins(cells: _Cells) -> np.ndarray:
    """One-pixel margins where a crop cell meets another cell, ``(ny, nx)`` bool."""
    cell = cells.cell
    is_crop = cells.cell_class[cell] == _CROP
    edge = np.zeros(cell.shape, bool)
    edge[:, :-1] |= cell[:, :-1] != cell[:, 1:]
    edge[:-1, :] |= cell[:-1, :] != cell[1:, :]
    return edge & is_crop


def _lake(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A lake: the top 2.5 % of a smooth noise field, ``(ny, nx)`` bool."""
    ny, nx = shape
    lake_field = _smooth_noise(shape, max(ny, nx) / 12.0, rng)
    return lake_field > np.quantile(lake_field, 0.975)


def _roads(cells: _Cells, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Straight roads 10-16 m wide: their ``(ny, nx)`` bool mask and each road's ``(cy, cx, theta)``."""
    yy, xx = cells.yy, cells.xx
    ny, nx = yy.shape
    n_roads = max(2, int(round(max(ny, nx) * 10 / 2500)) + 1)
    road = np.zeros((ny, nx), bool)
    road_pts = []
    for _ in range(n_roads):
        theta = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0.2, 0.8) * ny, rng.uniform(0.2, 0.8) * nx
        dist = (yy - cy) * np.cos(theta) - (xx - cx) * np.sin(theta)
        road |= np.abs(dist) < rng.uniform(0.5, 0.8)  # 10-16 m wide
        road_pts.append((cy, cx, theta))
    return road, road_pts


def _draw_buildings(
    unit: np.ndarray,
    landcover: np.ndarray,
    road_pts: list[tuple[float, float, float]],
    first_unit: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Villages of small buildings along the roads, drawn into ``unit`` and ``landcover`` in place.

    Building ``i`` becomes unit ``first_unit + i``; never placed over water or road. Returns the
    roof spectrum of each building.
    """
    ny, nx = unit.shape
    roofs = [SPECTRA["roof_bright"], SPECTRA["roof_red"], SPECTRA["roof_dark"]]
    building_spectra: list[np.ndarray] = []
    n_villages = max(1, int(round(ny * nx / 100.0 / 1000)))
    for v in range(n_villages):
        cy, cx, theta = road_pts[v % len(road_pts)]
        t = rng.uniform(-0.3, 0.3) * max(ny, nx)
        vy, vx = cy + t * np.sin(theta), cx + t * np.cos(theta)
        for _ in range(int(rng.integers(20, 50))):
            by = int(vy + rng.normal(0, 12))
            bx = int(vx + rng.normal(0, 12))
            h, w = (int(k) for k in rng.integers(2, 5, size=2))
            if by < 0 or bx < 0 or by + h > ny or bx + w > nx:
                continue
            sl = (slice(by, by + h), slice(bx, bx + w))
            if (landcover[sl] == _WATER).any() or (landcover[sl] == _ROAD).any():
                continue
            unit[sl] = first_unit + len(building_spectra)
            landcover[sl] = _BUILDING
            building_spectra.append(
                roofs[int(rng.integers(len(roofs)))] * np.float32(rng.uniform(0.85, 1.15))
            )
    return building_spectra


def _draw_pheno(pheno: dict[str, np.ndarray], u: int, key: object, rng: np.random.Generator) -> None:
    """Draw unit ``u``'s phenology parameters from :data:`_PHENO` ``[key]`` into ``pheno``."""
    for name, val in _PHENO[key].items():
        if name == "autumn":
            pheno["autumn"][u] = rng.uniform(*val)
            pheno["autumn_on"][u] = 1.0
        else:
            pheno[name][u] = rng.uniform(*val) if isinstance(val, tuple) else val


def _unit_properties(
    cells: _Cells, building_spectra: list[np.ndarray], rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Phenology parameters and vegetation/background spectra of every unit.

    Units are the cells, then the margin, the water, the road network and one per building.
    Returns ``(pheno, veg, background)``.
    """
    n_cells = cells.n
    u_margin, u_water, u_road = n_cells, n_cells + 1, n_cells + 2
    n_units = u_road + 1 + len(building_spectra)
    zeros = np.zeros(n_units)
    pheno = {k: zeros.copy() for k in ("b0", "fmax", "sos", "k1", "eos", "k2", "bend", "autumn", "autumn_on")}
    for name, value in _NO_PHENO.items():
        pheno[name][:] = value
    veg = np.zeros((n_units, 6), np.float32)
    background = np.zeros((n_units, 6), np.float32)

    def draw(u: int, key: object) -> None:
        _draw_pheno(pheno, u, key, rng)

    for u in range(n_cells):
        c = cells.cell_class[u]
        if c == _CROP:
            draw(u, int(cells.crops[u]))
            veg[u] = SPECTRA["veg_crop"]
            background[u] = SPECTRA["soil"] * np.float32(rng.uniform(0.75, 1.25))
        elif c == _FOREST:
            draw(u, "forest")
            veg[u] = SPECTRA["veg_forest"]
            background[u] = SPECTRA["litter"]
        elif c == _GRASS:
            draw(u, "grass")
            veg[u] = SPECTRA["veg_grass"]
            background[u] = SPECTRA["litter"] * np.float32(rng.uniform(0.9, 1.1))
        else:  # bare
            background[u] = SPECTRA["soil"] * np.float32(rng.uniform(0.9, 1.4))
    draw(u_margin, "grass")
    veg[u_margin] = SPECTRA["veg_grass"]
    background[u_margin] = SPECTRA["litter"]
    background[u_water] = SPECTRA["water"]
    background[u_road] = SPECTRA["road"]
    for i, s in enumerate(building_spectra):
        background[u_road + 1 + i] = s
    return pheno, veg, background


def _texture(landcover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Static texture: quantised smooth noise (management zones), none on water, roads, roofs."""
    zones = np.clip(np.round(_smooth_noise(landcover.shape, 3.0, rng) * 1.2), -2, 2)
    texture = (1.0 + 0.03 * zones).astype(np.float32)
    texture[np.isin(landcover, (_WATER, _ROAD, _BUILDING))] = 1.0
    return texture


def _hedgerows(cells: _Cells, detail: LandDetail) -> np.ndarray:
    """Lines two pixels wide (one each side) on a share of the boundaries of crop cells, bool.

    A boundary between cells ``a`` and ``b`` is chosen by a symmetric hash of two uniform draws
    per cell, so both sides of it agree without a table over cell pairs.
    """
    cell = cells.cell
    crop = cells.cell_class == _CROP
    u = detail.rng(2).random(cells.n)
    out = np.zeros(cell.shape, bool)
    pairs = [(np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])]
    for sa, sb in pairs:
        a, b = cell[sa], cell[sb]
        chosen = ((u[a] + u[b]) * 997.0) % 1.0 < detail.hedgerows
        hedge = (a != b) & (crop[a] | crop[b]) & chosen
        out[sa] |= hedge
        out[sb] |= hedge
    return out


def _with_hedge_unit(
    unit: np.ndarray,
    pheno: dict[str, np.ndarray],
    veg: np.ndarray,
    background: np.ndarray,
    detail: LandDetail,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Make the pixels marked ``-1`` in ``unit`` one more unit, a tree line; its properties added."""
    u = len(veg)
    unit[unit == -1] = u
    pheno = {k: np.append(v, _NO_PHENO.get(k, 0.0)) for k, v in pheno.items()}
    _draw_pheno(pheno, u, "forest", detail.rng(4))
    veg = np.vstack([veg, SPECTRA["veg_forest"][None]])
    background = np.vstack([background, SPECTRA["litter"][None]])
    return pheno, veg, background


def _detail_maps(
    cells: _Cells, landcover: np.ndarray, detail: LandDetail
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel vigour (multiplier of green cover) and soil wetness 0..1, ``(ny, nx)`` float32.

    Vigour: patches of 50 m and 15 m (soil, nutrients) on all vegetation, sowing rows (tramlines
    30-60 m apart, one direction per field) on cropland, weaker growth on wet patches. Wet
    patches: the lowest 7 % of a smooth terrain, on cropland, meadows and bare soil.
    """
    rng = detail.rng(3)
    shape, t = landcover.shape, detail.texture
    patchy = 0.10 * _smooth_noise(shape, 5.0, rng) + 0.06 * _smooth_noise(shape, 1.5, rng)
    theta = rng.uniform(0, np.pi, cells.n)
    period = rng.uniform(3.0, 6.0, cells.n)
    phase = rng.uniform(0, 2 * np.pi, cells.n)
    c = cells.cell
    across = cells.yy * np.cos(theta[c]) + cells.xx * np.sin(theta[c])
    rows = 0.5 + 0.5 * np.cos(2 * np.pi * across / period[c] + phase[c])
    vigor = 1.0 + t * patchy - t * 0.15 * rows * (landcover == _CROP)
    terrain = _smooth_noise(shape, 4.0, rng)
    wet = np.clip((terrain - np.quantile(terrain, 0.93)) / 0.4, 0.0, 1.0) * min(t, 1.0)
    wet[~np.isin(landcover, (_CROP, _GRASS, _BARE))] = 0.0
    vigor *= 1.0 - 0.45 * wet
    vigor[~np.isin(landcover, (_CROP, _FOREST, _GRASS))] = 1.0
    return vigor.astype(np.float32), wet.astype(np.float32)


def make_landscape(
    shape: tuple[int, int],
    rng: np.random.Generator,
    mean_field_ha: float = 6.0,
    detail: LandDetail | None = None,
) -> Landscape:
    """Draw a landscape on a 10 m grid of ``shape``.

    Voronoi cells become fields (maize, soybean, winter wheat, fallow), woods, meadows or bare
    plots; one-pixel grass margins separate neighbouring fields; a lake, straight roads and
    villages of small buildings are drawn over them. ``detail`` adds hedgerows, wandering
    boundaries and within-field texture.

    Parameters
    ----------
    shape
        ``(ny, nx)`` pixels of 10 m.
    rng
        Source of every random draw; the same generator state gives the same landscape.
    mean_field_ha
        Mean cell (field) size in hectares.
    detail
        Realism beyond flat polygons (default none: the landscape of the demo world).

    Returns
    -------
    Landscape
        Unit and land-cover maps, per-unit phenology and spectra, the field tables.
    """
    detail = detail or LandDetail()
    cells = _draw_cells(shape, rng, mean_field_ha, detail)
    # Units: cells, then margin, water, road, buildings.
    u_margin, u_water, u_road = cells.n, cells.n + 1, cells.n + 2
    unit = cells.cell.copy()
    landcover = cells.cell_class[cells.cell].astype(np.uint8)

    margin = _field_margins(cells)
    unit[margin] = u_margin
    landcover[margin] = _GRASS
    if detail.hedgerows > 0:
        hedge = _hedgerows(cells, detail)
        unit[hedge] = -1  # numbered after the buildings, by _with_hedge_unit
        landcover[hedge] = _FOREST

    lake = _lake(shape, rng)
    unit[lake] = u_water
    landcover[lake] = _WATER

    road, road_pts = _roads(cells, rng)
    unit[road] = u_road
    landcover[road] = _ROAD

    building_spectra = _draw_buildings(unit, landcover, road_pts, u_road + 1, rng)
    pheno, veg, background = _unit_properties(cells, building_spectra, rng)
    if (unit == -1).any():
        pheno, veg, background = _with_hedge_unit(unit, pheno, veg, background, detail)
    texture = _texture(landcover, rng)
    land = _with_fields(cells, unit, landcover, texture, pheno, veg, background)
    if detail.texture > 0:
        land.vigor, land.wet = _detail_maps(cells, landcover, detail)
    return land


def landscape_of(cfg: WorldConfig, shape: tuple[int, int]) -> Landscape:
    """The landscape of the world ``cfg`` describes, on a 10 m grid of ``shape`` (its domain)."""
    detail = LandDetail(
        texture=cfg.field_texture,
        hedgerows=cfg.hedgerow_fraction,
        irregularity=cfg.field_irregularity,
        seed=cfg.seed,
    )
    return make_landscape(shape, np.random.default_rng([cfg.seed, 0]), cfg.mean_field_ha, detail)


def _with_fields(
    cells: _Cells,
    unit: np.ndarray,
    landcover: np.ndarray,
    texture: np.ndarray,
    pheno: dict[str, np.ndarray],
    veg: np.ndarray,
    background: np.ndarray,
) -> Landscape:
    """The :class:`Landscape`, with fields: crop cells numbered 1..n in cell order, and their tables."""
    field_cells = [u for u in range(cells.n) if cells.cell_class[u] == _CROP]
    field_of_unit = np.zeros(len(veg), np.int32)
    field_of_unit[field_cells] = np.arange(1, len(field_cells) + 1, dtype=np.int32)
    field_id = field_of_unit[unit]
    fc_units = np.asarray(field_cells, np.int32)
    crops = cells.crops
    return Landscape(
        unit=unit,
        landcover=landcover,
        field_id=field_id,
        texture=texture,
        pheno=pheno,
        veg=veg,
        background=background,
        field_unit=fc_units,
        field_crop=crops[fc_units].astype(np.int8) if len(fc_units) else np.zeros(0, np.int8),
        field_sow_doy=(pheno["sos"][fc_units] - _SOW_LEAD).astype(np.float32),
        field_harvest_doy=pheno["eos"][fc_units].astype(np.float32),
    )
