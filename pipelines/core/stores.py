"""Reading and writing the stages' Zarr stores: the readers every later stage and the demo use.

Each stage commits its units (one Zarr store per acquisition, per harmonized date, per product)
through a :class:`~pipelines.core.ledger.Ledger`. The functions here open what a stage committed,
so no stage reaches into another stage's module:

- :func:`open_cube`: the ingest stage's scenes as one lazy cube;
- :func:`open_harmonized`: the infer stage's dates as one lazy cube;
- :func:`open_timeseries`: the time-series stage's products;
- :func:`read_index`, :func:`model_package`: the pairs stage's index, the train stage's package.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.errors import HarmonizeError
from harmonize.timeseries import labels
from pipelines.core.ledger import Ledger

__all__ = [
    "INGEST",
    "PAIRS",
    "TRAIN",
    "INFER",
    "TIMESERIES",
    "INDEX",
    "TIMESERIES_STORES",
    "exact_time_encoding",
    "inputs_fingerprint",
    "open_units",
    "open_cube",
    "open_harmonized",
    "open_timeseries",
    "read_index",
    "read_observations",
    "model_package",
]

#: Ledger names of the stages (a ledger of one stage refuses another).
INGEST, PAIRS, TRAIN, INFER, TIMESERIES = "ingest", "pairs", "train", "infer", "timeseries"
#: The pairs stage's index file.
INDEX = "index.parquet"
#: The time-series stage's stores.
TIMESERIES_STORES = ("observations.zarr", "ndvi.zarr", "phenology.zarr")


def exact_time_encoding(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its ``time`` stored as int64 microseconds (acquisition times carry fractions of
    a second, which xarray's default "days since" cannot hold exactly)."""
    if "time" in ds.coords:
        ds["time"].encoding.update(units="microseconds since 1970-01-01", dtype="int64")
    return ds


def inputs_fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able inputs (ledger fingerprints, settings)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Opened stores by (path, mtime of its zarr.json). A committed store never changes in place (a
#: re-commit renames a new directory over it, with a new zarr.json), so every stage of one
#: process (the demo runs six) can share one opening instead of re-reading 100+ stores' metadata.
_OPENED: OrderedDict[tuple[str, int], xr.Dataset] = OrderedDict()
_OPENED_MAX = 4096


def _open_unit(path: Path) -> xr.Dataset:
    """One committed store, lazy, with its small per-time coordinates in memory."""
    try:
        key = (str(path.resolve()), (path / "zarr.json").stat().st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _OPENED:
        _OPENED.move_to_end(key)
        return _OPENED[key]
    # open without dask, read the 1-D time coordinates directly (a dask compute per coordinate
    # per store costs more than the whole opening), then chunk the data as stored
    part = xr.open_zarr(path, chunks=None)
    small = {c: part[c].load() for c, v in part.coords.items() if v.dims == ("time",)}
    chunks = {
        d: n for v in part.data_vars.values() for d, n in v.encoding.get("preferred_chunks", {}).items()
    }
    part = part.drop_vars(list(small)).chunk(chunks).assign_coords(small)
    if key is not None:
        _OPENED[key] = part
        while len(_OPENED) > _OPENED_MAX:
            _OPENED.popitem(last=False)
    return part


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


def open_units(paths: Sequence[str | Path]) -> xr.Dataset:
    """Committed per-time stores as one lazy dataset sorted by time.

    String coordinates on ``time`` (``sensor``, ``platform``, ``item_id`` …) come back as
    fixed-width strings, and the CRS is attached.
    """
    import rioxarray  # noqa: F401 - .rio accessor

    parts = _with_all_variables(_with_all_time_coords([_open_unit(Path(p)) for p in paths]))
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


def _committed(out: str | Path, stage: str, what: str) -> list[Path]:
    paths = Ledger(out, stage).committed_paths()
    if not paths:
        raise HarmonizeError(f"{out} holds no {what}; run the {stage} stage first")
    return paths


def open_cube(out: str | Path) -> xr.Dataset:
    """All scenes an ingest run committed under ``out``, as one lazy cube sorted by time.

    The result is what :func:`harmonize.cube.load_cube` gave (co-registered): dims
    ``(time, y, x)``, reflectance bands, ``pan``, ``clear``, the ``sensor``/``platform``/
    ``item_id`` time coordinates (fixed-width strings) and the CRS.

    Raises
    ------
    HarmonizeError
        If ``out`` holds no committed store.
    """
    return open_units(_committed(out, INGEST, "ingested scenes"))


def open_harmonized(out: str | Path) -> xr.Dataset:
    """All harmonized dates an infer run committed under ``out``, as one lazy cube sorted by time.

    Raises
    ------
    HarmonizeError
        If ``out`` holds no committed date.
    """
    return open_units(_committed(out, INFER, "harmonized dates"))


def _labels(ds: xr.Dataset, dim: str) -> xr.Dataset:
    for c in ("sensor", "platform"):
        if c in ds.coords:
            ds = ds.assign_coords({c: (dim, labels(ds[c].values))})
    return ds


def open_timeseries(out: str | Path) -> xr.Dataset:
    """The products of a timeseries run under ``out`` as one lazy Dataset.

    Variables: ``ndvi`` (gap-filled, ``time``), ``observations`` (clear-sky NDVI on its own
    ``obs_time`` axis, with ``sensor``), and the phenology variables (``sos``, ``pos``, ``eos``,
    ``los``, ``peak_ndvi``, ``base_ndvi``, ``amplitude``) on ``(y, x)``.

    Raises
    ------
    HarmonizeError
        If a product is missing.
    """
    root = Path(out)
    ledger = Ledger(root, TIMESERIES)
    missing = [s for s in TIMESERIES_STORES if not ledger.committed(s)]
    if missing:
        raise HarmonizeError(f"{root} lacks {missing}; run the timeseries stage first")
    filled = xr.open_zarr(root / "ndvi.zarr")
    obs = xr.open_zarr(root / "observations.zarr").rename(time="obs_time", ndvi="observations")
    obs = _labels(obs.drop_vars("spatial_ref", errors="ignore"), "obs_time")
    phen = xr.open_zarr(root / "phenology.zarr").drop_vars("spatial_ref", errors="ignore")
    return xr.merge([filled, obs, phen], compat="override", join="exact", combine_attrs="drop_conflicts")


def read_observations(path: str | Path) -> xr.DataArray:
    """The stored NDVI observations, lazy, chunked time-whole per spatial block for gap-filling."""
    obs = _labels(xr.open_zarr(path), "time")["ndvi"]
    return obs.chunk({"time": -1, "y": 256, "x": 256})


def read_index(out: str | Path) -> pd.DataFrame:
    """The pair index a pairs run wrote under ``out`` (its settings in ``attrs["config"]``, which
    parquet keeps)."""
    return pd.read_parquet(Path(out) / INDEX)


def model_package(out: str | Path) -> Path:
    """The model package folder a train run wrote under ``out``."""
    return Path(out) / "model"

