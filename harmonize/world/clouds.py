"""Clouds, their shadows and thin cirrus for one scene, on the 10 m simulation grid.

Cloud fields are fractal (FFT-filtered 1/f noise) thresholded to a cloud fraction drawn per
scene, from clear to overcast. Shadows are the cloud footprint displaced away from the sun by
``height * tan(zenith)``. The fields are periodic (FFT), so a displaced field wraps consistently.

In a wet season (:func:`wet_season_opacity`) the clouds are one deck for the whole world instead
of a new field per scene: a mix of two fields drawn at knots 8 days apart, crossfaded between
them and drifting with a slow wind, so clouds persist over weeks, move slowly, and scenes of the
same day (both sensors) see the same sky.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Atmosphere",
    "fractal_noise",
    "draw_atmosphere",
    "CLOUD_REFLECTANCE",
    "CIRRUS_REFLECTANCE",
    "SHADOW_DARKENING",
    "THRESHOLDS",
    "apply_atmosphere",
    "wet_season_opacity",
    "WET_KNOT_DAYS",
]

#: Reflectance of thick cloud in the six bands (bright, flat in the visible, darker in the SWIR).
CLOUD_REFLECTANCE = np.array([0.55, 0.55, 0.56, 0.58, 0.45, 0.32], np.float32)
#: Reflectance that full thin cirrus adds.
CIRRUS_REFLECTANCE = np.array([0.035, 0.035, 0.033, 0.030, 0.022, 0.015], np.float32)
#: Fraction of surface reflectance removed in full shadow.
SHADOW_DARKENING = 0.6

#: The simulated cloud detector: thresholds on the fields as the sensor's pixel sees them.
THRESHOLDS = {
    "cloud_high": 0.5,  # opacity: high-probability cloud / QA cloud bit
    "cloud_low": 0.01,  # opacity: medium-probability cloud / dilated cloud
    "shadow": 0.01,  # shadow cover
    "cirrus": 0.05,  # cirrus cover
    "water": 0.5,  # water fraction
    "vegetation": 0.4,  # NDVI, Sentinel-2 SCL only
}


@dataclass
class Atmosphere:
    """One scene's atmosphere on the simulation grid.

    Attributes
    ----------
    opacity
        Cloud opacity 0..1 (0 outside clouds, 0.65..1 inside).
    shadow
        Shadow cover 0..1.
    cirrus
        Thin-cirrus cover 0..1.
    cloud_fraction
        The drawn cloud fraction (the share of the grid with opacity > 0).
    """

    opacity: np.ndarray
    shadow: np.ndarray
    cirrus: np.ndarray
    cloud_fraction: float


def fractal_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Periodic noise with power spectrum ``1 / f**beta``, zero mean and unit variance."""
    ky = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    f = np.sqrt(ky * ky + kx * kx)
    f[0, 0] = np.inf
    spec = np.fft.rfft2(rng.standard_normal(shape, dtype=np.float32)) * f ** np.float32(-beta / 2)
    out = np.fft.irfft2(spec, s=shape)
    return ((out - out.mean()) / (out.std() + 1e-12)).astype(np.float32)


#: Days between two independent cloud fields of the wet-season deck (it crossfades between them).
WET_KNOT_DAYS = 8.0
# Spectral slope of the deck's fields: steeper than a scene's (3.2), so breaks are few and wide.
_WET_BETA = 4.0
# The deck is drawn over at least this many metres (then cropped), so its breaks have the same
# size in a small world as in the demo's: a 1/f field's features scale with the grid it is drawn on.
_WET_MIN_EXTENT_M = 5520.0
_WET_EPOCH = dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc)


def _opacity(field: np.ndarray, fraction: float) -> np.ndarray:
    """Cloud opacity where ``field`` is in its top ``fraction``: 0.65 at cloud edges to 1 inside."""
    opacity = np.zeros(field.shape, np.float32)
    if fraction > 0:
        t = np.quantile(field, 1.0 - fraction)
        inside = field > t
        opacity[inside] = 0.65 + 0.35 * np.clip((field[inside] - t) / 0.6, 0, 1)
    return opacity


