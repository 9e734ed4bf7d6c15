"""Where each sensor's acquisitions sit in a cube: time positions, times and solar days.

A pair index and the dataset that reads it both take either one combined cube (a ``sensor``
time coordinate, as :func:`harmonize.cube.load_cube` makes) or a ``(landsat, sentinel2)`` pair of
datasets; this module turns either into the two sources and their time positions. No torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.errors import HarmonizeError

__all__ = [
    "LANDSAT",
    "SENTINEL2",
    "split_sources",
    "is_dataset_pair",
    "acquisition_times",
    "position_map",
    "solar_offset",
]

#: ``sensor`` coordinate values of the two sources.
LANDSAT = "landsat"
SENTINEL2 = "sentinel-2"


def solar_offset(obj: Any) -> pd.Timedelta:
    """UTC -> local mean solar time offset at the centre of a cube (0 when it has no geobox)."""
    try:
        centre = obj.odc.geobox.extent.centroid.to_crs("EPSG:4326")
        lon = float(centre.points[0][0])
    except Exception:  # no geobox, no CRS: fall back to UTC days
        return pd.Timedelta(0)
    return pd.Timedelta(hours=lon / 15.0)


def _sensor_positions(cube: xr.Dataset, sensor: str) -> np.ndarray:
    if "sensor" not in cube.coords:
        raise HarmonizeError(
            "the cube has no 'sensor' time coordinate; load it with harmonize.cube.load_cube, or "
            "pass (landsat_cube, sentinel2_cube) as a pair"
        )
    values = np.asarray(cube["sensor"].values).astype(str)
    return np.flatnonzero(values == sensor)


def is_dataset_pair(obj: Any) -> bool:
    """Whether ``obj`` is a ``(landsat, sentinel2)`` pair of datasets."""
    return isinstance(obj, Sequence) and len(obj) == 2 and all(isinstance(c, xr.Dataset) for c in obj)


def split_sources(cube: Any) -> tuple[xr.Dataset, np.ndarray, xr.Dataset, np.ndarray]:
    """Split a combined cube or a ``(landsat, sentinel2)`` pair into sources and time positions.

    Returns
    -------
    tuple
        ``(landsat, landsat_positions, sentinel2, sentinel2_positions)``: for a combined cube both
        sources are the cube itself and the positions select each sensor's time steps.
    """
    if isinstance(cube, xr.Dataset):
        return (
            cube,
            _sensor_positions(cube, LANDSAT),
            cube,
            _sensor_positions(cube, SENTINEL2),
        )
    if is_dataset_pair(cube):
        landsat, s2 = cube
        return landsat, np.arange(landsat.sizes["time"]), s2, np.arange(s2.sizes["time"])
    raise HarmonizeError(
        f"expected a combined cube or a (landsat, sentinel2) pair of datasets, not {type(cube).__name__}"
    )


def acquisition_times(obj: Any) -> pd.DatetimeIndex:
    """The ``time`` coordinate of a dataset or array (or a sequence of datetimes) as an index."""
    if isinstance(obj, xr.Dataset | xr.DataArray):
        obj = obj["time"].values
    return pd.DatetimeIndex(np.asarray(obj, dtype="datetime64[ns]"))


def position_map(times: pd.DatetimeIndex, positions: np.ndarray) -> dict[np.datetime64, int]:
    """Time -> first position in the cube (duplicate times keep the first)."""
    out: dict[np.datetime64, int] = {}
    for t, p in zip(times.values, positions, strict=True):
        out.setdefault(t, int(p))
    return out
