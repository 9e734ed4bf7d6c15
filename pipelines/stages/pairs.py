"""Job: index the clear Landsat/Sentinel-2 patch pairs of an ingested cube.

Usage::

    python -m pipelines.stages.pairs pipelines/configs/pairs.yaml [--dry-run] [key=value ...]

What it writes under ``out``::

    index.parquet    one row per patch window (pair_id, landsat_time, s2_time, y0, x0, split …)
    index.csv        the same table, for eyes and spreadsheets
    summary.json     windows per split, pairs, the settings
    ledger.json      the cube's STAC items the index was built from, and a fingerprint of the inputs

The index is a function of the whole cube (pairs are matched across all dates and the spatial
split is global), so it is rebuilt, atomically, when the cube has new stores or the settings
change, and left alone otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipelines.core.cli import stage_main
from pipelines.core.config import StageConfig
from pipelines.core.ledger import Ledger, atomic_write_text
from pipelines.core.stores import INDEX, INGEST, PAIRS, inputs_fingerprint, open_cube

log = logging.getLogger(__name__)

__all__ = ["PairsStageConfig", "pair_config", "pairs_stage", "main"]


class PairsStageConfig(StageConfig):
    """Index the clear Landsat/Sentinel-2 patch pairs of an ingested cube.

    Attributes
    ----------
    cube
        The ingest stage's output folder.
    pairs
        :class:`harmonize.pairs.PairConfig` fields (``max_days``, ``min_clear``, ``patch_size`` …).
    """

    stage: Literal["pairs"] = "pairs"
    scheduler: str | None = "threads"  # a few mask reductions: a cluster costs more than it saves
    cube: Path
    pairs: dict[str, Any] = Field(default_factory=dict)


STAGE = PAIRS


def pair_config(config: PairsStageConfig) -> Any:
    """The :class:`harmonize.pairs.PairConfig` of ``config.pairs``.

    Raises
    ------
    HarmonizeError
        For invalid pair settings (the message says which and why).
    """
    from pydantic import ValidationError

    from harmonize.errors import HarmonizeError
    from harmonize.pairs import PairConfig

    try:
        return PairConfig(**config.pairs)
    except ValidationError as exc:
        raise HarmonizeError(f"invalid pairs settings: {exc}") from exc


def pairs_stage(
    config: PairsStageConfig, *, dry_run: bool = False, scheduler: str | None = None
) -> dict[str, Any]:
    """Build (or keep) the pair index of the cube in ``config.cube``.

    Parameters
    ----------
    config
        The stage's settings.
    dry_run
        Report whether the index would be rebuilt; write nothing.
    scheduler
        Overrides ``config.scheduler``.

    Returns
    -------
    dict
        ``up_to_date`` (nothing to do), ``windows`` per split, ``pairs``, ``index`` path, ``seconds``.
    """
    from harmonize.pairs import build_pair_index
    from pipelines.core.cluster import dask_scheduler

    t0 = time.perf_counter()
    settings = pair_config(config)
    cube_ledger = Ledger(config.cube, INGEST)
    fingerprint = inputs_fingerprint(cube_ledger.fingerprint(), settings.model_dump(mode="json"))
    ledger = Ledger(config.out, STAGE)
    up_to_date = ledger.meta.get("inputs") == fingerprint and ledger.committed(INDEX)
    report: dict[str, Any] = {
        "stage": STAGE,
        "out": str(config.out),
        "up_to_date": up_to_date,
        "index": str(ledger.unit_path(INDEX)),
        "dry_run": dry_run,
    }
    if up_to_date or dry_run:
        log.info("pairs: %s", "index up to date" if up_to_date else "would rebuild the index")
        report["seconds"] = round(time.perf_counter() - t0, 3)
        if up_to_date and not dry_run:
            ledger.log_run(up_to_date=True, seconds=report["seconds"])
        return report
    with ledger.lock():
        ledger.clean()
        cube = open_cube(config.cube)
        with dask_scheduler(
            scheduler or config.scheduler,
            report=config.out / "performance-report.html",
            **config.cluster_kwargs(),
        ):
            index = build_pair_index(cube, settings, progress=config.progress)
        items = sorted(cube_ledger.items())
        tmp = ledger.tmp_path(INDEX)
        index.to_parquet(tmp, index=False)
        ledger.commit(INDEX, tmp, items)
        tmp = ledger.tmp_path("index.csv")
        index.to_csv(tmp, index=False)
        ledger.commit("index.csv", tmp, items)
        atomic_write_text(config.out / "index.config.json", settings.model_dump_json(indent=1) + "\n")
        summary = {
            "windows": {k: int(v) for k, v in index["split"].value_counts().items()},
            "pairs": int(index[["landsat_time", "s2_time"]].drop_duplicates().shape[0]) if len(index) else 0,
            "pair_config": settings.model_dump(mode="json"),
            "cube": str(config.cube),
        }
        atomic_write_text(config.out / "summary.json", json.dumps(summary, indent=1) + "\n")
        ledger.meta["inputs"] = fingerprint
        ledger.save()
        report.update(summary)
        report["seconds"] = round(time.perf_counter() - t0, 3)
        ledger.log_run(windows=summary["windows"], pairs=summary["pairs"], seconds=report["seconds"])
    log.info(
        "pairs: %d windows from %d pairs (%s) in %.1f s",
        len(index),
        summary["pairs"],
        summary["windows"],
        report["seconds"],
    )
    return report


main = stage_main(PairsStageConfig, pairs_stage)


if __name__ == "__main__":
    main()
