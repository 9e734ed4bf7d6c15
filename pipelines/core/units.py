"""Opening committed per-time Zarr stores and combining them into one lazy cube.

Used by :mod:`pipelines.core.stores` (folders) and :mod:`pipelines.core.cubestore` (groups of
a cube repository); it knows neither ledgers nor repositories.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from harmonize.timeseries import labels
from pipelines.core.native import is_native, ten_metre_view

__all__ = ["open_unit_store", "open_unit_path", "combine_units"]


#: Opened stores by key: (path, mtime of its zarr.json) for a folder, (repository, snapshot,
#: group) for a cube repository. A committed store never changes in place (a re-commit renames a
#: new directory over it, with a new zarr.json; a snapshot is immutable), so every stage of one
#: process (the demo runs six) can share one opening instead of re-reading 100+ stores' metadata.
_OPENED: OrderedDict[Any, xr.Dataset] = OrderedDict()
_OPENED_MAX = 4096


def open_unit_store(store: Any, *, group: str | None = None, key: Any = None) -> xr.Dataset:
    """One committed store (a path, or a Zarr store and ``group``), lazy, with its small
    per-time coordinates in memory; cached under ``key`` when given."""
    if key is not None and key in _OPENED:
        _OPENED.move_to_end(key)
        return _OPENED[key]
    # open without dask, read the 1-D time coordinates directly (a dask compute per coordinate
    # per store costs more than the whole opening), then chunk the data as stored
    part = xr.open_zarr(store, group=group, chunks=None, consolidated=None if group is None else False)
    small = {c: part[c].load() for c, v in part.coords.items() if v.dims == ("time",)}
    chunks = {
        d: n for v in part.data_vars.values() for d, n in v.encoding.get("preferred_chunks", {}).items()
    }
    part = part.drop_vars(list(small)).chunk(chunks).assign_coords(small)
    if is_native(part):  # Landsat at 30 m / 15 m: the stages read its lazy 10 m view
        part = ten_metre_view(part)
    if key is not None:
        _OPENED[key] = part
        while len(_OPENED) > _OPENED_MAX:
            _OPENED.popitem(last=False)
    return part


def open_unit_path(path: Path) -> xr.Dataset:
    """One committed Zarr folder (see :func:`open_unit_store`), cached by its ``zarr.json``'s mtime."""
    try:
        key: Any = (str(path.resolve()), (path / "zarr.json").stat().st_mtime_ns)
    except OSError:
        key = None
    return open_unit_store(path, key=key)


def _flat_graphs(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with each variable's dask graph materialised into one flat layer.

    Concatenated stores give a graph of one layer per store (plus the sort); every later
    ``.compute()`` of a small window culls all of them again, which made a 64 px training patch
    cost ~0.23 s. One materialised layer per variable (the same tasks) makes it ~0.08 s.
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    out = ds.copy()
    for name, var in ds.data_vars.items():
        a = var.data
        if isinstance(a, da.Array):
            graph = HighLevelGraph.from_collections(a.name, dict(a.__dask_graph__()), dependencies=())
            out[name] = var.copy(data=da.Array(graph, a.name, a.chunks, meta=a._meta))
    return out


def _with_all_time_coords(parts: list[xr.Dataset]) -> list[xr.Dataset]:
    """Give every store the per-time coordinates any store has (Sentinel-2 stores carry no
    co-registration quality, for instance), filled with a neutral value."""
    kinds = {c: v.dtype for part in parts for c, v in part.coords.items() if v.dims == ("time",)}
    fill = {"b": False, "f": np.nan, "i": 0}
    out = []
    for part in parts:
        missing = {
            c: (
                "time",
                np.full(part.sizes["time"], fill.get(dt.kind, ""), dtype=dt if dt.kind in fill else object),
            )
            for c, dt in kinds.items()
            if c not in part.coords
        }
        out.append(part.assign_coords(missing) if missing else part)
    return out


def _with_all_variables(parts: list[xr.Dataset]) -> list[xr.Dataset]:
    """Give every store the variables any store has, lazily filled with NaN (False for masks):
    each sensor's stores carry their own bands (Sentinel-2 has no ``pan``)."""
    import dask.array as da

    kinds = {v: var.dtype for part in parts for v, var in part.data_vars.items()}
    out = []
    for part in parts:
        missing = [v for v in kinds if v not in part.data_vars]
        if missing:
            like = next(iter(part.data_vars.values()))
            chunks = like.chunks or tuple((n,) for n in like.shape)
            fill = {v: (False if kinds[v].kind == "b" else np.nan) for v in missing}
            part = part.assign(
                {v: (like.dims, da.full(like.shape, fill[v], dtype=kinds[v], chunks=chunks)) for v in missing}
            )
        out.append(part)
    return out


def combine_units(units: Sequence[xr.Dataset]) -> xr.Dataset:
    """Opened per-time stores (:func:`open_unit_store`) as one lazy dataset sorted by time (see
    :func:`open_units`)."""
    import rioxarray  # noqa: F401 - .rio accessor

    parts = _with_all_variables(_with_all_time_coords(list(units)))
    attrs = {k: v for k, v in parts[0].attrs.items() if k != "coordinates"}
    ds = xr.concat(
        parts,
        dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="exact",
        combine_attrs="drop",
    )
    ds = _flat_graphs(ds.isel(time=np.argsort(ds["time"].values, kind="stable")))
    for c, v in ds.coords.items():
        if v.dims == ("time",) and v.dtype.kind in "OUT":
            ds = ds.assign_coords({c: ("time", labels(v.values))})
    ds.attrs = attrs
    crs = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds.coords else None
    if crs is not None and ds.rio.crs is None:
        ds = ds.rio.write_crs(crs)
    return ds
