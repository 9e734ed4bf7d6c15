"""Sensor models of the simulated archive: spectral response, point-spread function and
sampling on each sensor's own grid, noise, and quantisation to the products' digital numbers.

The ground truth is Sentinel-2A MSI reflectance on a 10 m grid (each 10 m cell uniform).
A sensor sees it through

1. its spectral response (:func:`spectral`): Sentinel-2B through the HLS coefficients of both
   MSIs, Landsat OLI through the HLS MSI->OLI line plus a small quadratic term
   (:data:`OLI_QUADRATIC`), so the bandpass difference is not purely linear;
2. its pixel response (:func:`project`): a box of the pixel's width convolved with a Gaussian
   (:data:`PSF_SIGMA`), integrated exactly over the 10 m cells, sampled at the pixel centres of
   the sensor's grid displaced by the scene's misregistration;
3. noise whose standard deviation grows with the signal (:func:`add_noise`);
4. quantisation with the product's scale, offset and nodata (:data:`SCALINGS`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.special import ndtr

from harmonize.bands import REFLECTANCE_BANDS, bandpass_coefficients
from harmonize.providers import Scaling
from harmonize.world.grids import Grid, centres_in

__all__ = [
    "SCALINGS",
    "PSF_SIGMA",
    "OLI_QUADRATIC",
    "PAN_WEIGHTS",
    "spectral",
    "pan_toa",
    "axis_weights",
    "project",
    "noise_sigma",
    "add_noise",
    "quantise",
]

Spectral = Literal["sentinel-2a", "sentinel-2b", "landsat-8", "landsat-9"]

#: How each product stores reflectance (what its STAC ``raster:bands`` say, too).
SCALINGS: dict[str, Scaling] = {
    "landsat-l2": Scaling(scale=2.75e-5, offset=-0.2, nodata=0, dtype="uint16"),
    "landsat-l1": Scaling(scale=2.0e-5, offset=-0.1, nodata=0, dtype="uint16"),
    "sentinel-2": Scaling(scale=1e-4, offset=-0.1, nodata=0, dtype="uint16"),
}

#: Gaussian part of each pixel response, in metres, by (sensor, resolution).
PSF_SIGMA: dict[tuple[str, int], float] = {
    ("sentinel-2", 10): 4.0,
    ("sentinel-2", 20): 8.0,
    ("landsat", 30): 12.0,
    ("landsat", 15): 6.0,
}

#: OLI = HLS(MSI->OLI, S2A) line + q * MSI**2: the nonlinear part of the bandpass difference.
OLI_QUADRATIC: dict[str, float] = {
    "blue": 0.02,
    "green": 0.015,
    "red": 0.02,
    "nir": -0.03,
    "swir16": 0.02,
    "swir22": 0.025,
}

#: OLI pan (0.50-0.68 um) as a mix of blue, green and red surface reflectance.
PAN_WEIGHTS: dict[str, float] = {"blue": 0.10, "green": 0.50, "red": 0.40}
#: Top-of-atmosphere = PAN_PATH + PAN_GAIN * surface (a fixed, clear atmosphere).
PAN_PATH, PAN_GAIN = 0.03, 0.92

# Noise standard deviation = NOISE[sensor][0] + NOISE[sensor][1] * reflectance.
NOISE: dict[str, tuple[float, float]] = {
    "sentinel-2": (0.0015, 0.01),
    "landsat": (0.001, 0.008),
    "pan": (0.002, 0.01),
}


def spectral(msi: np.ndarray, platform: Spectral, bands: tuple[str, ...] = REFLECTANCE_BANDS) -> np.ndarray:
    """Reflectance of Sentinel-2A-MSI ``msi`` (band axis first) as ``platform`` measures it.

    Parameters
    ----------
    msi
        Array ``(band, ...)`` of MSI (Sentinel-2A) surface reflectance, in ``bands`` order.
    platform
        ``"sentinel-2a"`` (identity), ``"sentinel-2b"``, ``"landsat-8"`` or ``"landsat-9"``.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape.
    """
    msi = np.asarray(msi, np.float32)
    if platform == "sentinel-2a":
        return msi
    a = bandpass_coefficients("sentinel-2a")
    out = np.empty_like(msi)
    for i, b in enumerate(bands):
        oli = a[b].apply(msi[i])
        if platform == "sentinel-2b":
            out[i] = bandpass_coefficients("sentinel-2b")[b].invert(oli)
        elif platform in ("landsat-8", "landsat-9"):
            out[i] = oli + np.float32(OLI_QUADRATIC[b]) * msi[i] * msi[i]
        else:
            raise ValueError(f"no spectral model for platform {platform!r}")
    return out


def pan_toa(oli: np.ndarray, bands: tuple[str, ...] = REFLECTANCE_BANDS) -> np.ndarray:
    """Landsat pan top-of-atmosphere reflectance from OLI surface reflectance ``(band, ...)``."""
    surf = sum(np.float32(w) * oli[bands.index(b)] for b, w in PAN_WEIGHTS.items())
    return np.float32(PAN_PATH) + np.float32(PAN_GAIN) * surf


def _integral_cdf(u: np.ndarray, sigma: float) -> np.ndarray:
    # An antiderivative of Phi(u / sigma).
    z = u / sigma
    return sigma * (z * ndtr(z) + np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi))


def axis_weights(
    centres_out: np.ndarray, width_out: float, sigma: float, centres_in: np.ndarray, width_in: float
) -> sp.csr_matrix:
    """Weights of input cells in output samples along one axis.

    The pixel response is a box of ``width_out`` convolved with a Gaussian of ``sigma``; each
    weight is its exact integral over one uniform input cell of ``width_in``, normalised so that
    each row sums to one. ``centres_in`` must be evenly spaced by ``width_in``.
    """
    n_in = len(centres_in)
    step = centres_in[1] - centres_in[0]  # +width_in for x, -width_in for y
    reach = width_out / 2 + width_in / 2 + 5 * sigma
    k = int(np.ceil(reach / width_in)) + 1
    nearest = np.rint((centres_out - centres_in[0]) / step).astype(np.int64)
    cols = nearest[:, None] + np.arange(-k, k + 1)[None, :]
    inside = (cols >= 0) & (cols < n_in)
    cols_c = np.clip(cols, 0, n_in - 1)
    d = centres_in[cols_c] - centres_out[:, None]
    a, b, h = d - width_in / 2, d + width_in / 2, width_out / 2
    w = (
        _integral_cdf(b + h, sigma)
        - _integral_cdf(a + h, sigma)
        - _integral_cdf(b - h, sigma)
        + _integral_cdf(a - h, sigma)
    ) / width_out
    w[~inside | (w < 1e-7)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(len(centres_out)), cols.shape[1])
    m = sp.csr_matrix((w.ravel().astype(np.float32), (rows, cols_c.ravel())), shape=(len(centres_out), n_in))
    m.sum_duplicates()
    return m


@lru_cache(maxsize=64)
def _weights(
    src: Grid, dst: Grid, sigma: float, shift: tuple[float, float]
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    wy = axis_weights(dst.ys(shift[1]), dst.res, sigma, src.ys(), src.res)
    wx = axis_weights(dst.xs(shift[0]), dst.res, sigma, src.xs(), src.res)
    return wy, wx


def project(
    img: np.ndarray,
    src: Grid,
    dst: Grid,
    sigma: float,
    shift: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Sample ``img`` on ``src`` as a sensor with grid ``dst`` and PSF ``sigma`` sees it.

    Parameters
    ----------
    img
        ``(..., src.ny, src.nx)`` values, each cell uniform.
    src, dst
        Input and output grids (same CRS).
    sigma
        Gaussian part of the pixel response, metres.
    shift
        ``(dx, dy)`` metres: the sensor's pixel ``(row, col)`` sees the ground around
        ``(dst.x0 + dx + (col + 0.5) * res, dst.y0 + dy - (row + 0.5) * res)``.

    Returns
    -------
    numpy.ndarray
        float32 ``(..., dst.ny, dst.nx)``.
    """
    if is_foreign(src, dst):
        return foreign_view(img, src, dst, dst.res, sigma, shift)
    wy, wx = _weights(src, dst, float(sigma), (float(shift[0]), float(shift[1])))
    lead = img.shape[:-2]
    flat = np.asarray(img, np.float32).reshape((-1,) + img.shape[-2:])
    out = np.empty((flat.shape[0], dst.ny, dst.nx), np.float32)
    for i, band in enumerate(flat):
        out[i] = (wx @ (wy @ band).T).T
    return out.reshape(lead + (dst.ny, dst.nx))


