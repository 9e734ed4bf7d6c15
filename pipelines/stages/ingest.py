"""Job: search, load onto one 10 m grid, co-register, and write one Zarr store per acquisition.

Usage::

    python -m pipelines.stages.ingest pipelines/configs/ingest.yaml [--dry-run] [--scheduler ADDR] [key=value ...]

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
resumes where it stopped. :func:`pipelines.core.stores.open_cube` reads all stores as one lazy cube.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from pydantic import Field

from pipelines.core.cli import stage_main
from pipelines.core.config import StageConfig
from pipelines.core.ledger import Ledger
from pipelines.core.stores import INGEST, exact_time_encoding, open_units

log = logging.getLogger(__name__)

__all__ = ["IngestConfig", "ingest", "unit_name", "main"]


class IngestConfig(StageConfig):
    """Search, load onto one 10 m grid, co-register, and write one Zarr store per acquisition.

    Attributes
    ----------
    source
        A STAC API URL, an item file, or a folder holding ``items.parquet`` (a simulated world).
    provider
        Provider profile name (default: recognised from ``source``).
    bbox
        ``(west, south, east, north)`` in degrees (default: the footprint of the Sentinel-2 items,
        fixed by the first run and kept by later ones).
    datetime
        A date or range; open-ended ranges (``"2023-01-01/.."``) suit scheduled runs.
    max_cloud
        Scene cloud-cover limit in percent.
    resolution
        Pixel size of the common grid in metres.
    chunk
        Spatial chunk size (pixels) of the stores.
    coregister
        Measure and remove each Landsat scene's shift against the nearest clear Sentinel-2 scenes.
    max_days
        Largest time difference of a co-registration reference.
    batch
        Units computed together before being committed one by one.
    """

    stage: Literal["ingest"] = "ingest"
    source: str
    provider: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    max_cloud: float | None = Field(None, ge=0, le=100)
    resolution: float = Field(10.0, gt=0)
    chunk: int = Field(512, gt=0)
    coregister: bool = True
    max_days: float = Field(10.0, ge=0)
    batch: int = Field(8, ge=1)


STAGE = INGEST


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
        Overrides ``config.scheduler`` (see :func:`pipelines.core.cluster.dask_scheduler`).

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
            from pipelines.core.cluster import dask_scheduler

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
    reference = open_units(sorted(refs))
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


main = stage_main(IngestConfig, ingest)


if __name__ == "__main__":
    main()
