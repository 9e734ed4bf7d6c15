"""Job: fit the harmonization UNet on the indexed pairs and export a model package.

Usage::

    python -m pipelines.stages.train pipelines/configs/train.yaml [--dry-run] [key=value ...]

What it writes under ``out`` (see :func:`harmonize.train.fit`)::

    model/                 the model package (model.safetensors + mlm.json)
    checkpoints/, best.safetensors, history.csv, loss_curve.png, results.png
    cache/{train,val}.zarr the patches, computed once from the cube
    ledger.json            the pair index and settings the model was trained on

Training is redone only when the pair index or the settings change. ``max_seconds`` stops the
run after the epoch that passes it (a :class:`harmonize.train.StopTraining` from a callback) and
exports the best epoch so far.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harmonize.pairs.reference import open_reference_store
from pipelines.core.cli import stage_main
from pipelines.core.config import StageConfig
from pipelines.core.ledger import Ledger
from pipelines.core.stores import (
    PAIRS,
    TRAIN,
    inputs_fingerprint,
    model_package,
    open_cube,
    read_index,
)

log = logging.getLogger(__name__)

__all__ = ["TrainStageConfig", "train_stage", "main"]


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
    memory_mb
        With ``cache``: keep the patches in memory as well (later epochs skip the store) when
        the train and validation patches take at most this many MB (the demo's: ~70).
    truth
        A reference store (Zarr, reflectance bands on ``time, y, x`` of the cube's grid or one
        containing it; a simulated world's ``truth.zarr``): validation samples then carry it and
        the model package records metrics against it too.
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
    memory_mb: float = Field(1024.0, ge=0)
    truth: Path | None = None


STAGE = TRAIN


def _sample(rows: Any, n: int | None, seed: int) -> Any:
    """At most ``n`` of ``rows`` (a seeded sample, in index order)."""
    if n is None or len(rows) <= n:
        return rows
    return rows.sample(n=n, random_state=seed).sort_index()


def train_stage(
    config: TrainStageConfig,
    *,
    dry_run: bool = False,
    scheduler: str | None = None,
    callbacks: Sequence[Callable[[dict[str, float]], None]] = (),
) -> dict[str, Any]:
    """Train (or keep) the model for the pairs in ``config.pairs``.

    Parameters
    ----------
    config
        The stage's settings.
    dry_run
        Report whether a model would be trained, and train nothing.
    scheduler
        dask scheduler for reading the patches (default ``config.scheduler``; a distributed
        address falls back to ``"threads"``: torch trains in this process).
    callbacks
        More :func:`harmonize.train.fit` callbacks, called with each epoch's row (the demo
        starts work for the idle core from the first one).

    Returns
    -------
    dict
        ``up_to_date``, ``model`` (package path), ``epochs``, ``best_epoch``, ``metrics``, ``seconds``.
    """
    import dask

    from harmonize.train import TrainConfig, fit

    t0 = time.perf_counter()
    train_cfg = TrainConfig.model_validate({"model": "tiny", **config.train})
    pairs_ledger = Ledger(config.pairs, PAIRS)
    fingerprint = _fingerprint(config, train_cfg, pairs_ledger)
    ledger = Ledger(config.out, STAGE)
    pkg = model_package(config.out)
    up_to_date = ledger.meta.get("inputs") == fingerprint and (pkg / "mlm.json").exists()
    report: dict[str, Any] = {
        "stage": STAGE,
        "out": str(config.out),
        "up_to_date": up_to_date,
        "model": str(pkg),
        "dry_run": dry_run,
    }
    if up_to_date or dry_run:
        log.info("train: %s", "model up to date" if up_to_date else "would train a model")
        report["seconds"] = round(time.perf_counter() - t0, 3)
        return report
    with ledger.lock():
        train, val, summary = _datasets(config, train_cfg)
        sched = scheduler or config.scheduler
        with dask.config.set(scheduler=sched if sched in ("threads", "synchronous", "sync") else "threads"):
            result = fit(
                train_cfg,
                train,
                val,
                out_dir=config.out,
                callbacks=[_time_budget(config.max_seconds, train_cfg.epochs), *callbacks],
                progress=config.progress,
                dataset_summary=summary,
            )
        ledger.meta["inputs"] = fingerprint
        ledger.units["model"] = {"items": sorted(pairs_ledger.items()), "best_epoch": result.best_epoch}
        ledger.save()
        report.update(
            {
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "metrics": {k: float(v) for k, v in result.metrics.items()},
                "n_train": len(train),
                "n_val": len(val) if val is not None else 0,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        ledger.log_run(epochs=report["epochs"], best_epoch=result.best_epoch, seconds=report["seconds"])
    log.info(
        "train: %d epochs, best %d, package %s (%.1f s)",
        report["epochs"],
        result.best_epoch,
        pkg,
        report["seconds"],
    )
    return report


def _fingerprint(config: TrainStageConfig, train_cfg: Any, pairs_ledger: Ledger) -> str:
    """What the model depends on: the pair index, its inputs and the training settings."""
    return inputs_fingerprint(
        pairs_ledger.fingerprint(),
        pairs_ledger.meta.get("inputs"),
        train_cfg.model_dump(mode="json"),
        config.max_seconds,
        config.max_train_windows,
        config.max_val_windows,
    )


def _datasets(config: TrainStageConfig, train_cfg: Any) -> tuple[Any, Any | None, dict[str, Any]]:
    """The train and validation datasets (patches read up front when cached) and their summary.

    Validation samples carry ``config.truth`` (the simulator's truth, say) as their reference.
    """
    from harmonize.pairs import PairDataset

    cube = open_cube(config.cube)
    index = read_index(config.pairs)
    reference = open_reference_store(config.truth) if config.truth is not None else None
    cache = Path(config.out) / "cache" if config.cache else None
    # a changed index makes the cached patches stale; PairDataset rebuilds a cache whose
    # fingerprint differs, so the folder can stay
    train_rows = _sample(index[index["split"] == "train"], config.max_train_windows, train_cfg.seed)
    val_rows = _sample(index[index["split"] == "val"], config.max_val_windows, train_cfg.seed)
    # every epoch reads every patch again: from memory when they fit, not the store
    in_memory = _patch_mb(train_rows, val_rows, reference is not None) <= config.memory_mb
    train = PairDataset(
        cube, train_rows, "train", cache=None if cache is None else cache / "train.zarr", in_memory=in_memory
    )
    val = None
    if len(val_rows):
        val = PairDataset(
            cube,
            val_rows,
            "val",
            reference=reference,
            cache=None if cache is None else cache / "val.zarr",
            in_memory=in_memory,
        )
    if cache is not None:  # read every patch up front, a batch per dask computation
        for ds in (train, val):
            if ds is not None:
                ds.prefetch(progress=config.progress)
    summary = {
        "pairs": int(index[["landsat_time", "s2_time"]].drop_duplicates().shape[0]),
        "windows": len(index),
        "cube": str(config.cube),
        "pair_config": index.attrs.get("config"),
    }
    return train, val, summary


def _patch_mb(train_rows: Any, val_rows: Any, reference: bool) -> float:
    """MB the cached train and validation patches take (float32: input, target, valid and the
    validation reference)."""
    from harmonize.pairs import INPUT_BANDS, TARGET_BANDS

    pixels = (train_rows["patch_size"] ** 2).sum(), (val_rows["patch_size"] ** 2).sum()
    per_pixel = len(INPUT_BANDS) + len(TARGET_BANDS) + 1
    val_per_pixel = per_pixel + (len(TARGET_BANDS) if reference else 0)
    return float(4 * (pixels[0] * per_pixel + pixels[1] * val_per_pixel) / 1e6)


def _time_budget(max_seconds: float | None, epochs: int) -> Callable[[dict[str, float]], None]:
    """A :func:`harmonize.train.fit` callback that stops the run after the epoch that passes
    ``max_seconds`` (counted from now); the best epoch so far is then exported."""
    from harmonize.train import StopTraining

    started = time.perf_counter()

    def budget(row: dict[str, float]) -> None:
        if max_seconds is not None and time.perf_counter() - started > max_seconds and row["epoch"] < epochs:
            log.info(
                "train: time budget of %.0f s used after epoch %d; exporting the best epoch",
                max_seconds,
                int(row["epoch"]),
            )
            raise StopTraining

    return budget


main = stage_main(TrainStageConfig, train_stage)


if __name__ == "__main__":
    main()