def wet_season_opacity(
    shape: tuple[int, int],
    when: dt.datetime,
    *,
    seed: int,
    res: float,
    cover: tuple[float, float],
) -> np.ndarray:
    """Opacity of the wet season's persistent cloud deck at ``when``, ``(ny, nx)`` float32.

    The deck at time ``t`` is ``cos(a) F_k + sin(a) F_k+1`` (unit variance at every ``t``) of
    fractal fields drawn at knots :data:`WET_KNOT_DAYS` apart, ``a`` going from 0 to pi/2
    between knots, rolled by a wind of 60-160 m per day (one direction per world); its cloud
    fraction is interpolated between per-knot draws from ``cover``. Depends only on ``seed``,
    ``shape`` and ``when``: every scene of an instant sees the same deck.
    """
    days = (when - _WET_EPOCH).total_seconds() / 86400.0
    k = int(np.floor(days / WET_KNOT_DAYS))
    w = days / WET_KNOT_DAYS - k
    knots = [np.random.default_rng([seed, 11, k + i]) for i in (0, 1)]
    fraction = [float(g.uniform(*cover)) for g in knots]
    a = 0.5 * np.pi * w
    n = max(*shape, int(np.ceil(_WET_MIN_EXTENT_M / res)))
    f0, f1 = (fractal_noise((n, n), _WET_BETA, g) for g in knots)
    field = np.cos(a) * f0 + np.sin(a) * f1
    wind = np.random.default_rng([seed, 12])
    speed, heading = wind.uniform(60.0, 160.0), wind.uniform(0, 2 * np.pi)
    drow = int(round(speed * days * np.cos(heading) / res)) % n
    dcol = int(round(speed * days * np.sin(heading) / res)) % n
    field = np.roll(field, (drow, dcol), axis=(0, 1))
    opacity = _opacity(field, (1 - w) * fraction[0] + w * fraction[1])
    return np.ascontiguousarray(opacity[: shape[0], : shape[1]])


def draw_atmosphere(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    res: float,
    clear_probability: float,
    max_cloud_fraction: float,
    cirrus_probability: float,
    sun_azimuth: float,
    sun_elevation: float,
    cloud_height_m: float,
    deck: np.ndarray | None = None,
) -> Atmosphere:
    """Draw a scene's clouds, shadows and cirrus (all draws come from ``rng``, in a fixed order).

    ``deck``, the opacity of a persistent cloud deck (:func:`wet_season_opacity`), replaces the
    scene's own cloud field; shadows and cirrus are drawn as for any scene.
    """
    if deck is None:
        clear = rng.random() < clear_probability
        fraction = 0.0 if clear else float(rng.uniform(0.0, max_cloud_fraction))
        opacity = _opacity(fractal_noise(shape, 3.2, rng), fraction)
    else:
        opacity = deck.astype(np.float32, copy=False)
        fraction = float((opacity > 0).mean())
    # Shadow: cloud footprint moved away from the sun by height * tan(zenith).
    length = cloud_height_m * float(rng.uniform(0.8, 1.2)) / np.tan(np.radians(max(sun_elevation, 5.0)))
    az = np.radians(sun_azimuth)
    drow = int(round(length * np.cos(az) / res))  # rows grow southwards; the sun is north of +y
    dcol = int(round(-length * np.sin(az) / res))
    shadow = np.roll((opacity > 0).astype(np.float32), (drow, dcol), axis=(0, 1))
    cirrus = np.zeros(shape, np.float32)
    has_cirrus = rng.random() < cirrus_probability
    if has_cirrus:
        cfield = fractal_noise(shape, 4.0, rng)
        cirrus[cfield > np.quantile(cfield, 1.0 - float(rng.uniform(0.1, 0.5)))] = 1.0
    return Atmosphere(opacity=opacity, shadow=shadow, cirrus=cirrus, cloud_fraction=fraction)


def apply_atmosphere(surface: np.ndarray, atm: Atmosphere) -> np.ndarray:
    """What a sensor above the atmosphere sees of ``surface`` ``(6, ny, nx)`` (10 m, before PSF)."""
    out = surface * (1.0 - np.float32(SHADOW_DARKENING) * atm.shadow)
    out += CIRRUS_REFLECTANCE[:, None, None] * atm.cirrus
    out *= 1.0 - atm.opacity
    out += CLOUD_REFLECTANCE[:, None, None] * atm.opacity
    return out
