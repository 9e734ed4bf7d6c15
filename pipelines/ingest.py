"""Job: search, load onto one 10 m grid, co-register, and write one Zarr store per acquisition.

Usage::

    python -m pipelines.ingest pipelines/configs/ingest.yaml [--dry-run] [--scheduler ADDR] [key=value ...]

What it writes under ``out``::

    scenes/<sensor>_<platform>_<YYYYmmddTHHMMSS>.zarr   one acquisition (time step) each, Zarr v3
    ledger.json      committed stores with the STAC item ids they hold; the grid (fixed by run 1)
    runs.jsonl       one line per run (new items, committed stores, seconds)
    performance-report.html   dask's report of the last run that computed anything

Incremental: a run searches the catalog, drops the items the ledger already holds, and loads
only the new Level-2 items, their Level-1 pan scenes, and the Sentinel-2 scenes within
``max_days`` of a new Landsat scene (the co-registration references). Because the grid is fixed
by the first run and each Landsat shift depends only on its own references, a store is the same
whichever run wrote it. Each store is committed by atomic rename and recorded in the ledger right
after, so a killed run resumes where it stopped. :func:`open_cube` reads all stores as one lazy
cube.
"""

from __future__ import annotations

import logging
import sys
import time
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


def _select(items: Sequence[Any], done: set[str], max_days: float, coregister: bool) -> tuple[list[Any], list[str]]:
    """Items to load this run (new L2 + their L1 + references) and the new L2 ids."""
    l1 = [it for it in items if _is_l1(it)]
    l2 = [it for it in items if not _is_l1(it)]
    new = [it for it in l2 if it.id not in done]
    load = {it.id: it for it in new}
    for it in new:
        for c in _l1_companions(it, l1):
            load[c.id] = c
    new_landsat = [it for it in new if _sensor_of(it) == "landsat"]
    if coregister and new_landsat:
        window = pd.Timedelta(days=max_days)
        for s2 in (it for it in l2 if _sensor_of(it) == "sentinel-2"):
            if any(abs(pd.Timestamp(s2.datetime) - pd.Timestamp(ls.datetime)) <= window for ls in new_landsat):
                load.setdefault(s2.id, s2)
    ordered = [it for it in items if it.id in load]
    return ordered, [it.id for it in new]


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
    to_load, new = _select(items, done, config.max_days, config.coregister)
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
    import dask

    from harmonize.coregister import coregister, estimate_shifts
    from harmonize.cube import load_cube
    from harmonize.grid import geobox_from_dict, geobox_to_dict
    from harmonize.io import write_zarr

    geobox = geobox_from_dict(ledger.meta["geobox"]) if "geobox" in ledger.meta else None
    chunks = {"time": 1, "y": config.chunk, "x": config.chunk}
    cube = load_cube(
        items,
        geobox=geobox,
        bbox=config.bbox if geobox is None else None,
        resolution=config.resolution,
        provider=config.provider,
        chunks=chunks,
    )
    if geobox is None:
        ledger.meta["geobox"] = geobox_to_dict(cube.odc.geobox)
        ledger.meta["source"] = config.source
        ledger.save()

    sensors = np.asarray(cube["sensor"].values).astype(str)
    ids = [str(v).split(",") for v in cube["item_id"].values]
    todo = [i for i, step in enumerate(ids) if new & set(step)]
    if config.coregister and (sensors[todo] == "landsat").any():
        if (sensors == "sentinel-2").any():
            table = estimate_shifts(cube, max_days=config.max_days, progress=config.progress)
            log.info(
                "co-registration: %d Landsat scene(s), median |shift| %.1f m, %d flagged",
                len(table),
                float(np.nanmedian(np.hypot(table["dx"], table["dy"]))) if len(table) else float("nan"),
                int(table["flagged"].sum()) if "flagged" in table else 0,
            )
            cube = coregister(cube, shifts=table)
        else:
            log.warning("no Sentinel-2 scene within %g days of the new Landsat scenes: not co-registered",
                        config.max_days)

    by_id = {it.id: it for it in items}
    l1 = [it for it in items if _is_l1(it)]
    committed: list[str] = []
    for start in range(0, len(todo), config.batch):
        batch = todo[start : start + config.batch]
        jobs = []
        for i in batch:
            step = cube.isel(time=[i])
            l2_ids = ids[i]
            docs = [by_id[k] for k in l2_ids if k in by_id]
            companions = [c for it in docs for c in _l1_companions(it, l1)]
            unit_items = [it.id for it in docs] + [c.id for c in companions]
            step.attrs = {
                "stac_items": [it.to_dict(transform_hrefs=False) for it in (*docs, *companions)],
                "harmonize_load": {**cube.attrs.get("harmonize_load", {}), "shifts": None},
                "harmonize_stage": STAGE,
            }
            name = unit_name(step["time"].values[0], sensors[i], str(step["platform"].values[0]))
            tmp = ledger.tmp_path(Path(name).name)
            jobs.append((name, tmp, unit_items, write_zarr(step, tmp, mode="w-", compute=False)))
        dask.compute(*[j[3] for j in jobs])
        for name, tmp, unit_items, _ in jobs:
            ledger.commit(name, tmp, unit_items, sensor=name.split("/")[1].split("_")[0])
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
    names = sorted(n for n in ledger.units if ledger.unit_path(n).exists())
    if not names:
        raise HarmonizeError(f"{out} holds no ingested scenes; run the ingest stage first")
    return _concat_units([ledger.unit_path(n) for n in names])


def _concat_units(paths: Sequence[Path]) -> xr.Dataset:
    import rioxarray  # noqa: F401 - .rio accessor

    parts = []
    for p in paths:
        part = xr.open_zarr(p, chunks={})
        small = [c for c, v in part.coords.items() if v.dims == ("time",)]
        parts.append(part.assign_coords({c: part[c].load() for c in small}))
    docs: list[dict[str, Any]] = []
    for p in parts:
        docs.extend(p.attrs.get("stac_items", []))
    attrs = {k: v for k, v in parts[0].attrs.items() if k not in ("stac_items", "coordinates")}
    ds = xr.concat(parts, dim="time", data_vars="minimal", coords="minimal", compat="override",
                   join="exact", combine_attrs="drop")
    ds = ds.isel(time=np.argsort(ds["time"].values, kind="stable"))
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
