"""Job: super-resolve every Landsat date of an ingested cube or of a catalog search, one Zarr
store per date.

Usage::

    python -m pipelines.stages.infer pipelines/configs/infer.yaml [--dry-run] [key=value ...]
    harmonize run pipelines/configs/infer.yaml
    harmonize infer MODEL --source URL --bbox W,S,E,N --datetime 2024-05/2024-08 --out DIR

Where the Landsat scenes come from (``source``)::

    cube      the ingest stage's co-registered stores (``cube: runs/cube``)
    search    a STAC API or item file (``catalog``, ``bbox``, ``datetime``): Landsat Level-2 and
              their Level-1 pan scenes, loaded with harmonize.cube.load_cube

What it writes under ``out``::

    dates/<platform>_<YYYYmmddTHHMMSS>.zarr   harmonized blue … swir22 + clear on the 10 m grid
    cogs/, items/          one COG and STAC item per date (``cogs: true``); each item is
                           ``derived_from`` the date's Level-2 and Level-1 scenes
    ledger.json            per store: the Landsat STAC items it came from; the model's checksum

Incremental like ingest: dates whose items a store already holds are skipped, unless the model
package changed (then every date is redone). Stores are committed by atomic rename, a batch of
dates written a row of chunks at a time (:func:`harmonize.io.write_zarr_batch`), so memory stays
bounded on large scenes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from pydantic import Field, model_validator

from pipelines.core.cli import stage_main
from pipelines.core.config import StageConfig
from pipelines.core.ledger import Ledger, file_checksum
from pipelines.core.native import stored_landsat_grids
from pipelines.core.stores import INFER, exact_time_encoding, open_cube

log = logging.getLogger(__name__)

__all__ = [
    "InferStageConfig",
    "infer_stage",
    "DatePlan",
    "landsat_cube",
    "landsat_phases",
    "plan_dates",
    "weights_checksum",
    "write_batch",
    "missing_outputs",
    "write_date_cogs",
    "main",
]

#: The fields each ``source`` needs.
SOURCE_FIELDS = {"cube": ("cube",), "search": ("catalog", "bbox")}


class InferStageConfig(StageConfig):
    """Super-resolve every Landsat date of an ingested cube or of a catalog search.

    Attributes
    ----------
    source
        ``"cube"``: read the ingest stage's stores in ``cube``; ``"search"``: search ``catalog``
        for Landsat Level-2 and Level-1 (pan) items and load them (no co-registration).
    cube
        The ingest stage's output folder (``source: cube``).
    catalog
        A STAC API URL, an item file, or a folder holding ``items.parquet`` (``source: search``).
    bbox
        ``(west, south, east, north)`` in degrees (``source: search``).
    datetime
        A date or range, ``"2024-05/2024-08"`` (``source: search``; default: all).
    provider
        Provider profile name (``source: search``; default: recognised from ``catalog``).
    max_cloud
        Scene cloud-cover limit in percent (``source: search``).
    model
        A model package folder (or its ``mlm.json``), or several (an ensemble).
    chunks, device, batch_size, tile, precision, uncertainty, mc_passes
        Passed to :func:`harmonize.infer.super_resolve`.
    cogs
        Also write one COG per date (``out/cogs``) and its STAC item (``out/items``).
    batch
        Dates computed together before being committed one by one.
    progress
        Show dask's progress bar (local schedulers).
    """

    stage: Literal["infer"] = "infer"
    source: Literal["cube", "search"] = "cube"
    cube: Path | None = None
    catalog: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    provider: str | None = None
    max_cloud: float | None = Field(None, ge=0, le=100)
    model: str | list[str]
    chunks: int | None = Field(None, gt=0)
    device: str | None = None
    batch_size: int = Field(8, gt=0)
    tile: int | None = Field(None, gt=0)
    precision: Literal["tf32", "bf16", "fp16"] | None = None
    uncertainty: Literal["mc_dropout", "ensemble"] | None = None
    mc_passes: int = Field(8, ge=2)
    cogs: bool = False
    batch: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _source_fields_given(self) -> InferStageConfig:
        missing = [f for f in SOURCE_FIELDS[self.source] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"source: {self.source} needs {' and '.join(missing)}; set them in the config")
        return self


STAGE = INFER


@dataclass(frozen=True)
class DatePlan:
    """The Landsat dates of a cube and which of them to (re)write.

    Attributes
    ----------
    names
        Store name of each date (``dates/<platform>_<time>.zarr``), in cube order.
    ids
        The Level-2 item ids of each date (its ``item_id`` coordinate).
    todo
        Indices of the dates to write.
    model_changed
        The ledger holds stores of another model (every date is redone).
    """

    names: list[str]
    ids: list[list[str]]
    todo: list[int]
    model_changed: bool


def weights_checksum(model: str | list[str]) -> str:
    """A checksum of a model package's (or an ensemble's) weight files.

    Parameters
    ----------
    model
        A package folder (or its ``mlm.json``), or several.

    Returns
    -------
    str
        The first 16 hex digits of each ``*.safetensors`` file's checksum, comma-joined per
        package and ``;``-joined across packages (a package without weights gives its path).
    """
    paths = model if isinstance(model, list) else [model]
    sums = []
    for m in paths:
        p = Path(m)
        folder = p.parent if p.is_file() else p
        weights = sorted(folder.glob("*.safetensors"))
        sums.append(",".join(file_checksum(w)[:16] for w in weights) or str(p))
    return ";".join(sums)


def plan_dates(cube: xr.Dataset, ledger: Ledger, checksum: str) -> DatePlan:
    """Name every Landsat date of ``cube`` and pick those a store of this model does not hold.

    Parameters
    ----------
    cube
        Landsat dates with ``time``, ``platform`` and ``item_id`` coordinates.
    ledger
        The stage's ledger.
    checksum
        The model's :func:`weights_checksum`; another one in the ledger redoes every date.

    Returns
    -------
    DatePlan
        A date is to do unless the ledger holds all its items and its store exists.
    """
    model_changed = ledger.meta.get("model_checksum") not in (None, checksum)
    done = set() if model_changed else ledger.items()
    names, ids, todo = [], [], []
    for i in range(cube.sizes["time"]):
        ids.append(str(cube["item_id"].values[i]).split(","))
        stamp = pd.Timestamp(cube["time"].values[i])
        names.append(f"dates/{cube['platform'].values[i]}_{stamp:%Y%m%dT%H%M%S}.zarr")
        if not set(ids[i]) <= done or not ledger.unit_path(names[i]).exists():
            todo.append(i)
    return DatePlan(names, ids, todo, model_changed)


def _search_cube(config: InferStageConfig) -> tuple[xr.Dataset, dict[str, pystac.Item]]:
    """The Landsat Level-2 scenes (with their Level-1 pan) a search finds, loaded lazily."""
    from harmonize.catalog import search
    from harmonize.cube import load_cube

    items = list(
        search(
            str(config.catalog),
            provider=config.provider,
            sensors=("landsat",),
            bbox=config.bbox,
            datetime=config.datetime,
            max_cloud=config.max_cloud,
            include_pan=True,
            require=True,
        )
    )
    log.info("infer: the search found %d Landsat items", len(items))
    return load_cube(items, bbox=config.bbox, provider=config.provider), {it.id: it for it in items}


def _ingested_landsat(cube_dir: Path) -> xr.Dataset:
    """The ingested cube, opening only the stores the ledger records as Landsat (on the demo
    world half the stores are Sentinel-2's, and opening them cost ~40 % of the stage's
    opening); the whole cube where the ledger does not say (a remote repository, old ledgers)."""
    from pipelines.core.cubestore import is_remote
    from pipelines.core.stores import INGEST, open_committed

    if is_remote(cube_dir):
        return open_cube(cube_dir)
    ledger = Ledger(cube_dir, INGEST)
    committed = [n for n in sorted(ledger.units) if ledger.committed(n)]
    names = [n for n in committed if ledger.units[n].get("sensor") == "landsat"]
    if not names or any("sensor" not in ledger.units[n] for n in committed):
        return open_cube(cube_dir)
    return open_committed(ledger, names)


def landsat_cube(config: InferStageConfig) -> tuple[xr.Dataset, dict[str, pystac.Item]]:
    """The Landsat dates to harmonize and the STAC items they came from.

    Parameters
    ----------
    config
        ``source: cube`` opens the ingest stage's stores; ``source: search`` searches the
        catalog for Landsat Level-2 and Level-1 (pan) items and loads them.

    Returns
    -------
    tuple
        The Landsat dates (lazy) and the items by id (empty for ``source: cube``: ingested
        stores keep the ids, not the items).

    Raises
    ------
    EmptySearchError
        When a search finds no Landsat scene.
    """
    if config.source == "search":
        cube, items = _search_cube(config)
    else:
        cube, items = _ingested_landsat(Path(config.cube)), {}
    landsat = np.flatnonzero(np.asarray(cube["sensor"].values) == "landsat")
    return cube.isel(time=landsat), items


def _start(ledger: Ledger, plan: DatePlan, checksum: str, model: str | list[str]) -> None:
    """Clear what an interrupted run left, forget another model's stores, record this model."""
    ledger.clean()
    if plan.model_changed:
        for name in list(ledger.units):
            ledger.forget(name)
    ledger.meta["model_checksum"] = checksum
    ledger.meta["model"] = model
    ledger.save()


