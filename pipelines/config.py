"""One pydantic config per pipeline stage, loaded from YAML with a ``stage:`` key.

>>> cfg = load_config("pipelines/configs/ingest.yaml", overrides=["out=/tmp/cube"])  # doctest: +SKIP
>>> cfg.stage, cfg.out                                                              # doctest: +SKIP
('ingest', PosixPath('/tmp/cube'))

Paths in a YAML file are taken as written: relative ones are relative to the working directory
of the run (as with odc-stats and most schedulers' job files).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harmonize.errors import HarmonizeError
from harmonize.overrides import apply_overrides

__all__ = [
    "StageConfig",
    "IngestConfig",
    "PairsStageConfig",
    "TrainStageConfig",
    "InferCubeConfig",
    "TimeseriesStageConfig",
    "DemoConfig",
    "STAGES",
    "load_config",
    "parse_config",
    "dump_config",
    "apply_overrides",
]


class StageConfig(BaseModel):
    """Fields every stage shares.

    Attributes
    ----------
    stage
        The stage name (selects the config class and the job).
    out
        The stage's output folder (it holds the ledger, see :mod:`pipelines.state`).
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
        """Keyword arguments of :func:`pipelines.cluster.dask_scheduler`."""
        return {
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
        }


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


class TrainStageConfig(StageConfig):
    """Fit the UNet on the indexed pairs and export a model package.

    Attributes
    ----------
    cube, pairs
        The ingest and pairs stages' output folders.
    train
        :class:`harmonize.train.TrainConfig` fields (``model: tiny``, ``epochs`` …).
    max_seconds
        Stop after the epoch that passes this wall time and export the best epoch so far.
    cache
        Cache the patches in Zarr stores under ``out/cache`` (later epochs read them back).
    max_train_windows, max_val_windows
        Train / validate on at most this many windows (a seeded sample). Patches are computed
        from the cube on first use and cached, so a smaller set makes later epochs cheap.
    world
        A simulated world folder: validation samples then carry its truth.
    """

    stage: Literal["train"] = "train"
    scheduler: str | None = "threads"  # torch trains in this process; patches are small graphs
    cube: Path
    pairs: Path
    train: dict[str, Any] = Field(default_factory=dict)
    max_seconds: float | None = Field(None, gt=0)
    cache: bool = True
    max_train_windows: int | None = Field(None, ge=1)
    max_val_windows: int | None = Field(None, ge=1)
    world: Path | None = None


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


class TimeseriesStageConfig(StageConfig):
    """Fuse Sentinel-2 with harmonized Landsat, gap-fill NDVI, derive phenology, plot.

    Attributes
    ----------
    cube, harmonized
        The ingest and infer stages' output folders (``harmonized: null`` gives an S2-only series).
    timeseries
        :class:`harmonize.timeseries.TimeSeriesConfig` fields (``method``, ``freq``, ``max_gap`` …).
    plots
        Write PNG figures beside the stores.
    world
        A simulated world folder: plots then show its true NDVI.
    """

    stage: Literal["timeseries"] = "timeseries"
    scheduler: str | None = "threads"
    cube: Path
    harmonized: Path | None = None
    timeseries: dict[str, Any] = Field(default_factory=dict)
    plots: bool = True
    world: Path | None = None


class DemoConfig(StageConfig):
    """Everything at once on a freshly simulated world (see :func:`pipelines.demo.run_demo`).

    Attributes
    ----------
    size_km
        Side of the simulated area (default: the demo world, 5.12 km).
    tiny
        Use :meth:`harmonize.world.WorldConfig.tiny` (1.28 km, six weeks) instead.
    world
        :class:`harmonize.world.WorldConfig` fields overriding the defaults.
    train
        Training settings (as in :class:`TrainStageConfig`).
    train_seconds
        Training wall-time cap.
    pairs, timeseries
        As in the stages.
    report
        Write the HTML report at the end (``pipelines.report``).
    """

    stage: Literal["demo"] = "demo"
    scheduler: str | None = "threads"
    size_km: float | None = None
    tiny: bool = False
    world: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    train_seconds: float | None = Field(None, gt=0)
    pairs: dict[str, Any] = Field(default_factory=dict)
    timeseries: dict[str, Any] = Field(default_factory=dict)
    report: bool = True


STAGES: dict[str, type[StageConfig]] = {
    "ingest": IngestConfig,
    "pairs": PairsStageConfig,
    "train": TrainStageConfig,
    "infer": InferCubeConfig,
    "timeseries": TimeseriesStageConfig,
    "demo": DemoConfig,
}




def parse_config(data: Mapping[str, Any], overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Any:
    """Validate a mapping (with a ``stage`` key) into its stage's config object.

    A ``stage: infer`` mapping with ``source`` (and no ``cube``) becomes the catalog-searching
    :class:`pipelines.infer.InferConfig`.

    Raises
    ------
    HarmonizeError
        For an unknown or missing stage, or invalid settings (the message lists what is wrong).
    """
    merged = apply_overrides(data, overrides)
    stage = merged.get("stage")
    if stage not in STAGES:
        raise HarmonizeError(f"the config needs a 'stage:' key, one of {sorted(STAGES)}; got {stage!r}")
    cls: Any = STAGES[stage]
    if stage == "infer" and "cube" not in merged and "source" in merged:
        from pipelines.infer import InferConfig

        cls = InferConfig
        merged = {
            k: v
            for k, v in merged.items()
            if k not in ("stage", "scheduler", "n_workers", "threads_per_worker", "memory_limit")
        }
    try:
        return cls.model_validate(merged)
    except ValidationError as exc:
        raise HarmonizeError(f"invalid {stage} config: {exc}") from exc


def load_config(path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Any:
    """Read a stage config from YAML (see :func:`parse_config`)."""
    p = Path(path)
    if not p.is_file():
        raise HarmonizeError(f"no config file {p}; see pipelines/configs/ for examples")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise HarmonizeError(f"{p} must hold a YAML mapping with a 'stage:' key")
    return parse_config(data, overrides)


def dump_config(config: BaseModel, path: str | Path | None = None) -> str:
    """The config as YAML (written to ``path`` when given); :func:`load_config` reads it back equal."""
    data = config.model_dump(mode="json")
    if "stage" not in data:  # pipelines.infer.InferConfig
        data = {"stage": "infer", **data}
    text = yaml.safe_dump(data, sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text
