"""Simulate one scene: the sensor's view of the ground through its atmosphere, its masks.

Each scene draws from its own random streams, seeded by the world seed and the scene id, so a
scene's bytes do not depend on which other scenes exist or in which order they are made.

Raw mask bits (:data:`MASK_BITS`) record what the simulated cloud detector flagged before each
product's precedence rules; :func:`product_masks` applies those rules, giving exactly what
:func:`harmonize.qa.landsat_masks` / :func:`harmonize.qa.scl_masks` decode from the product.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from harmonize.qa import encode_landsat_qa, encode_scl
from harmonize.world.calendar import Scene
from harmonize.world.clouds import (
    THRESHOLDS,
    Atmosphere,
    apply_atmosphere,
    draw_atmosphere,
    wet_season_opacity,
)
from harmonize.world.config import WorldConfig
from harmonize.world.grids import Geometry, Grid, centres_in
from harmonize.world.sensors import PSF_SIGMA, SCALINGS, add_noise, pan_toa, project, quantise, spectral

__all__ = [
    "MASK_BITS",
    "Geometry",
    "SimulatedScene",
    "scene_rng",
    "simulate_sentinel2",
    "simulate_landsat",
    "product_masks",
]

#: Bits of the stored raw masks.
MASK_BITS = {
    "nodata": 1,
    "cloud_high": 2,
    "cloud_low": 4,
    "cirrus": 8,
    "shadow": 16,
    "water": 32,
    "vegetation": 64,
}


#: How far past its declared footprint a Sentinel-2 tile's pixels still hold data (metres), so
#: that resampling onto a grid inside the footprint never reaches a nodata pixel.
VALID_PAD_M = 30.0


def _outside(box: tuple[float, float, float, float] | None, grid: Grid, home: int | None) -> np.ndarray:
    """Pixels of ``grid`` whose centres lie more than :data:`VALID_PAD_M` outside ``box``."""
    if box is None:
        return np.zeros(grid.shape, bool)
    xs, ys = centres_in(grid, home)
    left, bottom, right, top = box
    p = VALID_PAD_M
    return (xs < left - p) | (xs > right + p) | (ys < bottom - p) | (ys > top + p)


@dataclass
class SimulatedScene:
    """Digital numbers, masks and draws of one scene.

    Attributes
    ----------
    bands
        Asset key -> 2-D array of stored values (uint16 DN, uint8 SCL, uint16 QA_PIXEL).
    l1_bands
        For Landsat, the ``landsat-c2l1`` item's assets (``pan``, ``qa_pixel``).
    raw_masks
        uint8 :data:`MASK_BITS` on the quality asset's grid.
    shift
        ``(dx, dy)`` metres to add to the geotransform origin to land on true ground (Landsat).
    cloud_fraction
        The drawn cloud fraction.
    cloud_cover
        ``eo:cloud_cover``: percent of valid QA pixels decoded as cloud or cirrus.
    stats
        Further percentages for item properties.
    nodata_edge
        Whether the scene was cut by a swath edge.
    """

    bands: dict[str, np.ndarray]
    raw_masks: np.ndarray
    shift: tuple[float, float]
    cloud_fraction: float
    cloud_cover: float
    stats: dict[str, float]
    nodata_edge: bool
    l1_bands: dict[str, np.ndarray] = field(default_factory=dict)


def scene_rng(seed: int, scene_id: str, stream: int) -> np.random.Generator:
    """An independent random stream for one purpose (``stream``) of one scene."""
    return np.random.default_rng([seed, stream, zlib.crc32(scene_id.encode())])


def _edge(cfg: WorldConfig, aoi: Grid, rng: np.random.Generator) -> tuple[float, float, float, float] | None:
    # A swath edge: a tilted line across one side of the AOI; pixels beyond it are nodata.
    cut = rng.random() < cfg.edge_nodata_probability
    side, tilt, frac = int(rng.integers(4)), float(rng.uniform(-0.2, 0.2)), float(rng.uniform(0.05, 0.3))
    if not cut:
        return None
    phi = side * np.pi / 2 + tilt
    left, bottom, right, top = aoi.bounds
    size = right - left
    return ((left + right) / 2, (bottom + top) / 2, phi, (0.5 - frac) * size)


def _edge_mask(
    edge: tuple[float, float, float, float] | None, grid: Grid, home: int | None = None
) -> np.ndarray:
    """Pixels of ``grid`` beyond the line ``edge`` (world coordinates, CRS ``home``)."""
    if edge is None:
        return np.zeros(grid.shape, bool)
    cx, cy, phi, d = edge
    if grid.epsg is None or home is None or grid.epsg == home:
        xs, ys = grid.xs()[None, :], grid.ys()[:, None]
    else:
        xs, ys = centres_in(grid, home)
    return (xs - cx) * np.cos(phi) + (ys - cy) * np.sin(phi) > d


def _sky_key(scene: Scene) -> str:
    """Whose draws a scene's sky (clouds, swath edge) takes: the tiles of one Sentinel-2 pass
    share the first tile's."""
    return scene.datatake or scene.id


