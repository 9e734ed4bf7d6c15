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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from harmonize.errors import HarmonizeError
from harmonize.timeseries import labels
from pipelines.core.ledger import Ledger
from pipelines.core.units import combine_units, open_unit_path, open_unit_store

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
    "open_unit_path",
    "open_unit_store",
    "combine_units",
    "open_committed",
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


def open_units(paths: Sequence[str | Path]) -> xr.Dataset:
    """Committed per-time stores as one lazy dataset sorted by time.

    String coordinates on ``time`` (``sensor``, ``platform``, ``item_id`` …) come back as
    fixed-width strings, and the CRS is attached.
    """
    return combine_units([open_unit_path(Path(p)) for p in paths])


def open_committed(ledger: Ledger, names: Sequence[str] | None = None) -> xr.Dataset:
    """Units of a ledger (default: all committed) as one lazy dataset, from its folders or from
    one snapshot of its cube repository (the ledger's, so every unit is of the same commit)."""
    names = [n for n in sorted(ledger.units) if ledger.committed(n)] if names is None else list(names)
    if ledger.repo is not None:
        return ledger.repo.open(names, snapshot=ledger.snapshot)
    return open_units([ledger.unit_path(n) for n in names])


def _open_stage(out: str | Path, stage: str, what: str) -> xr.Dataset:
    from pipelines.core.cubestore import CubeRepo, is_remote

    if is_remote(out):  # a cube repository itself, e.g. s3://bucket/cube
        return CubeRepo(out).open()
    ledger = Ledger(out, stage)
    if not any(ledger.committed(n) for n in ledger.units):
        raise HarmonizeError(f"{out} holds no {what}; run the {stage} stage first")
    return open_committed(ledger)


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
    return _open_stage(out, INGEST, "ingested scenes")


def open_harmonized(out: str | Path) -> xr.Dataset:
    """All harmonized dates an infer run committed under ``out``, as one lazy cube sorted by time.

    Raises
    ------
    HarmonizeError
        If ``out`` holds no committed date.
    """
    return _open_stage(out, INFER, "harmonized dates")


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
