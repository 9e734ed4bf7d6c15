"""Job: search, load onto one 10 m grid, co-register, and write one Zarr store per acquisition.

Usage::

    python -m pipelines.stages.ingest pipelines/configs/ingest.yaml [key=value ...] [--dry-run]

What it writes under ``out``::

    scenes/<sensor>_<platform>_<YYYYmmddTHHMMSS>.zarr   one acquisition (time step) each, Zarr v3
                     (Landsat at 30 m + 15 m pan with its shift recorded, ``native: true``;
                     read back as the lazy 10 m view: :mod:`pipelines.core.native`)
    ledger.json      committed stores with the STAC item ids they hold; the grid (fixed by run 1)
    runs.jsonl       one line per run (new items, committed stores, seconds)
    performance-report.html   dask's report of the last run that computed anything

Incremental: a run searches the catalog, drops the items the ledger already holds, and loads
only the new Level-2 items and their Level-1 pan scenes. It writes the new Sentinel-2 stores
first, then measures each new Landsat scene's shift against a clear-sky composite of the
committed Sentinel-2 stores within ``max_days`` (old and new; read back from Zarr) and writes the
Landsat stores reloaded on shifted grids. A Landsat scene whose shift cannot be measured (too
few clear pixels, no reference) is written unshifted with ``shift_flagged`` true, logged by name
and marked ``coregistered: false`` in the ledger; the time-series stage leaves it out by
default. Because the grid is fixed by the first run and each shift depends only on the
scene and its references, a store is the same whichever run wrote it (a Sentinel-2 scene
published after its Landsat neighbour was ingested is not used for it retroactively). Each
store is committed by atomic rename and recorded in the ledger right after, so a killed run
resumes where it stopped. :func:`pipelines.core.stores.open_cube` reads all stores as one lazy cube.

With ``store: icechunk`` the stores are groups of one transactional repository instead
(:mod:`pipelines.core.cubestore`, local or on S3): each batch is one commit holding its units and
the ledger of all units, so a killed run leaves the last commit complete and resumes from it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from pydantic import Field

from harmonize.bands import PAN, REFLECTANCE_BANDS
from harmonize.catalog import search
from harmonize.coregister import DEFAULT_BANDS, estimate_shifts
from harmonize.cube import load_cube, step_item_ids
from harmonize.errors import HarmonizeError
from harmonize.grid import common_geobox, geobox_from_dict, geobox_to_dict
from harmonize.items import Scene, parse_items
from harmonize.redact import redact_url
from pipelines.core.cli import stage_main
from pipelines.core.config import StageConfig
from pipelines.core.ledger import Ledger
from pipelines.core.stores import INGEST, exact_time_encoding, open_committed

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
        Measure and remove each Landsat scene's shift against a clear-sky composite of the
        Sentinel-2 scenes near it in time (:func:`harmonize.coregister.estimate_shifts`).
    max_days
        Largest time difference of a co-registration reference date.
    batch
        Units computed together before being committed (one by one as folders, as one commit
        in a repository).
    processes
        Worker processes writing the stores side by side when the stage runs on the local
        ``threads`` scheduler (the stores are the same; ``0`` writes them in this process).
    native
        Store Landsat at its native resolution (30 m bands and ``clear``, 15 m pan, on grids
        nesting in the 10 m grid, unshifted, with the shift recorded; see
        :mod:`pipelines.core.native`); stages read the lazy 10 m view. ``False`` stores the
        10 m resampling itself (9 times the pixels).
    store
        ``"zarr"``: one Zarr folder per acquisition under ``out/scenes/``, committed by rename
        (plain files, local disk only). ``"icechunk"``: the acquisitions as groups of one
        transactional cube repository (:mod:`pipelines.core.cubestore`), one commit per batch,
        on a local disk or S3.
    repo
        Where the repository is with ``store: icechunk``: a path (relative to ``out``) or
        ``s3://bucket/prefix``; default ``out/cube.icechunk``.
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
    max_days: float = Field(60.0, ge=0)
    batch: int = Field(8, ge=1)
    native: bool = True
    processes: int = Field(2, ge=0)
    store: Literal["zarr", "icechunk"] = "zarr"
    repo: str | None = None


STAGE = INGEST
#: Default location of the cube repository (``store: icechunk``), relative to ``out``.
REPO = "cube.icechunk"


def unit_name(time: Any, sensor: str, platform: str) -> str:
    """Store name of one acquisition: ``scenes/<sensor>_<platform>_<YYYYmmddTHHMMSS>.zarr``."""
    t = pd.Timestamp(time)
    return f"scenes/{sensor}_{platform}_{t:%Y%m%dT%H%M%S}.zarr"


def _select(scenes: Sequence[Scene], done: set[str]) -> list[Scene]:
    """The Level-2 scenes not ingested yet (each carries its Level-1 pan companion, if found)."""
    return [s for s in scenes if s.level == "L2" and s.id not in done]


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
    t0 = time.perf_counter()
    ledger = Ledger(config.out, STAGE)
    if config.store == "icechunk":
        ledger.attach_repo(config.repo or REPO)
    elif config.repo is not None:
        raise HarmonizeError("repo= is the location of an icechunk store; set store: icechunk with it")
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
    scenes = parse_items(items, config.provider)
    todo = _select(scenes, ledger.items())
    new = [s.id for s in todo]
    n_l2 = sum(s.level == "L2" for s in scenes)
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
                report["committed"] = _ingest_new(config, ledger, scenes, todo)
        report["seconds"] = round(time.perf_counter() - t0, 3)
        ledger.log_run(new=new, committed=report["committed"], seconds=report["seconds"])
    log.info("ingest: committed %d store(s) in %.1f s", len(report["committed"]), report["seconds"])
    return report


def _grid(config: IngestConfig, ledger: Ledger, scenes: Sequence[Scene]) -> GeoBox:
    """The grid of every store: fixed by the first run (from the Sentinel-2 footprints or the
    bbox), kept in the ledger and reused by later runs."""
    if "geobox" in ledger.meta:
        return geobox_from_dict(ledger.meta["geobox"])
    l2 = [s for s in scenes if s.level == "L2"]
    geobox = common_geobox(l2, bbox=config.bbox, resolution=config.resolution)
    ledger.meta["geobox"] = geobox_to_dict(geobox)
    ledger.meta["source"] = redact_url(config.source)  # never a token or password on disk
    ledger.save()
    return geobox


def _ingest_new(
    config: IngestConfig, ledger: Ledger, scenes: Sequence[Scene], todo: Sequence[Scene]
) -> list[str]:
    """Write the new Sentinel-2 stores, then measure the new Landsat scenes' shifts against the
    Sentinel-2 stores (new and old) within ``max_days`` and write their stores, each scene loaded
    once on its corrected grid."""
    geobox = _grid(config, ledger, scenes)
    load = {
        "geobox": geobox,
        "provider": config.provider,
        "chunks": {"time": 1, "y": config.chunk, "x": config.chunk},
    }
    s2 = [s for s in todo if s.sensor == "sentinel-2"]
    landsat = [s for s in todo if s.sensor == "landsat"]
    with _writers(config) as pool:
        committed: list[str] = []
        if s2:
            committed = _write_steps(config, ledger, load_cube(s2, REFLECTANCE_BANDS, **load), pool)
        if landsat and config.native and config.coregister and pool is not None and ledger.repo is None:
            committed += _native_landsat_streamed(config, ledger, landsat, load, pool)
        elif landsat and config.native:
            committed += _write_steps(config, ledger, _native_landsat(config, ledger, landsat, load), pool)
        elif landsat:
            table = _shift_table(config, ledger, landsat, load) if config.coregister else None
            pan = any(s.pan is not None for s in landsat)
            bands = (*REFLECTANCE_BANDS, PAN) if pan else REFLECTANCE_BANDS
            committed += _write_steps(config, ledger, load_cube(landsat, bands, shifts=table, **load), pool)
    return committed


def _origin(scene: Scene) -> tuple[float, float] | None:
    """The corner of a scene's own pixel grid (``proj:transform``), if the item gives it."""
    t = scene.transform
    return (float(t[2]), float(t[5])) if t is not None and len(t) >= 6 else None


