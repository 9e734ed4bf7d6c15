"""Job: search, load onto one 10 m grid, co-register, and write one Zarr store per acquisition.

Usage::

    python -m pipelines.ingest pipelines/configs/ingest.yaml [--dry-run] [--scheduler ADDR] [key=value ...]

What it writes under ``out``::

    scenes/<sensor>_<platform>_<YYYYmmddTHHMMSS>.zarr   one acquisition (time step) each, Zarr v3
    ledger.json      committed stores with the STAC item ids they hold; the grid (fixed by run 1)
    runs.jsonl       one line per run (new items, committed stores, seconds)
    performance-report.html   dask's report of the last run that computed anything

Incremental: a run searches the catalog, drops the items the ledger already holds, and loads
only the new Level-2 items and their Level-1 pan scenes. It writes the new Sentinel-2 stores
first, then measures each new Landsat scene's shift against the committed Sentinel-2 stores
within ``max_days`` (old and new; read back from Zarr) and writes the Landsat stores reloaded on
shifted grids. Because the grid is fixed by the first run and each shift depends only on the
scene and its references, a store is the same whichever run wrote it (a Sentinel-2 scene
published after its Landsat neighbour was ingested is not used for it retroactively). Each
store is committed by atomic rename and recorded in the ledger right after, so a killed run
resumes where it stopped. :func:`open_cube` reads all stores as one lazy cube.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pipelines.config import IngestConfig
from pipelines.state import Ledger

log = logging.getLogger(__name__)

__all__ = ["ingest", "open_cube", "unit_name", "main"]

STAGE = "ingest"


def exact_time_encoding(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its ``time`` stored as int64 microseconds (acquisition times carry fractions of
    a second, which xarray's default "days since" cannot hold exactly)."""
    if "time" in ds.coords:
        ds["time"].encoding.update(units="microseconds since 1970-01-01", dtype="int64")
    return ds


def unit_name(time: Any, sensor: str, platform: str) -> str:
    """Store name of one acquisition: ``scenes/<sensor>_<platform>_<YYYYmmddTHHMMSS>.zarr``."""
    t = pd.Timestamp(time)
    return f"scenes/{sensor}_{platform}_{t:%Y%m%dT%H%M%S}.zarr"


def _is_l1(item: Any) -> bool:
    return "l1" in (item.collection_id or "").lower()


def _l1_companions(l2: Any, l1_items: Sequence[Any]) -> list[Any]:
    """Level-1 scenes of the same platform within 12 hours of a Level-2 scene (its pan)."""
    plat = str(l2.properties.get("platform", "")).lower()
    return [
        it
        for it in l1_items
        if str(it.properties.get("platform", "")).lower() == plat
        and abs((it.datetime - l2.datetime).total_seconds()) < 12 * 3600
    ]


def _sensor_of(item: Any) -> str:
    return "landsat" if "landsat" in (item.collection_id or "").lower() else "sentinel-2"


def _select(items: Sequence[Any], done: set[str]) -> tuple[list[Any], list[str]]:
    """Items to load this run (new Level-2 items and their Level-1 pan scenes) and the new ids."""
    l1 = [it for it in items if _is_l1(it)]
    new = [it for it in items if not _is_l1(it) and it.id not in done]
    load = {it.id: it for it in new}
    for it in new:
        for c in _l1_companions(it, l1):
            load[c.id] = c
    return [it for it in items if it.id in load], [it.id for it in new]


