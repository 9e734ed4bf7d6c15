"""Per-pixel spectral indices and per-scene summaries of a cube.

Everything here is elementwise or a reduction over ``(y, x)``: it stays lazy on a dask-backed
cube and keeps the cube's coordinates (CRS included).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from harmonize.errors import UnknownBandError

__all__ = ["ndvi", "clear_fraction", "valid_mask"]

SPATIAL_DIMS = ("y", "x")


def _require(ds: xr.Dataset, *names: str) -> None:
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        raise UnknownBandError(
            f"The cube lacks variable(s) {missing} (it has {sorted(map(str, ds.data_vars))}); "
            "load it with those bands, e.g. load_cube(items, bands=[...])."
        )


def ndvi(ds: xr.Dataset, *, red: str = "red", nir: str = "nir") -> xr.DataArray:
    """Normalised difference vegetation index ``(nir - red) / (nir + red)``.

    Parameters
    ----------
    ds
        A cube with reflectance variables ``red`` and ``nir`` (any dims, usually
        ``(time, y, x)``), lazy or not.
    red, nir
        Names of the red and near-infrared variables.

    Returns
    -------
    xarray.DataArray
        float32 NDVI named ``"ndvi"``, NaN where either band is NaN or negative (slightly
        negative reflectance, over water after atmospheric correction or from a model, makes
        the ratio leave [-1, 1] and explode near ``nir + red = 0``; it is no observation of
        NDVI), with the cube's coordinates. Lazy if the input is.

    Raises
    ------
    UnknownBandError
        If ``red`` or ``nir`` is missing.
    """
    _require(ds, red, nir)
    r = ds[red].astype("float32")
    n = ds[nir].astype("float32")
    total = n + r
    # Mask before dividing so no division-by-zero warnings reach the caller; with both bands
    # >= 0 (and not both 0) the ratio lies in [-1, 1].
    safe = total.where((n >= 0) & (r >= 0) & (total > 0))
    out = ((n - r) / safe).astype("float32")
    out.name = "ndvi"
    out.attrs = {"long_name": "normalised difference vegetation index", "units": "1"}
    return out


def valid_mask(ds: xr.Dataset, bands: tuple[str, ...] | list[str] | None = None) -> xr.DataArray:
    """Where the cube has data: any reflectance band finite.

    Parameters
    ----------
    ds
        A cube.
    bands
        Variables to consider; by default every floating-point data variable.

    Returns
    -------
    xarray.DataArray
        Boolean, same dims as the bands.
    """
    if bands is None:
        bands = [str(k) for k, v in ds.data_vars.items() if np.issubdtype(v.dtype, np.floating)]
    if not bands:
        raise UnknownBandError(
            "The cube has no floating-point reflectance variables to tell valid pixels from no data."
        )
    _require(ds, *bands)
    masks = [np.isfinite(ds[b]) for b in bands]
    out = masks[0]
    for m in masks[1:]:
        out = out | m
    return out.rename("valid")


def clear_fraction(
    ds: xr.Dataset, *, clear: str = "clear", bands: tuple[str, ...] | list[str] | None = None
) -> xr.DataArray:
    """Fraction of each scene's valid pixels that are clear.

    Parameters
    ----------
    ds
        A cube with a boolean ``clear`` variable on ``(time, y, x)``.
    clear
        Name of the clear-sky mask variable.
    bands
        Reflectance variables that define the valid area (see :func:`valid_mask`).

    Returns
    -------
    xarray.DataArray
        float32 per ``time`` (every non-spatial dim), named ``"clear_fraction"``; NaN for a scene
        with no valid pixel. Lazy if the input is.

    Raises
    ------
    UnknownBandError
        If the ``clear`` variable is missing.
    """
    _require(ds, clear)
    has_float = any(np.issubdtype(v.dtype, np.floating) for v in ds.data_vars.values())
    valid = valid_mask(ds, bands) if bands is not None or has_float else xr.ones_like(ds[clear], dtype=bool)
    ok = ds[clear].astype(bool) & valid
    dims = [d for d in SPATIAL_DIMS if d in ok.dims]
    n_valid = valid.sum(dims)
    out = (ok.sum(dims) / n_valid.where(n_valid > 0)).astype("float32")
    out.name = "clear_fraction"
    out.attrs = {"long_name": "clear fraction of the valid area", "units": "1"}
    return out