def is_foreign(src: Grid, dst: Grid) -> bool:
    """Whether ``dst`` is in another CRS than ``src`` (both carry one and they differ)."""
    return src.epsg is not None and dst.epsg is not None and src.epsg != dst.epsg


@lru_cache(maxsize=16)
def _self_weights(src: Grid, width: float, sigma: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    wy = axis_weights(src.ys(), width, sigma, src.ys(), src.res)
    wx = axis_weights(src.xs(), width, sigma, src.xs(), src.res)
    return wy, wx


def foreign_view(
    img: np.ndarray, src: Grid, dst: Grid, width: float, sigma: float, shift: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """What a sensor with pixels of ``dst`` in another CRS sees of ``img`` on ``src``.

    The pixel response (a box of ``width`` metres convolved with a Gaussian of ``sigma``) is
    applied on ``src``'s own lattice, then sampled bilinearly at ``dst``'s pixel centres
    (displaced by ``shift`` in ``dst``'s CRS) mapped into ``src``'s CRS. Outside ``src`` the
    nearest edge value is taken. The box stays aligned with ``src``'s axes: the few degrees of
    grid convergence between neighbouring UTM zones change the response by far less than noise.

    Returns
    -------
    numpy.ndarray
        float32 ``(..., dst.ny, dst.nx)``.
    """
    wy, wx = _self_weights(src, float(width), float(sigma))
    x, y = centres_in(dst, src.epsg, shift)
    coords = np.stack([(src.y0 - y) / src.res - 0.5, (x - src.x0) / src.res - 0.5])
    lead = img.shape[:-2]
    flat = np.asarray(img, np.float32).reshape((-1,) + img.shape[-2:])
    out = np.empty((flat.shape[0], dst.ny, dst.nx), np.float32)
    for i, band in enumerate(flat):
        blurred = np.asarray((wx @ (wy @ band).T).T, np.float32)
        ndimage.map_coordinates(blurred, coords, output=out[i], order=1, mode="nearest")
    return out.reshape(lead + (dst.ny, dst.nx))


def noise_sigma(refl: np.ndarray, kind: str, scale: float = 1.0) -> np.ndarray:
    """Noise standard deviation of ``kind`` (``"sentinel-2"``, ``"landsat"``, ``"pan"``)."""
    a, b = NOISE[kind]
    return np.float32(scale) * (np.float32(a) + np.float32(b) * np.abs(refl))


def add_noise(refl: np.ndarray, kind: str, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """``refl`` plus Gaussian noise of :func:`noise_sigma`."""
    if scale == 0:
        return np.asarray(refl, np.float32)
    eps = rng.standard_normal(refl.shape, dtype=np.float32)
    return refl + eps * noise_sigma(refl, kind, scale)


def quantise(refl: np.ndarray, scaling: Scaling, nodata: np.ndarray | None = None) -> np.ndarray:
    """Digital numbers of ``refl`` under ``scaling``; ``nodata`` where the mask is set."""
    dn = scaling.invert(refl)
    if nodata is not None and scaling.nodata is not None:
        dn[..., nodata] = scaling.nodata
    return dn