def ingest(
    config: IngestConfig,
    *,
    dry_run: bool = False,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Run the ingest stage (see the module docstring).

    Parameters
    ----------
    config
        The stage's settings.
    dry_run
        Search and report which items are new, write nothing.
    scheduler
        Overrides ``config.scheduler`` (see :func:`pipelines.cluster.dask_scheduler`).

    Returns
    -------
    dict
        ``found`` (Level-2 items found), ``new`` (their ids not yet ingested), ``committed``
        (store names written this run), ``skipped`` (already there), ``seconds``, ``out``.

    Raises
    ------
    EmptySearchError
        On a first run that finds nothing.
    HarmonizeError
        If another run holds the output folder's lock.
    """
    from harmonize.catalog import search

    t0 = time.perf_counter()
    ledger = Ledger(config.out, STAGE)
    items = list(
        search(
            config.source,
            provider=config.provider,
            bbox=config.bbox,
            datetime=config.datetime,
            max_cloud=config.max_cloud,
            include_pan=True,
            require=not ledger.exists,
        )
    )
    done = ledger.items()
    to_load, new = _select(items, done)
    n_l2 = sum(not _is_l1(it) for it in items)
    report: dict[str, Any] = {
        "stage": STAGE,
        "out": str(config.out),
        "found": n_l2,
        "new": new,
        "skipped": n_l2 - len(new),
        "committed": [],
        "dry_run": dry_run,
    }
    log.info("ingest: %d Level-2 items found, %d new, %d already ingested", n_l2, len(new), n_l2 - len(new))
    if dry_run:
        for i in new:
            log.info("would ingest %s", i)
        report["seconds"] = time.perf_counter() - t0
        return report
    with ledger.lock():
        ledger.clean()
        if new:
            from pipelines.cluster import dask_scheduler

            with dask_scheduler(
                scheduler or config.scheduler,
                report=config.out / "performance-report.html",
                **config.cluster_kwargs(),
            ):
                report["committed"] = _ingest_new(config, ledger, to_load, set(new))
        report["seconds"] = round(time.perf_counter() - t0, 3)
        ledger.log_run(new=new, committed=report["committed"], seconds=report["seconds"])
    log.info("ingest: committed %d store(s) in %.1f s", len(report["committed"]), report["seconds"])
    return report


def _ingest_new(config: IngestConfig, ledger: Ledger, items: list[Any], new: set[str]) -> list[str]:
    """Write the new Sentinel-2 stores, then co-register the new Landsat scenes against the
    Sentinel-2 stores (new and old) within ``max_days`` and write their stores."""
    from harmonize.cube import load_cube
    from harmonize.grid import geobox_from_dict, geobox_to_dict

    geobox = geobox_from_dict(ledger.meta["geobox"]) if "geobox" in ledger.meta else None
    cube = load_cube(
        items,
        geobox=geobox,
        bbox=config.bbox if geobox is None else None,
        resolution=config.resolution,
        provider=config.provider,
        chunks={"time": 1, "y": config.chunk, "x": config.chunk},
    )
    if geobox is None:
        ledger.meta["geobox"] = geobox_to_dict(cube.odc.geobox)
        ledger.meta["source"] = config.source
        ledger.save()
    sensors = np.asarray(cube["sensor"].values).astype(str)
    ids = [str(v).split(",") for v in cube["item_id"].values]
    todo = [i for i, step in enumerate(ids) if new & set(step)]
    s2_todo = [i for i in todo if sensors[i] != "landsat"]
    ls_todo = [i for i in todo if sensors[i] == "landsat"]
    by_id = {it.id: it for it in items}
    l1 = [it for it in items if _is_l1(it)]

    committed = _write_steps(config, ledger, cube, s2_todo, ids, by_id, l1)
    if ls_todo and config.coregister:
        cube = _coregistered(config, ledger, cube, ls_todo, items)
    committed += _write_steps(config, ledger, cube, ls_todo, ids, by_id, l1)
    return committed


def _coregistered(
    config: IngestConfig, ledger: Ledger, cube: xr.Dataset, ls_todo: list[int], items: Sequence[Any]
) -> xr.Dataset:
    """The Landsat steps ``ls_todo`` of ``cube``, reloaded on grids shifted onto Sentinel-2.

    The references are the committed Sentinel-2 stores within ``max_days`` (read back from
    Zarr: cheaper than the COGs again, and the same whichever run wrote them). The shifts are
    measured on the Landsat items loaded with the matching bands alone: ``clear`` of the full
    cube would read every band (no data in any band makes a pixel not clear), ~5 s of the
    demo's co-registration for nothing.
    """
    from harmonize.coregister import DEFAULT_BANDS, coregister, estimate_shifts
    from harmonize.cube import load_cube

    times = pd.DatetimeIndex(cube["time"].values[ls_todo])
    window = pd.Timedelta(days=config.max_days)
    refs = []
    for name, unit in ledger.units.items():
        if unit.get("sensor") != "sentinel-2" or not ledger.committed(name):
            continue
        t = pd.Timestamp(unit["time"])
        if (abs(times - t) <= window).any():
            refs.append(ledger.unit_path(name))
    if not refs:
        log.warning(
            "no Sentinel-2 scene within %g days of the new Landsat scenes: not co-registered", config.max_days
        )
        return cube
    reference = _concat_units(sorted(refs))
    moving = cube.isel(time=ls_todo)
    wanted = {i for step in moving["item_id"].values for i in str(step).split(",")}
    probe = load_cube(
        [it for it in items if it.id in wanted],
        list(DEFAULT_BANDS),
        geobox=cube.odc.geobox,
        provider=config.provider,
        chunks={"time": 1, "y": config.chunk, "x": config.chunk},
    )
    table = estimate_shifts(probe, reference, max_days=config.max_days, progress=config.progress)
    ok = table[~table["flagged"]] if "flagged" in table else table
    log.info(
        "co-registration: %d Landsat scene(s) against %d Sentinel-2 store(s), median |shift| %.1f m, "
        "%d not measured",
        len(table),
        len(refs),
        float(np.median(np.hypot(ok["dx"], ok["dy"]))) if len(ok) else float("nan"),
        len(table) - len(ok),
    )
    return coregister(moving, shifts=table)


def _write_steps(
    config: IngestConfig,
    ledger: Ledger,
    cube: xr.Dataset,
    todo: list[int],
    ids: list[list[str]],
    by_id: dict[str, Any],
    l1: list[Any],
) -> list[str]:
    """Write the steps ``todo`` (positions in the loaded cube; found in ``cube`` by item ids) as
    stores, ``batch`` at a time, committing each."""
    import dask

    from harmonize.io import write_zarr

    committed: list[str] = []
    step_ids = [str(v) for v in cube["item_id"].values]
    for start in range(0, len(todo), config.batch):
        jobs = []
        for i in todo[start : start + config.batch]:
            key = ",".join(ids[i])
            step = cube.isel(time=[step_ids.index(key)])
            docs = [by_id[k] for k in ids[i] if k in by_id]
            companions = [c for it in docs for c in _l1_companions(it, l1)]
            unit_items = [it.id for it in docs] + [c.id for c in companions]
            step.attrs = {
                "stac_items": [it.to_dict(transform_hrefs=False) for it in (*docs, *companions)],
                "harmonize_load": {**cube.attrs.get("harmonize_load", {}), "shifts": None},
                "harmonize_stage": STAGE,
            }
            sensor = str(np.asarray(step["sensor"].values)[0])
            t = step["time"].values[0]
            name = unit_name(t, sensor, str(step["platform"].values[0]))
            tmp = ledger.tmp_path(Path(name).name)
            info = {"sensor": sensor, "time": pd.Timestamp(t).isoformat()}
            step = exact_time_encoding(step)
            jobs.append((name, tmp, unit_items, info, write_zarr(step, tmp, mode="w-", compute=False)))
        dask.compute(*[j[4] for j in jobs])
        for name, tmp, unit_items, info, _ in jobs:
            ledger.commit(name, tmp, unit_items, **info)
            committed.append(name)
            log.info("committed %s (%s)", name, ", ".join(unit_items))
    return committed


def open_cube(out: str | Path) -> xr.Dataset:
    """All stores an ingest run committed under ``out``, as one lazy cube sorted by time.

    The result is what :func:`harmonize.cube.load_cube` (and co-registration) gave: dims
    ``(time, y, x)``, reflectance bands, ``pan``, ``clear``, ``sensor``/``platform``/``item_id``
    time coordinates (fixed-width strings), CRS, and the STAC items in ``attrs["stac_items"]``.

    Raises
    ------
    HarmonizeError
        If ``out`` holds no committed store.
    """
    from harmonize.errors import HarmonizeError

    ledger = Ledger(out, STAGE)
    paths = ledger.committed_paths()
    if not paths:
        raise HarmonizeError(f"{out} holds no ingested scenes; run the ingest stage first")
    return _concat_units(paths)


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


def _concat_units(paths: Sequence[Path]) -> xr.Dataset:
    import rioxarray  # noqa: F401 - .rio accessor

    parts = [_open_unit(Path(p)) for p in paths]
    # Sentinel-2 stores carry no co-registration quality coordinates: fill them in
    kinds = {c: v.dtype for part in parts for c, v in part.coords.items() if v.dims == ("time",)}
    fill = {"b": False, "f": np.nan, "i": 0}
    for k, part in enumerate(parts):
        missing = {
            c: (
                "time",
                np.full(part.sizes["time"], fill.get(dt.kind, ""), dtype=dt if dt.kind in fill else object),
            )
            for c, dt in kinds.items()
            if c not in part.coords
        }
        if missing:
            parts[k] = part.assign_coords(missing)
    docs: list[dict[str, Any]] = []
    for p in parts:
        docs.extend(p.attrs.get("stac_items", []))
    attrs = {k: v for k, v in parts[0].attrs.items() if k not in ("stac_items", "coordinates")}
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
    for c in ("sensor", "platform", "item_id"):
        if c in ds.coords:
            ds = ds.assign_coords({c: ("time", np.asarray(ds[c].values).astype(object).astype(str))})
    ds.attrs = {**attrs, "stac_items": docs}
    crs = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds.coords else None
    if crs is not None and ds.rio.crs is None:
        ds = ds.rio.write_crs(crs)
    return ds


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.ingest CONFIG.yaml [--dry-run] [--scheduler ADDR] [key=value ...]``."""
    from pipelines.run import cli_main

    return cli_main(argv, stage=STAGE)


if __name__ == "__main__":
    sys.exit(main())
