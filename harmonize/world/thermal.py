"""Land surface temperature of the simulated world and Landsat Collection 2 Level-2 ``ST_B10``.

The truth (:func:`surface_temperature`) is a 10 m field in kelvin on every acquisition day,
driven by what a surface-energy balance at the overpass (about 10:10 solar time) depends on:

* the season: air temperature and a radiative forcing (insolation) that both peak in summer;
* a per-date weather offset (air mass, wind, haze; the same for both sensors on one day), and
  a smooth meso-scale pattern (about 1 km) per date;
* land cover and vegetation: each pixel mixes a transpiring canopy (near air temperature) with
  its background heated in proportion to insolation and to one minus its broadband albedo
  (dark roofs and roads hottest, bright roofs and soils less) - the green cover ``fc`` that
  NDVI measures sets the mix;
* soil moisture: a per-unit (field) factor on the background heating, drawn per date, that
  reflectance does not show;
* water: its own damped, lagging seasonal cycle, indifferent to insolation.

The product (:func:`landsat_st`) is what USGS distributes: TIRS band 10 sees a ~100 m footprint
(:data:`FOOTPRINT_M`), resampled to the 30 m OLI grid; clouds show their cold tops and make
their neighbours colder, shadows cool the surface, cirrus biases it cold; a per-scene retrieval
bias and pixel noise are added. ``ST_QA`` carries the uncertainty in kelvin, larger near clouds
and under cirrus. Aggregation is done in emitted power (``T**4``), not temperature.
"""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
from scipy import ndimage

from harmonize.providers import Scaling
from harmonize.world.grids import Grid
from harmonize.world.landscape import Landscape
from harmonize.world.sensors import axis_weights, foreign_view, is_foreign

__all__ = [
    "ST_SCALING",
    "ST_QA_SCALING",
    "FOOTPRINT_M",
    "air_temperature",
    "insolation",
    "weather_offset",
    "surface_temperature",
    "landsat_st",
]

#: ``ST_B10``: DN * 0.00341802 + 149.0 K, nodata 0 (as USGS and both STAC providers say).
ST_SCALING = Scaling(scale=0.00341802, offset=149.0, nodata=0, dtype="uint16")
#: ``ST_QA``: uncertainty in K = DN * 0.01, nodata -9999.
ST_QA_SCALING = Scaling(scale=0.01, offset=0.0, nodata=-9999, dtype="int16")
#: TIRS band 10 ground footprint (m) and the Gaussian part of its response.
FOOTPRINT_M, FOOTPRINT_SIGMA_M = 100.0, 20.0

_FOREST, _WATER = 2, 4
# Broadband albedo from the six bands (blue green red nir swir16 swir22), Liang (2001) for OLI.
_ALBEDO_W = np.array([0.356, 0.0, 0.130, 0.373, 0.085, 0.072], np.float32)
_WEATHER_SD, _MESO_SD, _MOIST_SD = 3.0, 0.8, 0.2


def _doy_cos(d: dt.date, peak_doy: float) -> float:
    return float(np.cos(2 * np.pi * (d.timetuple().tm_yday - peak_doy) / 365.25))


def air_temperature(d: dt.date) -> float:
    """Seasonal air temperature at the overpass (K): 272 K in mid-January, 300 K in mid-July."""
    return 286.0 + 14.0 * _doy_cos(d, 200.0)


def insolation(d: dt.date) -> float:
    """Relative radiative forcing at the overpass: 0.2 at the winter solstice, 1.0 at the summer's."""
    return 0.2 + 0.8 * (0.5 + 0.5 * _doy_cos(d, 172.0))


def _rng(seed: int, stream: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, 100 + stream, zlib.crc32(key.encode())])


def weather_offset(seed: int, d: dt.date) -> float:
    """The day's weather offset (K) added to the air temperature, the same for every sensor."""
    return float(_rng(seed, 0, d.isoformat()).normal(0.0, _WEATHER_SD))


