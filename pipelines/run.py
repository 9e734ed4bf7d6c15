"""Run any job from its YAML config: what ``harmonize run CONFIG.yaml`` calls.

>>> from pipelines.run import run
>>> run("pipelines/configs/ingest.yaml", dry_run=True)               # doctest: +SKIP
>>> run("pipelines/configs/train.yaml", overrides=["train.epochs=2"])  # doctest: +SKIP

The YAML's ``stage:`` key picks the job from :data:`JOBS`: the five stages of
:mod:`pipelines.stages` and the demo. Each stage is also
``python -m pipelines.stages.<stage> CONFIG.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harmonize.errors import HarmonizeError
from pipelines.core.config import apply_overrides, read_mapping, validate
from pipelines.demo.run import DemoConfig, run_demo_config
from pipelines.stages.classify import ClassifyStageConfig, classify_stage
from pipelines.stages.infer import InferStageConfig, infer_stage
from pipelines.stages.ingest import IngestConfig, ingest
from pipelines.stages.pairs import PairsStageConfig, pairs_stage
from pipelines.stages.timeseries import TimeseriesStageConfig, timeseries_stage
from pipelines.stages.train import TrainStageConfig, train_stage

__all__ = ["JOBS", "parse_config", "load_config", "run_stage", "run"]

Job = tuple[type[BaseModel], Callable[..., dict[str, Any]]]

#: ``stage:`` name -> (config class, function taking ``(config, *, dry_run, scheduler)``).
JOBS: dict[str, Job] = {
    "ingest": (IngestConfig, ingest),
    "pairs": (PairsStageConfig, pairs_stage),
    "train": (TrainStageConfig, train_stage),
    "infer": (InferStageConfig, infer_stage),
    "timeseries": (TimeseriesStageConfig, timeseries_stage),
    "classify": (ClassifyStageConfig, classify_stage),
    "demo": (DemoConfig, run_demo_config),
}


def parse_config(data: Mapping[str, Any], overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Any:
    """Validate a mapping (with a ``stage`` key) into its job's config object.

    Raises
    ------
    HarmonizeError
        For an unknown or missing stage, or invalid settings (the message lists what is wrong).
    """
    stage = apply_overrides(data, overrides).get("stage")
    if stage not in JOBS:
        raise HarmonizeError(f"the config needs a 'stage:' key, one of {sorted(JOBS)}; got {stage!r}")
    return validate(JOBS[stage][0], data, overrides)


def load_config(path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Any:
    """Read a job config from YAML (see :func:`parse_config`)."""
    return parse_config(read_mapping(path), overrides)


def run_stage(config: BaseModel, *, scheduler: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run the job a validated config object names.

    Parameters
    ----------
    config
        A config of one of :data:`JOBS`.
    scheduler
        Overrides the config's ``scheduler`` (``"local"``, ``"threads"``, ``"tcp://…"``).
    dry_run
        Report what would be processed (which items are new) and write nothing.

    Returns
    -------
    dict
        The job's report (JSON-serialisable).
    """
    stage = getattr(config, "stage", None)
    if stage not in JOBS:
        raise HarmonizeError(f"unknown stage {stage!r}; one of {sorted(JOBS)}")
    return JOBS[stage][1](config, dry_run=dry_run, scheduler=scheduler)


def run(
    config_path: str | Path | Mapping[str, Any],
    *,
    scheduler: str | None = None,
    dry_run: bool = False,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Load a job config from YAML (its ``stage:`` key picks the job) and run it.

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
        The job's report.
    """
    if isinstance(config_path, Mapping):
        cfg = parse_config(config_path, overrides)
    else:
        cfg = load_config(config_path, overrides)
    return run_stage(cfg, scheduler=scheduler, dry_run=dry_run)