def _native_cubes(
    config: IngestConfig, landsat: Sequence[Scene], load: dict[str, Any]
) -> tuple[xr.Dataset, xr.Dataset | None]:
    """The Landsat scenes' bands and masks on the 30 m grid and pan on the 15 m grid nesting in
    the 10 m one (see :func:`_native_landsat`), lazy and unshifted."""
    from pipelines.core.native import native_grids

    pans = [s.pan for s in landsat if s.pan is not None]
    g30, g15 = native_grids(load["geobox"], _origin(landsat[0]), _origin(pans[0]) if pans else None)
    # chunks of config.chunk pixels at 30 m and 15 m too: 9 and 2.25 times the ground of a
    # 10 m chunk, so far fewer reads and tasks than the 10 m load (read cost is per chunk here)
    chunks = {"time": 1, "y": config.chunk, "x": config.chunk}
    opts = {k: v for k, v in load.items() if k not in ("geobox", "chunks")}
    ms = load_cube(landsat, REFLECTANCE_BANDS, geobox=g30, chunks=chunks, **opts)
    pan = None
    if pans:
        pan = load_cube(landsat, [PAN], geobox=g15, masks=(), chunks=chunks, **opts)
    return ms, pan


def _native_landsat_streamed(
    config: IngestConfig, ledger: Ledger, landsat: Sequence[Scene], load: dict[str, Any], pool: Executor
) -> list[str]:
    """:func:`_native_landsat` and its stores written on ``pool`` while the shifts are measured:
    each batch of scenes goes to the writers as soon as its shifts are known (a scene's shift
    depends only on the scene and its references), committed in time order as before."""
    from pipelines.core.native import native_unit

    ms, pan = _native_cubes(config, landsat, load)
    first_ids = [str(v).split(",")[0] for v in ms["item_id"].values]
    sent: set[int] = set()

    with _PoolWriter(ledger, pool) as writer:

        def write(table: pd.DataFrame) -> None:
            known = {i for r in table.itertuples() for i in str(r.item_id).split(",")}
            steps = [k for k, i in enumerate(first_ids) if i in known and k not in sent]
            if not steps:
                return
            sent.update(steps)
            part = _with_shifts(ms.isel(time=steps), table)
            part_pan = pan.isel(time=steps) if pan is not None else None
            cube = native_unit(part, part_pan, load["geobox"], config.chunk)
            for start in range(0, len(steps), config.batch):
                n = min(config.batch, len(steps) - start)
                writer.submit([_step_unit(ledger, cube.isel(time=[start + i])) for i in range(n)])

        table = _shift_table(config, ledger, landsat, load, on_rows=write)
        write(table)  # the scenes no batch handed over (none when nothing could be measured)
        return writer.finish()