def _item_grid(item: pystac.Item) -> list[float] | None:
    """A 30 m asset's ``proj:transform`` of a Landsat item (the item's own when it is 30 m)."""
    holders = [a.extra_fields for a in item.assets.values()] + [item.properties]
    for h in holders:
        t = h.get("proj:transform")
        if t and abs(float(t[0])) == 30.0:
            return list(t)
    return None


def landsat_phases(
    config: InferStageConfig, cube: xr.Dataset, items: Mapping[str, pystac.Item]
) -> list[tuple[int, int]]:
    """Where each Landsat date's 30 m pixels start in the cube (row, col), for the models whose
    blocks are Landsat pixels (the low-frequency constraint).

    Parameters
    ----------
    config
        The stage's settings (``source: cube`` reads the 30 m grid from the ingested stores).
    cube
        The Landsat dates, with ``item_id`` and, when co-registered, ``shift_x``/``shift_y``.
    items
        The searched items by id (``source: search``).

    Returns
    -------
    list of (int, int)
        One :func:`harmonize.lowfreq.grid_phase` per date, its co-registration shift applied;
        ``(0, 0)`` for a date whose 30 m grid is not known (a store written at 10 m).
    """
    import odc.geo.xr  # noqa: F401 - registers .odc

    from harmonize.lowfreq import grid_phase

    grids = stored_landsat_grids(Path(config.cube)) if config.source == "cube" else {}
    geobox = cube.odc.geobox
    phases = []
    for i in range(cube.sizes["time"]):
        first = str(cube["item_id"].values[i]).split(",")[0]
        grid = grids.get(first) if config.source == "cube" else (
            _item_grid(items[first]) if first in items else None)
        shift = tuple(float(cube[c].values[i]) if c in cube.coords else 0.0 for c in ("shift_x", "shift_y"))
        phases.append(grid_phase(geobox, grid, shift=shift) if grid is not None else (0, 0))
    return phases


