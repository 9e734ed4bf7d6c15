"""An optional reference for the pairs: reflectance on ``time, y, x`` aligned to a cube.

A reference (a noise-free reflectance product, say) lets a dataset serve, beside each
Sentinel-2 target, the reference at that acquisition's date and pixels, and lets training score
against it. This module opens a reference store and finds, for each Sentinel-2 acquisition of an
index, the reference's time position and pixel offset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.errors import HarmonizeError, NoOverlapError, UnknownBandError
from harmonize.pairs.sources import solar_offset

__all__ = ["open_reference_store", "align_reference"]


def open_reference_store(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a Zarr reference store lazily, float64 reflectance cast to float32.

    Parameters
    ----------
    path
        A Zarr (v3) store of reflectance variables named like the bands, on ``time, y, x``
        (CF-decoded integer stores come back as float64, hence the cast).

    Returns
    -------
    xarray.Dataset
        dask-backed (one chunk per stored chunk).

    Raises
    ------
    HarmonizeError
        If ``path`` is not a Zarr store.
    """
    if not (Path(path) / "zarr.json").exists():
        raise HarmonizeError(f"{path} is not a Zarr store; pass the reference store's folder")
    ds = xr.open_zarr(path, chunks={}, consolidated=False, decode_coords="all")
    return ds.assign({k: v.astype(np.float32) for k, v in ds.data_vars.items() if v.dtype == np.float64})


def align_reference(
    reference: xr.Dataset | xr.DataArray, bands: Sequence[str], cube: xr.Dataset, s2_times: pd.Series
) -> tuple[xr.Dataset, np.ndarray, tuple[int, int]]:
    """Check a reference against the cube; its time positions and pixel offset.

    Parameters
    ----------
    reference
        Variables named like ``bands`` on ``time, y, x`` (or a DataArray with a ``band`` dim), on
        the cube's grid or a grid containing it. Times that are all midnights are dates: each
        Sentinel-2 acquisition takes its local solar date; otherwise the nearest time within 12 h.
    bands
        The bands to serve.
    cube
        The Sentinel-2 source (for its grid and solar offset).
    s2_times
        The Sentinel-2 acquisition of each sample.

    Returns
    -------
    tuple
        ``(reference[bands], time position per sample, (y offset, x offset))``.
    """
    if isinstance(reference, xr.DataArray):
        reference = reference.to_dataset("band")
    missing = [b for b in bands if b not in reference]
    if missing:
        raise UnknownBandError(f"the reference dataset lacks {missing}")
    reference = reference[list(bands)]
    return reference, _time_positions(reference, cube, s2_times), _pixel_offsets(reference, cube)


def _time_positions(reference: xr.Dataset, cube: xr.Dataset, s2_times: pd.Series) -> np.ndarray:
    tindex = pd.DatetimeIndex(reference["time"].values)
    wanted = pd.DatetimeIndex(s2_times.values)
    if (tindex == tindex.normalize()).all():
        # a reference per date: take the Sentinel-2 acquisition's local solar date
        pos = tindex.get_indexer((wanted + solar_offset(cube)).normalize())
    else:
        pos = tindex.get_indexer(wanted, method="nearest", tolerance=pd.Timedelta("12h"))
    if (pos < 0).any():
        missing = wanted[pos < 0][0]
        raise HarmonizeError(
            f"the reference dataset has no time for the Sentinel-2 acquisition of {missing}; pass the "
            "reference of the same place and period"
        )
    return pos.astype(np.int64)


def _pixel_offsets(reference: xr.Dataset, cube: xr.Dataset) -> tuple[int, int]:
    offsets = []
    for dim in ("y", "x"):
        if dim in reference.coords and dim in cube.coords and cube.sizes[dim] > 1:
            c = cube[dim].values
            res = abs(float(c[1] - c[0]))
            idx = pd.Index(reference[dim].values).get_indexer(c[[0, -1]], method="nearest", tolerance=res / 2)
            if (idx < 0).any() or idx[1] - idx[0] != len(c) - 1:
                raise NoOverlapError(f"the reference grid does not contain the cube's {dim} pixels")
            offsets.append(int(idx[0]))
        elif reference.sizes[dim] == cube.sizes[dim]:
            offsets.append(0)
        else:
            raise NoOverlapError("the reference dataset is not on the cube's grid")
    return offsets[0], offsets[1]