def _meso(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    # Smooth noise of ~1 km correlation, drawn on a 100 m lattice and interpolated.
    coarse = ndimage.gaussian_filter(
        rng.standard_normal((shape[0] // 10 + 3, shape[1] // 10 + 3)), 4.0, mode="wrap"
    )
    coarse = (coarse - coarse.mean()) / (coarse.std() + 1e-12)
    fine = ndimage.zoom(coarse, 10, order=1)[: shape[0], : shape[1]]
    return fine.astype(np.float32)


def _albedo(refl: np.ndarray) -> np.ndarray:
    """Broadband albedo of reflectance ``(..., 6)`` (band axis last)."""
    return np.clip(refl @ _ALBEDO_W - 0.0018, 0.0, 1.0)


def surface_temperature(land: Landscape, d: dt.date, seed: int) -> np.ndarray:
    """True land surface temperature (K) of ``land`` on day ``d``, ``(ny, nx)`` float32.

    Parameters
    ----------
    land
        The landscape (land cover, units, green cover, spectra, texture).
    d
        The day.
    seed
        The world seed; the weather, meso-scale pattern and moisture draws depend on it and ``d``.
    """
    rng = _rng(seed, 1, d.isoformat())
    t_air = air_temperature(d) + weather_offset(seed, d)
    ins = insolation(d)
    n_units = len(land.veg)
    moisture = np.clip(np.exp(rng.normal(0.0, _MOIST_SD, n_units)), 0.6, 1.6).astype(np.float32)
    bg_heat = np.clip(30.0 - 80.0 * _albedo(land.background), 3.0, 30.0).astype(np.float32)
    fc = land.green_cover_map(d)
    lc = land.landcover
    # Texture brightens the background: a brighter patch has a higher albedo, so heats less.
    bg = np.clip(bg_heat[land.unit] * moisture[land.unit] * (2.0 - land.texture), 0.0, 40.0)
    wet = getattr(land, "wet", None)  # wet patches (where the landscape has them) evaporate: cooler
    if wet is not None:
        bg = bg * (1.0 - 0.6 * wet)
    canopy = np.where(lc == _FOREST, -0.5, 1.5).astype(np.float32)
    meso = _meso(lc.shape, rng) * np.float32(_MESO_SD)
    lst = t_air + meso + np.float32(ins) * (fc * canopy + (1.0 - fc) * bg)
    t_water = 283.0 + 10.0 * _doy_cos(d, 215.0) + 0.3 * (t_air - air_temperature(d))
    lst = np.where(lc == _WATER, np.float32(t_water) + 0.3 * meso, lst)
    return lst.astype(np.float32)


def _footprint_view(field: np.ndarray, src: Grid, dst: Grid, shift: tuple[float, float]) -> np.ndarray:
    if is_foreign(src, dst):
        view = foreign_view(field.astype(np.float32), src, dst, FOOTPRINT_M, FOOTPRINT_SIGMA_M, shift)
        return view.astype(field.dtype)
    wy = axis_weights(dst.ys(shift[1]), FOOTPRINT_M, FOOTPRINT_SIGMA_M, src.ys(), src.res)
    wx = axis_weights(dst.xs(shift[0]), FOOTPRINT_M, FOOTPRINT_SIGMA_M, src.xs(), src.res)
    return np.asarray((wx @ (wy @ field).T).T, np.float32)


def landsat_st(
    lst: np.ndarray,
    domain: Grid,
    grid30: Grid,
    *,
    shift: tuple[float, float],
    raw_masks: np.ndarray,
    bits: dict[str, int],
    seed: int,
    scene_id: str,
    noise: float = 1.0,
    cloud_top_k: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``ST_B10`` and ``ST_QA`` digital numbers of one Landsat scene.

    Parameters
    ----------
    lst
        True surface temperature (K) on ``domain``.
    domain, grid30
        The simulation grid and the scene's 30 m grid.
    shift
        The scene's misregistration (as its reflectance bands have it).
    raw_masks
        The scene's raw mask bits on ``grid30`` (``bits`` names them): nodata, clouds, cirrus,
        shadow.
    seed, scene_id
        Select the scene's random streams (bias, noise).
    noise
        Multiplier of the retrieval bias and noise (0: none).
    cloud_top_k
        How much colder than the air at the surface cloud tops are.

    Returns
    -------
    tuple of numpy.ndarray
        ``(st_b10 uint16, st_qa int16)`` on ``grid30``.
    """
    power = _footprint_view(lst.astype(np.float64) ** 4, domain, grid30, shift)
    surface = np.power(np.maximum(power, 1.0), 0.25)

    def bit(name: str) -> np.ndarray:
        return (raw_masks & bits[name]) != 0

    nodata = bit("nodata")
    cloud = (bit("cloud_high") | bit("cloud_low")).astype(np.float32)
    # The 100 m footprint spreads a cloud's cold top over its neighbours.
    cover = np.clip(ndimage.gaussian_filter(cloud, FOOTPRINT_M / 30.0 / 2.0, mode="nearest") * 1.2, 0, 1)
    near = ndimage.gaussian_filter(cloud, 3.0, mode="nearest")
    t_cloud = float(np.median(lst)) - cloud_top_k
    st = (1.0 - cover) * surface + cover * t_cloud - 2.5 * bit("shadow") - 3.0 * bit("cirrus")
    rng = _rng(seed, 2, scene_id)
    st = st + noise * (rng.normal(0.0, 0.4) + rng.normal(0.0, 0.25, st.shape))
    sigma = 0.9 + 3.0 * near + 1.5 * bit("cirrus") + 2.0 * cover
    dn = ST_SCALING.invert(st)
    dn[nodata] = 0
    dn_qa = ST_QA_SCALING.invert(sigma)
    dn_qa[nodata] = ST_QA_SCALING.nodata
    return dn, dn_qa
