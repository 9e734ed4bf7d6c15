"""Job: super-resolve every Landsat date of an ingested cube, one Zarr store per date.

Usage::

    python -m pipelines.infer_cube pipelines/configs/infer.yaml [--dry-run] [key=value ...]
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
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pipelines.config import InferCubeConfig
from pipelines.state import Ledger, file_checksum

log = logging.getLogger(__name__)

__all__ = ["infer_cube", "open_harmonized", "main"]

STAGE = "infer"


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
    from pipelines.cluster import dask_scheduler
    from pipelines.ingest import exact_time_encoding, open_cube

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


def open_harmonized(out: str | Path) -> xr.Dataset:
    """All harmonized dates an infer run committed under ``out``, as one lazy cube sorted by time.

    Raises
    ------
    HarmonizeError
        If ``out`` holds no committed date.
    """
    from harmonize.errors import HarmonizeError
    from pipelines.ingest import _concat_units

    ledger = Ledger(out, STAGE)
    paths = ledger.committed_paths()
    if not paths:
        raise HarmonizeError(f"{out} holds no harmonized dates; run the infer stage first")
    return _concat_units(paths)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.infer_cube CONFIG.yaml [--dry-run] [key=value ...]``."""
    from pipelines.run import cli_main

    return cli_main(argv, stage=STAGE)


if __name__ == "__main__":
    sys.exit(main())