def _super_resolve(
    config: InferStageConfig, cube: xr.Dataset, phases: list[tuple[int, int]] | None = None
) -> xr.Dataset:
    from harmonize.infer import super_resolve

    return super_resolve(
        cube,
        config.model,
        chunks=config.chunks,
        device=config.device,
        batch_size=config.batch_size,
        tile=config.tile,
        precision=config.precision,
        uncertainty=config.uncertainty,
        mc_passes=config.mc_passes,
        landsat_phase=phases,
    )


def write_batch(
    result: xr.Dataset, positions: range, plan: DatePlan, ledger: Ledger, model: str | list[str]
) -> list[str]:
    """Write some planned dates together (a row of chunks of each per compute), then commit each.

    Parameters
    ----------
    result
        The super-resolved dates ``plan.todo`` (lazy), in that order.
    positions
        Which of ``result``'s time steps to write.
    plan, ledger
        The stage's plan and ledger.
    model
        Recorded in each store's attributes.

    Returns
    -------
    list of str
        The store names committed.
    """
    from harmonize.io import write_zarr_batch

    steps, tmps = [], []
    for k in positions:
        i = plan.todo[k]
        step = exact_time_encoding(result.isel(time=[k]))
        step.attrs = {"harmonize_stage": STAGE, "source_items": plan.ids[i], "model": str(model)}
        steps.append(step)
        tmps.append(ledger.tmp_path(Path(plan.names[i]).name))
    # a few dates per compute, so the workers' threads run dates side by side
    write_zarr_batch(steps, tmps)
    committed = []
    for k, tmp in zip(positions, tmps, strict=True):
        name = plan.names[plan.todo[k]]
        ledger.commit(name, tmp, plan.ids[plan.todo[k]])
        committed.append(name)
        log.info("committed %s", name)
    return committed