def _native_landsat(
    config: IngestConfig, ledger: Ledger, landsat: Sequence[Scene], load: dict[str, Any]
) -> xr.Dataset:
    """The Landsat scenes on the 30 m and 15 m grids nesting in the 10 m one, loaded unshifted;
    their shifts recorded, with the verdicts, for the stores' 10 m view to apply.

    The shifts are measured on the scenes read at 10 m as before (on the 10 m view of the 30 m
    load they came out 0.88 m RMSE from the demo world's truth instead of 0.24 m: one more
    resampling blurs the edges the registration uses)."""
    from pipelines.core.native import native_unit

    ms, pan = _native_cubes(config, landsat, load)
    if config.coregister:
        ms = _with_shifts(ms, _shift_table(config, ledger, landsat, load))
    return native_unit(ms, pan, load["geobox"], config.chunk)


def _with_shifts(cube: xr.Dataset, table: pd.DataFrame) -> xr.Dataset:
    """``cube`` with the ``shift_*`` coordinates of ``table`` (keyed by each step's first Level-2
    id), as ``load_cube(..., shifts=table)`` records them, the pixels left where they are."""
    rows = {i: r for r in table.itertuples() for i in str(r.item_id).split(",")}
    steps = [rows.get(str(v).split(",")[0]) for v in cube["item_id"].values]

    def column(name: str, default: Any, dtype: str) -> tuple[str, np.ndarray]:
        return "time", np.array([default if r is None else getattr(r, name, default) for r in steps], dtype)

    return cube.assign_coords(
        shift_x=column("dx", 0.0, "float64"),
        shift_y=column("dy", 0.0, "float64"),
        shift_flagged=column("flagged", True, "bool"),
        shift_quality=column("quality", np.nan, "float64"),
    )


