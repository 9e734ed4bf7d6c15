"""Applying a shift table: load the items once on corrected grids, or resample a loaded cube.

The one way through co-registration is ``items -> probe cube -> estimate_shifts -> table ->
load_cube(items, shifts=table)``: :func:`load_coregistered` does it in one call, reading only
the matching bands for the probe. :func:`shift_cube` (and :func:`coregister`, which estimates
and then shifts) resample a cube already loaded, for cubes whose items are not at hand; that
resamples the pixels twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from scipy import ndimage

from harmonize.coregister.table import DEFAULT_BANDS, estimate_shifts, pixel_size
from harmonize.items import Scene, parse_items

__all__ = ["shift_cube", "coregister", "load_coregistered"]

log = logging.getLogger(__name__)


def _shift_block(block: np.ndarray, shift: tuple[float, float], order: int) -> np.ndarray:
    """Resample one (y, x) block so that ``out(p) = block(p - shift)``, NaN-aware."""
    ok = np.isfinite(block)
    filled = np.where(ok, block, 0.0)
    out = ndimage.shift(filled, shift, order=order, mode="nearest")
    w = ndimage.shift(ok.astype("float32"), shift, order=1, mode="constant", cval=0)
    return np.where(w > 0.999, out, np.nan).astype(block.dtype)


def shift_cube(cube: xr.Dataset, shifts: pd.DataFrame, *, order: int = 1) -> xr.Dataset:
    """Apply measured shifts by resampling the loaded cube (no reload from the archive).

    This resamples twice (native -> 10 m at load, then here); where you have the items, load
    them once with ``load_cube(items, shifts=table)`` instead (:func:`load_coregistered`).

    Parameters
    ----------
    cube
        The cube the shifts were measured on.
    shifts
        Output of :func:`estimate_shifts`; its ``residual_dx``/``residual_dy`` are applied to
        unflagged scenes.
    order
        Spline order of the resampling (1 bilinear, 3 cubic).

    Returns
    -------
    xarray.Dataset
        The cube with shifted float variables (boolean masks shifted by nearest neighbour),
        lazy if the input is, and updated ``shift_*`` coordinates.
    """
    import dask.array as dsa

    px, py = pixel_size(cube)
    times = cube["time"].values
    todo = {
        int(np.flatnonzero(times == t)[0]): (r.residual_dy / py, r.residual_dx / px)
        for t, r in shifts.iterrows()
        if not r.flagged and (r.residual_dx != 0 or r.residual_dy != 0)
    }
    depth = int(np.ceil(max([abs(v) for s in todo.values() for v in s], default=0))) + 2
    out = {}
    for name, var in cube.data_vars.items():
        if set(var.dims) != {"time", "y", "x"} or not todo:
            out[name] = var
            continue
        var = var.transpose("time", "y", "x")
        is_bool = var.dtype == bool
        data = var.data if isinstance(var.data, dsa.Array) else dsa.from_array(var.values, chunks=(1, -1, -1))
        slices = []
        for k in range(var.sizes["time"]):
            sl = data[k]
            if k in todo:
                src = sl.astype("float32") if is_bool else sl
                res = src.map_overlap(
                    _shift_block,
                    depth=depth,
                    boundary="nearest",
                    shift=todo[k],
                    order=0 if is_bool else order,
                    dtype=src.dtype,
                )
                sl = (res == 1) if is_bool else res
            slices.append(sl)
        out[name] = var.copy(data=dsa.stack(slices))
    res_ds = cube.copy()
    for name, var in out.items():
        res_ds[name] = var
    return _with_shift_coords(res_ds, shifts)


def _current(ds: xr.Dataset, name: str) -> np.ndarray:
    return np.asarray(ds[name].values) if name in ds.coords else np.zeros(ds.sizes["time"])


def _with_shift_coords(ds: xr.Dataset, shifts: pd.DataFrame) -> xr.Dataset:
    times = pd.DatetimeIndex(ds["time"].values)
    tab = shifts.reindex(times)
    moving = tab["flagged"].notna().to_numpy()
    sx = np.where(moving, tab["dx"].to_numpy(dtype="float64", na_value=np.nan), _current(ds, "shift_x"))
    sy = np.where(moving, tab["dy"].to_numpy(dtype="float64", na_value=np.nan), _current(ds, "shift_y"))
    flagged = tab["flagged"].to_numpy(dtype=object, na_value=False).astype(bool)
    quality = tab["quality"].to_numpy(dtype="float64", na_value=np.nan)
    return ds.assign_coords(
        shift_x=("time", sx.astype("float64")),
        shift_y=("time", sy.astype("float64")),
        shift_flagged=("time", flagged),
        shift_quality=("time", quality),
    )


def coregister(
    cube: xr.Dataset, reference: xr.Dataset | None = None, *, shifts: pd.DataFrame | None = None, **kw: Any
) -> xr.Dataset:
    """Measure and remove the Landsat/Sentinel-2 misregistration of a loaded cube by resampling it.

    Parameters
    ----------
    cube
        A cube from :func:`harmonize.cube.load_cube` with both sensors.
    reference
        Optional separate Sentinel-2 reference cube on the same GeoBox (see
        :func:`estimate_shifts`).
    shifts
        A table from :func:`estimate_shifts` to apply instead of estimating one.
    **kw
        Passed to :func:`estimate_shifts`.

    Returns
    -------
    xarray.Dataset
        The corrected cube, lazy, with ``shift_x``, ``shift_y`` (metres, the corrections
        applied), ``shift_flagged`` and ``shift_quality`` coordinates on ``time``.

    Notes
    -----
    The loaded pixels are resampled a second time. With the items at hand, load them once on the
    corrected grids instead: ``load_cube(items, shifts=estimate_shifts(cube))``, or
    :func:`load_coregistered`.
    """
    table = estimate_shifts(cube, reference, **kw) if shifts is None else shifts
    return shift_cube(cube, table)


def load_coregistered(
    items: Iterable[pystac.Item | Scene],
    bands: Any = None,
    *,
    reference: xr.Dataset | None = None,
    estimate: Mapping[str, Any] | None = None,
    **load_kw: Any,
) -> xr.Dataset:
    """Load items as one cube with every Landsat scene co-registered, each pixel resampled once.

    The items are parsed once; a probe cube of the matching bands (red, nir and the clear mask)
    measures the shifts (:func:`estimate_shifts`), and the cube is loaded once with them
    (``load_cube(scenes, shifts=table)``).

    Parameters
    ----------
    items
        As :func:`harmonize.cube.load_cube` takes them (both sensors, Level-1 for pan).
    bands
        Bands of the returned cube (default as :func:`~harmonize.cube.load_cube`).
    reference
        A separate Sentinel-2 reference cube on the same grid; default the items' own Sentinel-2
        scenes.
    estimate
        Keyword arguments of :func:`estimate_shifts` (``max_days``, ``min_clear`` …).
    **load_kw
        Keyword arguments of :func:`~harmonize.cube.load_cube` (``geobox``, ``bbox``,
        ``resampling``, ``chunks`` …; not ``shifts``).

    Returns
    -------
    xarray.Dataset
        The cube, with ``shift_x``/``shift_y``/``shift_flagged``/``shift_quality`` coordinates.
    """
    from harmonize.cube import load_cube

    scenes = parse_items(items, load_kw.get("provider"))
    probe = load_cube(scenes, list(DEFAULT_BANDS), **load_kw)
    table = estimate_shifts(probe, reference, **dict(estimate or {}))
    return load_cube(scenes, bands, shifts=table, **{**load_kw, "geobox": probe.odc.geobox})
