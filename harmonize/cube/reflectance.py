"""Digital numbers to physical reflectance, per time step (the Sentinel-2 offset changed in 2022).

A raw cube (``load_cube(..., reflectance=False)``) carries 1-D ``scale``, ``offset`` and
``nodata`` coordinates on ``time`` (and ``pan_scale`` … for the pan band); :func:`to_reflectance`
applies them lazily, one blockwise task per chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from harmonize.bands import PAN, REFLECTANCE_BANDS, THERMAL
from harmonize.errors import HarmonizeError

__all__ = ["SCALE_COORDS", "relabel_reflectance", "to_reflectance"]

#: The scaling coordinates of a raw cube, dropped by :func:`to_reflectance`.
SCALE_COORDS = ("scale", "offset", "nodata", "pan_scale", "pan_offset", "pan_nodata") + tuple(
    f"{v}_{c}" for v in THERMAL for c in ("scale", "offset", "nodata")
)


def _scale_block(
    dn: np.ndarray, scale: np.ndarray, offset: np.ndarray, nodata: np.ndarray, block_info: dict | None = None
) -> np.ndarray:
    t0, t1 = block_info[0]["array-location"][0] if block_info else (0, dn.shape[0])
    shape = (t1 - t0,) + (1,) * (dn.ndim - 1)
    # one float32 buffer, written once by the multiply (no astype copy): the same float32 ops
    out = np.multiply(dn, scale[t0:t1].astype(np.float32).reshape(shape), dtype=np.float32)
    out += offset[t0:t1].astype(np.float32).reshape(shape)
    np.copyto(out, np.float32(np.nan), where=dn == nodata[t0:t1].reshape(shape))
    return out


def _scaled(dn: Any, scale: np.ndarray, offset: np.ndarray, nodata: np.ndarray) -> Any:
    """``dn * scale[t] + offset[t]`` as float32, NaN where ``dn == nodata[t]`` (dask or numpy)."""
    import dask.array as da

    if isinstance(dn, da.Array):
        return da.map_blocks(_scale_block, dn, scale=scale, offset=offset, nodata=nodata, dtype=np.float32)
    return _scale_block(np.asarray(dn), scale, offset, nodata)


def to_reflectance(ds: xr.Dataset) -> xr.Dataset:
    """Apply the per-time scale and offset of a raw-DN cube (``load_cube(..., reflectance=False)``).

    Reflectance bands use the ``scale``, ``offset`` and ``nodata`` time coordinates, ``pan`` uses
    ``pan_scale``, ``pan_offset`` and ``pan_nodata``, ``lst``/``lst_qa`` likewise (to kelvin).
    Lazy; the result is float32 with NaN where the DN is the no-data value, and the scaling
    coordinates are dropped.

    Raises
    ------
    HarmonizeError
        If ``ds`` lacks the scaling coordinates (for instance because it already is reflectance).
    """
    if "scale" not in ds.coords:
        raise HarmonizeError(
            "This cube has no 'scale'/'offset' coordinates: it is already reflectance, or was not "
            "made by load_cube(..., reflectance=False)."
        )
    out = ds.copy()
    for var in _scaled_vars(ds):
        prefix = "" if var in REFLECTANCE_BANDS else f"{var}_"
        dn = ds[var]
        vectors = [np.asarray(ds[f"{prefix}{c}"].values, "float64") for c in ("scale", "offset", "nodata")]
        out[var] = dn.copy(data=_scaled(dn.transpose("time", ...).data, *vectors))
    return relabel_reflectance(out)


def _scaled_vars(ds: xr.Dataset) -> list[Any]:
    return [v for v in ds.data_vars if v in REFLECTANCE_BANDS or v == PAN or v in THERMAL]


def relabel_reflectance(ds: xr.Dataset) -> xr.Dataset:
    """The attributes and coordinates :func:`to_reflectance` gives a cube whose values already
    are scaled (units and long names, no ``nodata`` attribute, no scaling coordinates)."""
    out = ds.copy()
    for var in _scaled_vars(ds):
        units, name = THERMAL.get(str(var), ("1", f"{var} reflectance"))
        out[var] = out[var].assign_attrs(units=units, long_name=name)
        out[var].attrs.pop("nodata", None)
    out = out.drop_vars([c for c in SCALE_COORDS if c in out.coords])
    if "harmonize_load" in out.attrs:
        out.attrs["harmonize_load"] = {**out.attrs["harmonize_load"], "reflectance": True}
    return out
