"""Job: super-resolve every Landsat date of an ingested cube, one Zarr store per date.

Usage::

    python -m pipelines.stages.infer pipelines/configs/infer.yaml [--dry-run] [key=value ...]
    (or ``python -m pipelines.run``/``harmonize run`` with ``stage: infer`` and ``cube:``)

What it writes under ``out``::

    dates/<platform>_<YYYYmmddTHHMMSS>.zarr   harmonized blue … swir22 + clear on the 10 m grid
    cogs/, items/          one COG and STAC item per date (``cogs: true``)
    ledger.json            per store: the Landsat STAC items it came from; the model's checksum

Incremental like ingest: dates whose items a store already holds are skipped, unless the model
package changed (then every date is redone). Stores are committed by atomic rename. This job
reads the co-registered cube of the ingest stage; :mod:`pipelines.infer` instead searches a
catalog and loads the scenes itself.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from pydantic import Field

from pipelines.core.cli import stage_main
from pipelines.core.config import StageConfig
from pipelines.core.ledger import Ledger, file_checksum
from pipelines.core.stores import INFER, exact_time_encoding, open_cube

log = logging.getLogger(__name__)

__all__ = ["InferCubeConfig", "infer_cube", "main"]


class InferCubeConfig(StageConfig):
    """Super-resolve every Landsat date of an ingested cube, one Zarr store per date.

    (A config with ``source`` instead of ``cube`` runs :func:`pipelines.infer.infer_job`, which
    searches a catalog itself.)

    Attributes
    ----------
    cube
        The ingest stage's output folder.
    model
        A model package folder (or its ``mlm.json``), or several (an ensemble).
    chunks, device, batch_size, tile, precision
        Passed to :func:`harmonize.infer.super_resolve`.
    cogs
        Also write one COG per date (``out/cogs``) and its STAC item (``out/items``).
    batch
        Dates computed together before being committed one by one.
    """

    stage: Literal["infer"] = "infer"
    cube: Path
    model: str | list[str]
    chunks: int | None = Field(None, gt=0)
    device: str | None = None
    batch_size: int = Field(8, gt=0)
    tile: int | None = Field(None, gt=0)
    precision: Literal["bf16", "fp16"] | None = None
    cogs: bool = False
    batch: int = Field(4, ge=1)


STAGE = INFER


def _weights_checksum(model: str | list[str]) -> str:
    paths = model if isinstance(model, list) else [model]
    sums = []
    for m in paths:
        p = Path(m)
        folder = p.parent if p.is_file() else p
        weights = sorted(folder.glob("*.safetensors"))
        sums.append(",".join(file_checksum(w)[:16] for w in weights) or str(p))
    return ";".join(sums)


def infer_cube(
    config: InferCubeConfig, *, dry_run: bool = False, scheduler: str | None = None
) -> dict[str, Any]:
    """Harmonize the Landsat dates of ``config.cube`` that are not done yet.

    Returns
    -------
    dict
        ``dates`` (Landsat dates in the cube), ``new`` (store names to write), ``committed``,
        ``model_changed``, ``seconds``.
    """
    import dask

    from harmonize.infer import super_resolve
    from harmonize.io import write_zarr
    from pipelines.core.cluster import dask_scheduler

    t0 = time.perf_counter()
    ledger = Ledger(config.out, STAGE)
    cube = open_cube(config.cube)
    landsat = np.flatnonzero(np.asarray(cube["sensor"].values) == "landsat")
    cube = cube.isel(time=landsat)
    checksum = _weights_checksum(config.model)
    model_changed = ledger.meta.get("model_checksum") not in (None, checksum)
    done = set() if model_changed else ledger.items()
    names, todo = [], []
    for i in range(cube.sizes["time"]):
        ids = str(cube["item_id"].values[i]).split(",")
        name = f"dates/{cube['platform'].values[i]}_{pd.Timestamp(cube['time'].values[i]):%Y%m%dT%H%M%S}.zarr"
        names.append(name)
        if not set(ids) <= done or not ledger.unit_path(name).exists():
            todo.append(i)
    report: dict[str, Any] = {
        "stage": STAGE,
        "out": str(config.out),
        "dates": len(names),
        "new": [names[i] for i in todo],
        "committed": [],
        "model_changed": model_changed,
        "dry_run": dry_run,
    }
    log.info(
        "infer: %d Landsat dates, %d to harmonize%s",
        len(names),
        len(todo),
        " (the model changed)" if model_changed else "",
    )
    if dry_run or not todo:
        report["seconds"] = round(time.perf_counter() - t0, 3)
        if not dry_run:
            ledger.log_run(new=[], committed=[], seconds=report["seconds"])
        return report
    with ledger.lock():
        ledger.clean()
        if model_changed:
            for name in list(ledger.units):
                ledger.forget(name)
        ledger.meta["model_checksum"] = checksum
        ledger.meta["model"] = config.model
        ledger.save()
        with dask_scheduler(
            scheduler or config.scheduler,
            report=config.out / "performance-report.html",
            **config.cluster_kwargs(),
        ):
            result = super_resolve(
                cube.isel(time=todo),
                config.model,
                chunks=config.chunks,
                device=config.device,
                batch_size=config.batch_size,
                tile=config.tile,
                precision=config.precision,
            )
            # a few dates per compute, so the workers' threads run dates side by side
            for start in range(0, len(todo), config.batch):
                jobs = []
                for k in range(start, min(start + config.batch, len(todo))):
                    i = todo[k]
                    step = result.isel(time=[k])
                    ids = str(cube["item_id"].values[i]).split(",")
                    step = exact_time_encoding(step)
                    step.attrs = {"harmonize_stage": STAGE, "source_items": ids, "model": str(config.model)}
                    tmp = ledger.tmp_path(Path(names[i]).name)
                    jobs.append((names[i], tmp, ids, write_zarr(step, tmp, mode="w-", compute=False)))
                dask.compute(*[j[3] for j in jobs])
                for name, tmp, ids, _ in jobs:
                    ledger.commit(name, tmp, ids)
                    report["committed"].append(name)
                    log.info("committed %s", name)
            if config.cogs:
                _write_cogs(config, ledger, [names[i] for i in todo])
    report["seconds"] = round(time.perf_counter() - t0, 3)
    ledger.log_run(new=report["new"], committed=report["committed"], seconds=report["seconds"])
    log.info("infer: committed %d date(s) in %.1f s", len(report["committed"]), report["seconds"])
    return report


def _write_cogs(config: InferCubeConfig, ledger: Ledger, names: list[str]) -> None:
    from importlib.metadata import version

    from harmonize.io import write_cogs, write_stac_items

    for name in names:
        ds = xr.open_zarr(ledger.unit_path(name))
        cogs = write_cogs(ds, Path(config.out) / "cogs", overwrite=True)
        write_stac_items(
            cogs,
            ds,
            Path(config.out) / "items",
            derived_from={str(ds["item_id"].values[0]): list(ds.attrs.get("source_items", []))},
            software={"harmonize": version("harmonize")},
        )


main = stage_main(InferCubeConfig, infer_cube)


if __name__ == "__main__":
    main()