def _shift_table(
    config: IngestConfig,
    ledger: Ledger,
    landsat: Sequence[Scene],
    load: dict[str, Any],
    on_rows: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """The shift table of the new Landsat scenes (every scene flagged with no reference near them).

    The references are the committed Sentinel-2 stores within ``max_days`` (read back from
    Zarr: cheaper than the COGs again, and the same whichever run wrote them). The shifts are
    measured on the Landsat scenes loaded with the matching bands alone: ``clear`` of the full
    cube would read every band (no data in any band makes a pixel not clear).
    """
    times = pd.DatetimeIndex([s.time.replace(tzinfo=None) for s in landsat])
    window = pd.Timedelta(days=config.max_days)
    refs = []
    for name, unit in ledger.units.items():
        if unit.get("sensor") != "sentinel-2" or not ledger.committed(name):
            continue
        t = pd.Timestamp(unit["time"])
        if (abs(times - t) <= window).any():
            refs.append(name)
    if not refs:
        return _unmeasured_table(landsat, f"no Sentinel-2 scene within {config.max_days:g} days")
    probe = load_cube(landsat, list(DEFAULT_BANDS), **load)
    refs_cube = open_committed(ledger, sorted(refs))
    table = estimate_shifts(
        probe, refs_cube, max_days=config.max_days, progress=config.progress, on_rows=on_rows
    )
    ok = table[~table["flagged"]]
    log.info(
        "co-registration: %d Landsat scene(s) against %d Sentinel-2 store(s), median |shift| %.1f m, "
        "median precision %.1f m, %d not measured",
        len(table),
        len(refs),
        float(np.median(np.hypot(ok["dx"], ok["dy"]))) if len(ok) else float("nan"),
        float(np.median(ok["sigma"])) if len(ok) else float("nan"),
        len(table) - len(ok),
    )
    for row in table[table["flagged"]].itertuples():
        log.warning(
            "Landsat scene %s not co-registered (%s): flagged, left out of the fused series by default",
            row.item_id,
            row.reason,
        )
    return table


def _unmeasured_table(landsat: Sequence[Scene], reason: str) -> pd.DataFrame:
    """A shift table flagging every scene (no shift): no reference to measure them against."""
    for s in landsat:
        log.warning(
            "Landsat scene %s not co-registered (%s): flagged, left out of the fused series by default",
            s.id,
            reason,
        )
    return pd.DataFrame(
        {
            "item_id": [s.id for s in landsat],
            "dx": 0.0,
            "dy": 0.0,
            "flagged": True,
            "quality": np.nan,
            "reason": reason,
        },
        index=pd.DatetimeIndex([s.time.replace(tzinfo=None) for s in landsat], name="time"),
    )


def _step_unit(ledger: Ledger, step: xr.Dataset) -> tuple[str, Path, list[str], dict[str, Any], xr.Dataset]:
    """The store name, temporary path, item ids, ledger info and dataset of one time step."""
    sensor = str(np.asarray(step["sensor"].values)[0])
    t = step["time"].values[0]
    name = unit_name(t, sensor, str(step["platform"].values[0]))
    tmp = ledger.tmp_path(Path(name).name)
    info: dict[str, Any] = {"sensor": sensor, "time": pd.Timestamp(t).isoformat()}
    if "shift_flagged" in step.coords:  # Landsat with a shift table: the co-registration verdict
        info["coregistered"] = not bool(np.asarray(step["shift_flagged"].values)[0])
        info["shift_m"] = [float(step["shift_x"].values[0]), float(step["shift_y"].values[0])]
    return name, tmp, step_item_ids(step), info, exact_time_encoding(step.assign_attrs(harmonize_stage=STAGE))


Unit = tuple[str, Path, list[str], dict[str, Any], xr.Dataset]


def _write_steps(
    config: IngestConfig, ledger: Ledger, cube: xr.Dataset, pool: Executor | None = None
) -> list[str]:
    """Write every time step of ``cube`` as a store, ``batch`` at a time in one computation,
    committing each with its Level-2 and Level-1 item ids (in a repository: one commit a batch).
    With a ``pool`` of worker processes (:func:`_writers`) batches are written side by side
    there and committed here, in order, as each finishes."""
    from harmonize.io import write_zarr_batch

    n = cube.sizes["time"]
    batches = [
        [_step_unit(ledger, cube.isel(time=[i])) for i in range(start, min(start + config.batch, n))]
        for start in range(0, n, config.batch)
    ]
    if pool is not None and ledger.repo is None:
        return _write_in_pool(ledger, batches, pool)
    committed: list[str] = []
    for units in batches:
        if ledger.repo is not None:
            committed += _commit_to_repo(ledger, units)
            continue
        write_zarr_batch([u[4] for u in units], [u[1] for u in units], stripes=False)
        committed += _commit(ledger, units)
    return committed


def _commit(ledger: Ledger, units: Sequence[Unit]) -> list[str]:
    """Move written stores into place and record them in the ledger, one by one."""
    for name, tmp, unit_items, info, _ in units:
        ledger.commit(name, tmp, unit_items, **info)
        log.info("committed %s (%s)", name, ", ".join(unit_items))
    return [u[0] for u in units]


def _write_batch(datasets: list[xr.Dataset], paths: list[Path]) -> None:
    """One batch of stores written in a worker process (its own dask scheduler: one thread)."""
    import dask

    from harmonize.io import write_zarr_batch

    with dask.config.set(scheduler="synchronous"):
        write_zarr_batch(datasets, paths, stripes=False)


def _write_in_pool(ledger: Ledger, batches: Sequence[Sequence[Unit]], pool: Executor) -> list[str]:
    """Write ``batches`` on the worker processes of ``pool``, a few queued ahead, and commit each
    in order once written (see :class:`_PoolWriter`)."""
    with _PoolWriter(ledger, pool) as writer:
        for units in batches:
            writer.submit(units, ahead=2 * max(1, getattr(pool, "_max_workers", 2)))
        return writer.finish()


class _PoolWriter:
    """Batches of stores written on worker processes, committed here in the order submitted,
    each as soon as it and every batch before it are written. On an error no later batch is
    committed and their temporary stores are removed (a killed run leaves them to
    :meth:`Ledger.clean`)."""

    def __init__(self, ledger: Ledger, pool: Executor) -> None:
        self.ledger, self.pool = ledger, pool
        self.queued: deque[tuple[Sequence[Unit], Future]] = deque()
        self.committed: list[str] = []

    def submit(self, units: Sequence[Unit], ahead: int | None = None) -> None:
        """Queue one batch; with ``ahead``, first wait until fewer than that are queued."""
        while ahead is not None and len(self.queued) >= ahead:
            self._commit(block=True)
        future = self.pool.submit(_write_batch, [u[4] for u in units], [u[1] for u in units])
        self.queued.append((units, future))
        self._commit(block=False)

    def _commit(self, block: bool) -> None:
        while self.queued and (block or self.queued[0][1].done()):
            units, future = self.queued.popleft()
            future.result()
            self.committed += _commit(self.ledger, units)
            block = False

    def finish(self) -> list[str]:
        """Commit every queued batch (waiting for them); the names committed."""
        while self.queued:
            self._commit(block=True)
        return self.committed

    def __enter__(self) -> _PoolWriter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            return
        for _, future in self.queued:
            future.cancel()
        wait([f for _, f in self.queued])
        for units, _ in self.queued:
            for u in units:
                shutil.rmtree(u[1], ignore_errors=True)


def _exit_with_parent() -> None:
    """In a writer process: ask Linux to kill it when the stage's process dies (a killed run
    leaves no writer behind; its temporary store is for :meth:`Ledger.clean`)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _writers(config: IngestConfig) -> Iterator[Executor | None]:
    """Worker processes writing the stores (``processes`` of them) when the stage computes on
    local threads: a store's Zarr metadata and chunk writes hold the GIL most of the time, so
    threads write about one store at a time. ``None`` otherwise (a distributed scheduler, a
    repository, ``processes: 0``, a system other than Linux)."""
    if (
        config.processes < 1
        or config.store != "zarr"
        or dask.config.get("scheduler", None) != "threads"
        or not sys.platform.startswith("linux")  # fork is safe there; macOS's system libraries are not
    ):
        yield None
        return
    # fork now, before this run starts threads reading or writing (GDAL's, dask's, Zarr's locks
    # are free); the workers live until the stage ends
    ctx = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(config.processes, mp_context=ctx, initializer=_exit_with_parent)
    try:
        wait([pool.submit(os.getpid) for _ in range(config.processes)])
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _commit_to_repo(ledger: Ledger, units: Sequence[Unit]) -> list[str]:
    """Commit a batch of time steps to the ledger's cube repository in one transaction."""
    from pipelines.core.cubestore import RepoUnit

    names = [u[0] for u in units]
    message = f"ingest {len(units)} scene(s): " + ", ".join(Path(n).stem for n in names)
    snapshot = ledger.commit_units(
        [RepoUnit(name, ds, unit_items, info) for name, _, unit_items, info, ds in units], message
    )
    for name, _, unit_items, _, _ in units:
        log.info("committed %s (%s) in snapshot %s", name, ", ".join(unit_items), snapshot)
    return names


main = stage_main(IngestConfig, ingest)


if __name__ == "__main__":
    main()
