"""What every stage config shares, and how configs are read from and written to YAML.

Each stage defines its own pydantic config (a :class:`StageConfig` subclass with a ``stage``
literal) beside its function in :mod:`pipelines.stages`; :mod:`pipelines.run` maps ``stage:``
names onto them. Paths in a YAML file are taken as written: relative ones are relative to the
working directory of the run (as with odc-stats and most schedulers' job files).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harmonize.errors import HarmonizeError
from harmonize.overrides import apply_overrides, config_error, yaml_error

__all__ = ["StageConfig", "read_mapping", "validate", "dump_config", "apply_overrides"]

C = TypeVar("C", bound=BaseModel)


class StageConfig(BaseModel):
    """Fields every stage shares.

    Attributes
    ----------
    stage
        The stage name (selects the config class and the job).
    out
        The stage's output folder (it holds the ledger, see :mod:`pipelines.core.ledger`).
    scheduler
        Where dask runs: ``"local"`` (a LocalCluster sized to the machine), ``"threads"``,
        ``"synchronous"``, ``"processes"``, or a scheduler address ``tcp://host:port``.
    n_workers, threads_per_worker, memory_limit
        LocalCluster sizing (default: from the machine's cores and cgroup memory limit).
    progress
        Show progress bars.
    """

    model_config = ConfigDict(extra="forbid")
    stage: str
    out: Path
    scheduler: str | None = "local"
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)
    memory_limit: int | str | None = None
    progress: bool = False

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pipelines.core.cluster.dask_scheduler`."""
        return {
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
        }


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path``.

    Raises
    ------
    HarmonizeError
        If the file is missing or does not hold a mapping (:class:`~harmonize.errors.ConfigError`
        for malformed YAML, naming the file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise HarmonizeError(f"no config file {p}; see pipelines/configs/ for examples")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise yaml_error(exc, p) from None
    if not isinstance(data, dict):
        raise HarmonizeError(f"{p} must hold a YAML mapping with a 'stage:' key")
    return data


def validate(
    cls: type[C], data: Mapping[str, Any], overrides: Mapping[str, Any] | Sequence[str] | None = None
) -> C:
    """``cls`` validated from ``data`` with ``overrides`` applied (see :func:`apply_overrides`).

    Raises
    ------
    ConfigError
        For invalid settings; the message lists each wrong key (dotted), what is wrong with it
        and the value given.
    """
    merged = apply_overrides(data, overrides)
    try:
        return cls.model_validate(merged)
    except ValidationError as exc:
        name = merged.get("stage", cls.__name__)
        raise config_error(exc, f"{name} config") from None


def dump_config(config: BaseModel, path: str | Path | None = None) -> str:
    """The config as YAML (written to ``path`` when given); reading it back gives an equal config."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text