def _atmosphere(cfg: WorldConfig, scene: Scene, domain: Grid, sun: tuple[float, float]) -> Atmosphere:
    deck = None
    if cfg.in_wet_season(scene.datetime.date()):
        deck = wet_season_opacity(
            domain.shape, scene.datetime, seed=cfg.seed, res=domain.res, cover=cfg.wet_season_cover
        )
    return draw_atmosphere(
        domain.shape,
        scene_rng(cfg.seed, _sky_key(scene), 1),
        res=domain.res,
        clear_probability=cfg.clear_probability,
        max_cloud_fraction=cfg.max_cloud_fraction,
        cirrus_probability=cfg.cirrus_probability,
        sun_azimuth=sun[0],
        sun_elevation=sun[1],
        cloud_height_m=cfg.cloud_height_m,
        deck=deck,
    )


def _pct(mask: np.ndarray, valid: np.ndarray) -> float:
    n = int(valid.sum())
    return round(100.0 * float((mask & valid).sum()) / n, 4) if n else 0.0


def _pack(**masks: np.ndarray) -> np.ndarray:
    out = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for name, m in masks.items():
        out[m] |= np.uint8(MASK_BITS[name])
    return out


def product_masks(raw: np.ndarray, sensor: str) -> dict[str, np.ndarray]:
    """Masks as the product's QA encodes them (QA_PIXEL for Landsat, SCL for Sentinel-2).

    Returns the names of :data:`harmonize.qa.MASK_NAMES`: nodata, cloud, shadow, cirrus, snow,
    water, clear.
    """
    bit = {k: (raw & v) != 0 for k, v in MASK_BITS.items()}
    nd = bit["nodata"]
    valid = ~nd
    if sensor == "landsat":
        cloud = (bit["cloud_high"] | bit["cloud_low"]) & valid
        shadow = bit["shadow"] & ~bit["cloud_high"] & valid
        cirrus = bit["cirrus"] & valid
        water = bit["water"] & ~cloud & valid
    else:  # Sentinel-2 SCL: one class per pixel, Sen2Cor precedence
        cloud = (bit["cloud_high"] | bit["cloud_low"]) & valid
        cirrus = bit["cirrus"] & ~cloud & valid
        shadow = bit["shadow"] & ~cloud & ~cirrus & valid
        water = bit["water"] & ~cloud & ~cirrus & ~shadow & valid
    snow = np.zeros_like(nd)
    clear = valid & ~cloud & ~shadow & ~cirrus & ~snow
    return {
        "nodata": nd,
        "cloud": cloud,
        "shadow": shadow,
        "cirrus": cirrus,
        "snow": snow,
        "water": water,
        "clear": clear,
    }


