"""The truth on the cube's footing: on its pixel grid, by calendar day, and where scores mean something.

Every score in :mod:`pipelines.evaluation` compares a product with the simulator's truth: that
needs the truth on the product's pixel centres (:func:`truth_on_grid`), dates matched by day
(:func:`calendar_day`), one sensor's part of a fused cube (:func:`sensor_part`), and the masks of
pixels where an NDVI error measures the time series rather than the sensors' resolution
(:func:`interior_mask`, :func:`land_mask`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["calendar_day", "truth_on_grid", "sensor_part", "interior_mask", "land_mask"]


def calendar_day(t: Any) -> np.datetime64:
    """The day ``t`` falls on, as ``datetime64[ns]`` at midnight.

    Parameters
    ----------
    t
        Anything :class:`pandas.Timestamp` reads (a string, ``datetime64``, ``datetime``).

    Returns
    -------
    numpy.datetime64
        Midnight of that day: the truth's dates, so an acquisition and its truth match by day.
    """
    return np.datetime64(pd.Timestamp(t).normalize().to_datetime64(), "ns")


def truth_on_grid(truth: xr.Dataset, like: xr.Dataset | xr.DataArray) -> xr.Dataset:
    """The truth on ``like``'s pixel centres (NaN where it does not reach), time as days.

    Parameters
    ----------
    truth
        The simulator's truth (``World.truth``).
    like
        A cube or array whose ``y`` and ``x`` coordinates set the grid.

    Returns
    -------
    xarray.Dataset
        The truth reindexed onto ``like``'s grid (nearest pixel within 1 m), its times
        :func:`calendar_day`.
    """
    out = truth.reindex(y=like["y"].values, x=like["x"].values, method="nearest", tolerance=1.0)
    return out.assign_coords(time=[calendar_day(t) for t in out["time"].values])


def sensor_part(cube: xr.Dataset, sensor: str) -> xr.Dataset:
    """The time steps of one sensor.

    Parameters
    ----------
    cube
        A cube with a ``sensor`` coordinate along ``time``.
    sensor
        ``"landsat"`` or ``"sentinel-2"``.

    Returns
    -------
    xarray.Dataset
        ``cube`` at the times whose ``sensor`` is ``sensor``.
    """
    return cube.isel(time=np.flatnonzero(np.asarray(cube["sensor"].values) == sensor))


def _landcover_codes(truth: xr.Dataset, names: tuple[str, ...]) -> list[Any]:
    """The land-cover codes whose flag meaning is one of ``names``."""
    meanings = str(truth["landcover"].attrs.get("flag_meanings", "")).split()
    values = list(truth["landcover"].attrs.get("flag_values", []))
    return [v for v, m in zip(values, meanings, strict=False) if m in names]


def _on_grid_of(mask: np.ndarray, truth: xr.Dataset, like: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """A boolean ``(y, x)`` mask on the truth's grid, reindexed onto ``like``'s (False outside)."""
    da = xr.DataArray(mask, dims=("y", "x"), coords={"y": truth["y"].values, "x": truth["x"].values})
    return da.reindex(
        y=like["y"].values, x=like["x"].values, method="nearest", tolerance=1.0, fill_value=False
    )


def interior_mask(truth: xr.Dataset, like: xr.Dataset | xr.DataArray, *, margin: int = 3) -> xr.DataArray:
    """Pixels of ``like``'s grid inside one land parcel.

    Inside means no field or land-cover edge within ``margin`` 10 m pixels, and not water, road
    or building. NDVI at a sharp edge mixes 10 m red with 20 m (Sentinel-2) or 30 m (Landsat)
    NIR, and NDVI of water divides noise by a small sum: errors there measure resolution, not
    gap filling. Scoring interiors separately shows what the time axis itself gains.

    Parameters
    ----------
    truth
        The simulator's truth, with ``landcover`` (and ``field_id`` when there are fields).
    like
        Sets the output grid.
    margin
        Distance to the nearest edge, in pixels.

    Returns
    -------
    xarray.DataArray
        Boolean ``(y, x)`` on ``like``'s grid.
    """
    from scipy import ndimage

    lc = truth["landcover"].values.astype(np.int32)
    fid = truth["field_id"].values.astype(np.int64) if "field_id" in truth else np.zeros_like(lc)
    label = lc * 1_000_000 + fid
    size = 2 * margin + 1
    same = ndimage.minimum_filter(label, size=size, mode="nearest") == ndimage.maximum_filter(
        label, size=size, mode="nearest"
    )
    ok = same & ~np.isin(lc, _landcover_codes(truth, ("water", "road", "building")))
    return _on_grid_of(ok, truth, like)


def land_mask(truth: xr.Dataset, like: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """Pixels of ``like``'s grid that are not water in the truth's land cover.

    NDVI of water is a ratio of two small reflectances: a small error in either swings it far,
    so water pixels (a few percent of the scene) can carry a large share of the squared error.

    Parameters
    ----------
    truth
        The simulator's truth, with ``landcover``.
    like
        Sets the output grid.

    Returns
    -------
    xarray.DataArray
        Boolean ``(y, x)`` on ``like``'s grid.
    """
    lc = truth["landcover"].values
    return _on_grid_of(~np.isin(lc, _landcover_codes(truth, ("water",))), truth, like)