def write_date_cogs(
    out: Path, ledger: Ledger, names: list[str], items: Mapping[str, pystac.Item] | None = None
) -> tuple[list[str], list[str]]:
    """One COG (``out/cogs``) and STAC item (``out/items``) per committed date store.

    Parameters
    ----------
    out
        The stage's output folder.
    ledger
        The stage's ledger.
    names
        Committed store names.
    items
        STAC items by id: each output item is ``derived_from`` the date's source scenes
        (:func:`harmonize.cube.step_item_ids`), linked to their items where this holds them, else named by id.

    Returns
    -------
    tuple of list
        The COG paths and the STAC item paths.
    """
    from importlib.metadata import version

    from harmonize.cube import step_item_ids
    from harmonize.io import write_cogs, write_stac_items

    items = items or {}
    cog_paths, item_paths = [], []
    for name in names:
        ds = xr.open_zarr(ledger.unit_path(name))
        cogs = write_cogs(ds, out / "cogs", overwrite=True)
        sources = [items.get(i, i) for i in step_item_ids(ds)]
        stac = write_stac_items(
            cogs,
            ds,
            out / "items",
            derived_from={str(ds["item_id"].values[0]): sources},
            software={"harmonize": version("harmonize")},
        )
        cog_paths += [str(p) for p in cogs]
        item_paths += [str(it.get_self_href()) for it in stac]
        # recorded once both exist: a run killed before this line writes them again (issue 17)
        ledger.units[name]["outputs"] = [os.path.relpath(p, out) for p in (*cogs, *item_paths[-len(stac):])]
        ledger.save()
    return cog_paths, item_paths


def missing_outputs(ledger: Ledger) -> list[str]:
    """Committed date stores whose COGs or STAC items were never written (or were deleted).

    Parameters
    ----------
    ledger
        The stage's ledger.

    Returns
    -------
    list of str
        Their store names, sorted.
    """
    return [
        n
        for n in sorted(ledger.units)
        if ledger.committed(n)
        and (
            not ledger.units[n].get("outputs")
            or not all((ledger.root / p).exists() for p in ledger.units[n]["outputs"])
        )
    ]


def _check_models(model: str | list[str]) -> None:
    """Load every package once before anything is written or forgotten: an unreadable, altered
    or NaN model fails here (a named :class:`~harmonize.errors.ModelError`), earlier dates intact."""
    from harmonize.model import load_model_package

    for m in model if isinstance(model, list) else [model]:
        load_model_package(m)