def simulate_sentinel2(
    cfg: WorldConfig,
    geo: Geometry,
    scene: Scene,
    surface: np.ndarray,
    water: np.ndarray,
    sun: tuple[float, float],
) -> SimulatedScene:
    """Simulate a Sentinel-2 L2A scene from Sentinel-2A ``surface`` ``(6, ny, nx)`` on the domain."""
    atm = _atmosphere(cfg, scene, geo.domain, sun)
    edge = _edge(cfg, geo.aoi, scene_rng(cfg.seed, _sky_key(scene), 3))
    noise_rng = scene_rng(cfg.seed, scene.id, 2)
    seen = apply_atmosphere(spectral(surface, scene.platform), atm)  # type: ignore[arg-type]
    s10, s20 = PSF_SIGMA[("sentinel-2", 10)], PSF_SIGMA[("sentinel-2", 20)]
    b10 = project(seen[:3], geo.domain, geo.s2_10, s10)
    # 20 m: nir, swir16, swir22, then red (for NDVI) and the atmosphere's fields.
    aux = np.stack([seen[3], seen[4], seen[5], seen[2], atm.opacity, atm.shadow, atm.cirrus, water])
    p20 = project(aux, geo.domain, geo.s2_20, s20)
    home = geo.aoi.epsg
    nd10 = _edge_mask(edge, geo.s2_10, home) | _outside(geo.valid, geo.s2_10, home)
    nd20 = _edge_mask(edge, geo.s2_20, home) | _outside(geo.valid, geo.s2_20, home)
    scaling = SCALINGS["sentinel-2"]
    dn10 = quantise(add_noise(b10, "sentinel-2", noise_rng, cfg.noise), scaling, nd10)
    dn20 = quantise(add_noise(p20[:3], "sentinel-2", noise_rng, cfg.noise), scaling, nd20)
    opacity, shadow_f, cirrus_f, water_f = p20[4], p20[5], p20[6], p20[7]
    red, nir = p20[3], p20[0]
    high = opacity >= THRESHOLDS["cloud_high"]
    low = (opacity >= THRESHOLDS["cloud_low"]) & ~high
    cirrus = cirrus_f >= THRESHOLDS["cirrus"]
    shadow = shadow_f >= THRESHOLDS["shadow"]
    wat = water_f >= THRESHOLDS["water"]
    veg = (nir - red) / np.maximum(nir + red, 1e-6) >= THRESHOLDS["vegetation"]
    zeros = np.zeros(nd20.shape, bool)
    scl = encode_scl(
        nodata=nd20,
        cloud_high=high,
        cloud_medium=low,
        cirrus=cirrus,
        shadow=shadow,
        snow=zeros,
        water=wat,
        vegetation=veg,
    )
    raw = _pack(
        nodata=nd20, cloud_high=high, cloud_low=low, cirrus=cirrus, shadow=shadow, water=wat, vegetation=veg
    )
    m = product_masks(raw, "sentinel-2")
    valid = ~nd20
    classes = {v: scl == v for v in (3, 4, 5, 6, 8, 9, 10)}
    stats = {
        "cloud_cover": _pct(m["cloud"] | m["cirrus"], valid),
        "nodata": round(100.0 * float(nd20.mean()), 4),
        "shadow": _pct(classes[3], valid),
        "vegetation": _pct(classes[4], valid),
        "not_vegetated": _pct(classes[5], valid),
        "water": _pct(classes[6], valid),
        "medium": _pct(classes[8], valid),
        "high": _pct(classes[9], valid),
        "cirrus": _pct(classes[10], valid),
    }
    bands = {
        "blue": dn10[0],
        "green": dn10[1],
        "red": dn10[2],
        "nir08": dn20[0],
        "swir16": dn20[1],
        "swir22": dn20[2],
        "scl": scl,
    }
    return SimulatedScene(
        bands=bands,
        raw_masks=raw,
        shift=(0.0, 0.0),
        cloud_fraction=atm.cloud_fraction,
        cloud_cover=stats["cloud_cover"],
        stats=stats,
        nodata_edge=edge is not None,
    )


