"""Run any pipeline stage from its YAML config (what ``harmonize run CONFIG.yaml`` calls).

>>> from pipelines.run import run
>>> run("pipelines/configs/ingest.yaml", dry_run=True)               # doctest: +SKIP
>>> run("pipelines/configs/train.yaml", overrides=["train.epochs=2"])  # doctest: +SKIP

Each stage is also ``python -m pipelines.<stage> CONFIG.yaml [--dry-run] [--scheduler ADDR]
[key=value ...]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipelines.config import load_config, parse_config

log = logging.getLogger(__name__)

__all__ = ["run", "run_stage", "cli_main"]


def run_stage(
    config: BaseModel,
    *,
    scheduler: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Run the stage a validated config object names.

    Parameters
    ----------
    config
        A config from :mod:`pipelines.config` (or :class:`pipelines.infer.InferConfig`).
    scheduler
        Overrides the config's ``scheduler`` (``"local"``, ``"threads"``, ``"tcp://…"``).
    dry_run
        Report what would be processed (which items are new) and write nothing.

    Returns
    -------
    dict
        The stage's report (JSON-serialisable).
    """
    stage = getattr(config, "stage", "infer")
    if stage == "ingest":
        from pipelines.ingest import ingest

        return ingest(config, dry_run=dry_run, scheduler=scheduler)  # type: ignore[arg-type]
    if stage == "pairs":
        from pipelines.pairs import pairs_stage

        return pairs_stage(config, dry_run=dry_run, scheduler=scheduler)  # type: ignore[arg-type]
    if stage == "train":
        from pipelines.train import train_stage

        return train_stage(config, dry_run=dry_run, scheduler=scheduler)  # type: ignore[arg-type]
    if stage == "infer" and hasattr(config, "cube"):
        from pipelines.infer_cube import infer_cube

        return infer_cube(config, dry_run=dry_run, scheduler=scheduler)  # type: ignore[arg-type]
    if stage == "infer":
        from pipelines.infer import run_config

        if dry_run:
            return {"stage": "infer", "dry_run": True, "config": config.model_dump(mode="json")}
        return run_config(config)  # type: ignore[arg-type]
    if stage == "timeseries":
        from pipelines.timeseries import timeseries_stage

        return timeseries_stage(config, dry_run=dry_run, scheduler=scheduler)  # type: ignore[arg-type]
    if stage == "demo":
        from pipelines.demo import run_demo_config

        return run_demo_config(config, dry_run=dry_run, scheduler=scheduler)  # type: ignore[arg-type]
    raise ValueError(f"unknown stage {stage!r}")


def run(
    config_path: str | Path | Mapping[str, Any],
    *,
    scheduler: str | None = None,
    dry_run: bool = False,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Load a stage config from YAML (its ``stage:`` key picks the job) and run it.

    Parameters
    ----------
    config_path
        A YAML file (or an already-parsed mapping).
    scheduler
        ``"local"`` (a LocalCluster sized to the machine), ``"threads"``, ``"synchronous"``,
        ``"processes"``, or a dask.distributed scheduler address; default: the config's.
    dry_run
        Report what would be processed (which items are new) and write nothing.
    overrides
        ``{"train.epochs": 2}`` or ``["train.epochs=2"]`` applied on top of the file.

    Returns
    -------
    dict
        The stage's report.
    """
    if isinstance(config_path, Mapping):
        cfg = parse_config(config_path, overrides)
    else:
        cfg = load_config(config_path, overrides)
    return run_stage(cfg, scheduler=scheduler, dry_run=dry_run)


def cli_main(argv: list[str] | None = None, *, stage: str | None = None) -> int:
    """Command line of ``python -m pipelines.run`` and ``python -m pipelines.<stage>``."""
    prog = f"python -m pipelines.{stage or 'run'}"
    p = argparse.ArgumentParser(prog=prog, description="Run a harmonize pipeline stage from its YAML config.")
    p.add_argument("config", type=Path, help="stage config (YAML with a 'stage:' key)")
    p.add_argument("overrides", nargs="*", help="key=value settings over the file (e.g. train.epochs=2)")
    p.add_argument("--scheduler", help="'local', 'threads', 'synchronous', 'processes' or tcp://host:port")
    p.add_argument("--dry-run", action="store_true", help="report what would be processed; write nothing")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("harmonize", "pipelines"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    cfg = load_config(args.config, args.overrides)
    if stage is not None and getattr(cfg, "stage", "infer") != stage:
        p.error(f"{args.config} is a {getattr(cfg, 'stage', 'infer')!r} config, not {stage!r}")
    report = run_stage(cfg, scheduler=args.scheduler, dry_run=args.dry_run)
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