def _harmonize(
    config: InferStageConfig,
    cube: xr.Dataset,
    items: Mapping[str, pystac.Item],
    plan: DatePlan,
    ledger: Ledger,
    scheduler: str | None,
) -> dict[str, list[str]]:
    """Super-resolve the planned dates batch by batch, commit them, and write their COGs."""
    import contextlib
    import sys

    from dask.diagnostics import ProgressBar

    from pipelines.core.cluster import dask_scheduler

    done: dict[str, list[str]] = {"committed": [], "cogs": [], "stac_items": []}
    with (
        dask_scheduler(
            scheduler or config.scheduler,
            report=config.out / "performance-report.html",
            **config.cluster_kwargs(),
        ),
        # on standard error: standard output carries the stage's JSON report
        ProgressBar(out=sys.stderr) if config.progress else contextlib.nullcontext(),
    ):
        todo = cube.isel(time=plan.todo)
        result = _super_resolve(config, todo, landsat_phases(config, todo, items))
        for start in range(0, len(plan.todo), config.batch):
            positions = range(start, min(start + config.batch, len(plan.todo)))
            done["committed"] += write_batch(result, positions, plan, ledger, config.model)
        if config.cogs:
            # this run's dates in time order, then any an earlier run left without COGs
            names = done["committed"] + [n for n in missing_outputs(ledger) if n not in done["committed"]]
            cogs = write_date_cogs(Path(config.out), ledger, names, items)
            done["cogs"], done["stac_items"] = cogs
    return done


def infer_stage(
    config: InferStageConfig, *, dry_run: bool = False, scheduler: str | None = None
) -> dict[str, Any]:
    """Harmonize the Landsat dates of ``config``'s source that are not done yet.

    Parameters
    ----------
    config
        The stage's settings.
    dry_run
        Report which dates are new; write nothing.
    scheduler
        Overrides ``config.scheduler``.

    Returns
    -------
    dict
        ``dates`` (Landsat dates found), ``new`` (store names to write), ``committed``,
        ``model_changed``, ``cogs`` and ``stac_items`` (paths written), ``seconds``; for
        ``source: search`` also ``items_found``.

    Raises
    ------
    EmptySearchError
        When a search finds no Landsat scene.
    HarmonizeError
        When ``cube`` holds no ingested store, or the scenes lack a band the model needs.
    """
    t0 = time.perf_counter()
    ledger = Ledger(config.out, STAGE)
    cube, items = landsat_cube(config)
    checksum = weights_checksum(config.model)
    plan = plan_dates(cube, ledger, checksum)
    report: dict[str, Any] = {
        "stage": STAGE,
        "source": config.source,
        "out": str(config.out),
        "dates": len(plan.names),
        "new": [plan.names[i] for i in plan.todo],
        "committed": [],
        "cogs": [],
        "stac_items": [],
        "model_changed": plan.model_changed,
        "dry_run": dry_run,
    }
    if config.source == "search":
        report["items_found"] = len(items)
    log.info(
        "infer: %d Landsat dates, %d to harmonize%s",
        len(plan.names),
        len(plan.todo),
        " (the model changed)" if plan.model_changed else "",
    )
    if not dry_run and plan.todo:
        _check_models(config.model)
        with ledger.lock():
            _start(ledger, plan, checksum, config.model)
            report.update(_harmonize(config, cube, items, plan, ledger, scheduler))
    elif not dry_run and config.cogs and missing_outputs(ledger):
        with ledger.lock():  # a run killed while writing COGs: every store done, some COGs not
            pending = missing_outputs(ledger)
            log.info("infer: writing the COGs and STAC items of %d committed date(s)", len(pending))
            cogs = write_date_cogs(Path(config.out), ledger, pending, items)
            report["cogs"], report["stac_items"] = cogs
    report["seconds"] = round(time.perf_counter() - t0, 3)
    if not dry_run:
        ledger.log_run(new=report["new"], committed=report["committed"], seconds=report["seconds"])
        log.info("infer: committed %d date(s) in %.1f s", len(report["committed"]), report["seconds"])
    return report


main = stage_main(InferStageConfig, infer_stage)


if __name__ == "__main__":
    main()