def draw_shift(cfg: WorldConfig, scene: Scene) -> tuple[float, float]:
    """The scene's misregistration ``(dx, dy)`` in metres (rounded to millimetres)."""
    rng = scene_rng(cfg.seed, scene.id, 4)
    d = rng.uniform(-cfg.max_shift_px, cfg.max_shift_px, size=2) * 30.0
    return (round(float(d[0]), 3), round(float(d[1]), 3))


def simulate_landsat(
    cfg: WorldConfig,
    geo: Geometry,
    scene: Scene,
    surface: np.ndarray,
    water: np.ndarray,
    sun: tuple[float, float],
) -> SimulatedScene:
    """Simulate a Landsat L2 scene and its L1 pan companion from Sentinel-2A ``surface``."""
    atm = _atmosphere(cfg, scene, geo.domain, sun)
    edge = _edge(cfg, geo.aoi, scene_rng(cfg.seed, scene.id, 3))
    noise_rng = scene_rng(cfg.seed, scene.id, 2)
    shift = draw_shift(cfg, scene)
    seen = apply_atmosphere(spectral(surface, scene.platform), atm)  # type: ignore[arg-type]
    s30, s15 = PSF_SIGMA[("landsat", 30)], PSF_SIGMA[("landsat", 15)]
    aux = np.concatenate([seen, np.stack([atm.opacity, atm.shadow, atm.cirrus, water])])
    p30 = project(aux, geo.domain, geo.l30, s30, shift)
    pan = project(pan_toa(seen), geo.domain, geo.l15, s15, shift)
    home = geo.aoi.epsg
    nd30 = _edge_mask(edge, geo.l30, home) | _edge_mask(geo.swath, geo.l30, home)
    nd15 = _edge_mask(edge, geo.l15, home) | _edge_mask(geo.swath, geo.l15, home)
    dn = quantise(add_noise(p30[:6], "landsat", noise_rng, cfg.noise), SCALINGS["landsat-l2"], nd30)
    dn_pan = quantise(add_noise(pan, "pan", noise_rng, cfg.noise), SCALINGS["landsat-l1"], nd15)
    opacity, shadow_f, cirrus_f, water_f = p30[6], p30[7], p30[8], p30[9]
    high = opacity >= THRESHOLDS["cloud_high"]
    low = (
        (opacity >= THRESHOLDS["cloud_low"]) | ndimage.binary_dilation(high, np.ones((3, 3), bool))
    ) & ~high
    cirrus = cirrus_f >= THRESHOLDS["cirrus"]
    shadow = shadow_f >= THRESHOLDS["shadow"]
    wat = water_f >= THRESHOLDS["water"]
    zeros = np.zeros(nd30.shape, bool)
    qa = encode_landsat_qa(
        nodata=nd30, cloud=high, dilated_cloud=low, cirrus=cirrus, shadow=shadow, snow=zeros, water=wat
    )
    raw = _pack(nodata=nd30, cloud_high=high, cloud_low=low, cirrus=cirrus, shadow=shadow, water=wat)
    m = product_masks(raw, "landsat")
    cc = _pct(m["cloud"] | m["cirrus"], ~nd30)
    keys = ("blue", "green", "red", "nir08", "swir16", "swir22")
    bands: dict[str, Any] = {k: dn[i] for i, k in enumerate(keys)}
    bands["qa_pixel"] = qa
    return SimulatedScene(
        bands=bands,
        raw_masks=raw,
        shift=shift,
        cloud_fraction=atm.cloud_fraction,
        cloud_cover=cc,
        stats={"cloud_cover": cc},
        nodata_edge=edge is not None,
        l1_bands={"pan": dn_pan, "qa_pixel": qa},
    )
