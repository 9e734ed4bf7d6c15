"""Job: a crop-type / land-cover map from the fused time series, scored on held-out blocks.

Usage::

    python -m pipelines.stages.classify pipelines/configs/classify.yaml [--dry-run] [key=value ...]
    harmonize classify CUBE --harmonized HZ --labels TRUTH --out DIR

Each *variant* is one choice of the observations the features come from::

    fused       Sentinel-2 + harmonized Landsat (the product)
    s2          Sentinel-2 alone
    fused_raw   Sentinel-2 + raw Landsat from the cube (not harmonized: the baseline the
                harmonization has to beat)

Features (``features``): ``ndvi`` (the default) are per-period (``freq``, monthly by default)
means of the NDVI of the clear observations, gaps filled along time, plus phenology of that
composite NDVI; ``bands`` adds the means of the six reflectance bands (:mod:`harmonize.classify`).
With ``timeseries`` (the time-series stage's folder) the NDVI of Sentinel-2 and harmonized
Landsat comes from its ``observations.zarr`` (one read of one store instead of every scene of
both cubes); raw Landsat is always read from the cube. The image is cut into ``block_size``
blocks, a share held out; a small UNet (one level by default) learns from the labels of the
other blocks (``labels``: a reference store with land cover and field crops, the simulated
world's truth).

What it writes under ``out``::

    sums-<source>.zarr        per-period sums/counts of one source (s2, landsat_harmonized,
                              landsat_raw): ndvi, or the six bands with ``features: bands``
    model-<variant>/          the classifier (safetensors + JSON)
    scores-<variant>.json     held-out confusion matrix, OA, kappa, per-class F1, baseline
    classes.tif, probabilities.tif, classes.json
                              the map of ``map_variant`` (COGs + STAC item, classification ext)
    metrics.json              every variant's scores, the comparison table, timings
    ledger.json

Every unit is committed as it finishes: a run that dies resumes with the next one; a change of
inputs or settings starts over.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from pydantic import Field, model_validator

from pipelines.core.cli import stage_main
from pipelines.core.config import StageConfig
from pipelines.core.ledger import Ledger, atomic_write_text
from pipelines.core.stores import (
    INFER,
    INGEST,
    TIMESERIES,
    inputs_fingerprint,
    open_cube,
    open_harmonized,
    read_observations,
)

log = logging.getLogger(__name__)

__all__ = ["ClassifyStageConfig", "classify_stage", "VARIANTS", "SOURCES", "main"]

STAGE = "classify"
Variant = Literal["fused", "s2", "fused_raw"]
#: Which sources each variant sums.
VARIANTS: dict[str, tuple[str, ...]] = {
    "fused": ("s2", "landsat_harmonized"),
    "s2": ("s2",),
    "fused_raw": ("s2", "landsat_raw"),
}
SOURCES = ("s2", "landsat_harmonized", "landsat_raw")
MAP_FILES = ("classes.tif", "probabilities.tif", "classes.json")


class ClassifyStageConfig(StageConfig):
    """Train and apply the crop-type classifier (see the module docstring).

    Attributes
    ----------
    cube, harmonized
        The ingest and infer stages' output folders (``harmonized`` is needed by ``fused``).
    labels
        A reference store with ``landcover`` (flag values/meanings) and ``field_id`` +
        ``field_crop`` (a simulated world's ``truth.zarr``).
    variants
        Which feature sets to train and score (the first listed that is ``map_variant`` maps).
    map_variant
        The variant whose map is written as COGs.
    freq
        Composite period (pandas frequency).
    block_size, test_fraction, guard, split_seed
        The spatial split: block side (pixels), held-out share, pixels kept clear of test
        blocks in training, seed of the draw.
    classifier
        :class:`harmonize.classify.ClassifierConfig` fields.
    combine
        How a fused variant joins its sources' period sums: ``add`` (every clear observation of
        both in each period's mean) or ``fill`` (Landsat only in the periods where Sentinel-2
        has no clear look, :func:`harmonize.classify.fill_sums`).
    keep_unregistered
        Use Landsat scenes ingest flagged as not co-registered (off, as in the timeseries stage).
    features
        ``ndvi``: period NDVI + phenology (18 features a year of months); ``bands``: also the six
        reflectance bands' period means (90). Held-out OA, S2 only, NDVI vs bands: demo world
        0.985 vs 0.973 (two seeds each), cloudy-season 0.961 (two seeds) vs 0.966 (one): about
        the same, for three arrays of each scene read instead of seven (or none, with
        ``timeseries``) and a fifth of the features.
    timeseries
        The time-series stage's output folder: with ``features: ndvi`` its
        ``observations.zarr`` gives the NDVI of Sentinel-2 and harmonized Landsat.
    """

    stage: Literal["classify"] = "classify"
    scheduler: str | None = "threads"
    cube: Path
    harmonized: Path | None = None
    labels: Path
    variants: list[Variant] = Field(default_factory=lambda: ["fused", "s2", "fused_raw"], min_length=1)
    map_variant: Variant = "fused"
    freq: str = "MS"
    block_size: int = Field(128, ge=8)
    test_fraction: float = Field(0.25, gt=0, lt=1)
    guard: int = Field(8, ge=0)
    split_seed: int = 0
    classifier: dict[str, Any] = Field(default_factory=dict)
    combine: Literal["add", "fill"] = "add"
    keep_unregistered: bool = False
    features: Literal["ndvi", "bands"] = "ndvi"
    timeseries: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ClassifyStageConfig:
        if self.map_variant not in self.variants:
            raise ValueError(f"map_variant {self.map_variant!r} is not among variants {self.variants}")
        if "fused" in self.variants and self.harmonized is None:
            raise ValueError("variant 'fused' needs harmonized: (the infer stage's output folder)")
        return self


def _sources(config: ClassifyStageConfig) -> list[str]:
    return [s for s in SOURCES if any(s in VARIANTS[v] for v in config.variants)]


def _fingerprint(config: ClassifyStageConfig) -> tuple[str, set[str]]:
    cube_ledger = Ledger(config.cube, INGEST)
    hz = Ledger(config.harmonized, INFER) if config.harmonized is not None else None
    settings = config.model_dump(
        mode="json",
        include={
            "freq",
            "block_size",
            "test_fraction",
            "guard",
            "split_seed",
            "classifier",
            "combine",
            "keep_unregistered",
            "features",
        },
    )
    ts = _timeseries_ledger(config)
    fp = inputs_fingerprint(
        cube_ledger.fingerprint(),
        hz.fingerprint() if hz else None,
        hz.meta.get("model_checksum") if hz else None,
        str(Path(config.labels).resolve()),
        settings,
        ts.fingerprint() if ts else None,
    )
    return fp, cube_ledger.items() | (hz.items() if hz else set())


def _timeseries_ledger(config: ClassifyStageConfig) -> Ledger | None:
    """The time-series stage's ledger when its observations feed the NDVI features."""
    if config.features != "ndvi" or config.timeseries is None:
        return None
    ledger = Ledger(config.timeseries, TIMESERIES)
    return ledger if ledger.committed("observations.zarr") else None


def _source_cube(config: ClassifyStageConfig, cube: xr.Dataset, source: str) -> xr.Dataset:
    from pipelines.stages.timeseries import drop_unregistered

    sensor = np.asarray(cube["sensor"].values).astype(str)
    if source == "s2":
        return cube.isel(time=np.flatnonzero(sensor == "sentinel-2"))
    if source == "landsat_raw":
        raw = cube.isel(time=np.flatnonzero(sensor == "landsat"))
        if config.keep_unregistered or "shift_flagged" not in raw.coords:
            return raw
        return raw.isel(time=np.flatnonzero(~np.asarray(raw["shift_flagged"].values, bool)))
    assert config.harmonized is not None
    hz = open_harmonized(config.harmonized)
    return hz if config.keep_unregistered else drop_unregistered(cube, hz)


def _edges(cube: xr.Dataset, freq: str) -> pd.DatetimeIndex:
    from harmonize.classify import period_edges

    t = pd.DatetimeIndex(cube["time"].values)
    return period_edges(t.min(), t.max(), freq)


def _write_sums(config: ClassifyStageConfig, ledger: Ledger, source: str, items: list[str]) -> float:
    """Commit ``sums-<source>.zarr``; seconds spent."""
    from harmonize.classify import period_sums
    from harmonize.io import write_zarr
    from pipelines.core.cluster import dask_scheduler

    tic = time.perf_counter()
    cube = open_cube(config.cube)
    edges = _edges(cube, config.freq)
    if config.features == "bands":
        sums = period_sums(_source_cube(config, cube, source), edges)
    else:
        sums = period_sums(_ndvi_source(config, cube, source), edges, bands=("ndvi",))
    tmp = ledger.tmp_path(f"sums-{source}.zarr")
    with dask_scheduler(config.scheduler, **config.cluster_kwargs()):
        write_zarr(sums.rio.write_crs(cube.rio.crs), tmp, mode="w-")
    ledger.commit(f"sums-{source}.zarr", tmp, items)
    return time.perf_counter() - tic


#: The sensor label of each source in the time-series stage's observations.
_OBS_SENSOR = {"s2": "sentinel-2", "landsat_harmonized": "landsat"}


def _ndvi_source(config: ClassifyStageConfig, cube: xr.Dataset, source: str) -> xr.Dataset:
    """``source``'s NDVI observations: from the time-series stage's store when it has them
    (loaded: one store of a few chunks), else from the cube's red/nir/clear (lazy)."""
    from harmonize.classify import ndvi_observations

    ts = _timeseries_ledger(config)
    if ts is not None and source in _OBS_SENSOR:
        obs = read_observations(ts.unit_path("observations.zarr"))
        pick = np.flatnonzero(np.asarray(obs["sensor"].values).astype(object) == _OBS_SENSOR[source])
        if len(pick):
            return obs.isel(time=pick).load().to_dataset(name="ndvi")
    return ndvi_observations(_source_cube(config, cube, source))


def _features(ledger: Ledger, variant: str, combine: str = "add") -> xr.DataArray:
    from harmonize.classify import add_sums, composite_features, fill_sums

    parts = [xr.open_zarr(ledger.unit_path(f"sums-{s}.zarr")).load() for s in VARIANTS[variant]]
    return composite_features((fill_sums if combine == "fill" else add_sums)(*parts))


def _labels(config: ClassifyStageConfig, like: xr.DataArray) -> np.ndarray:
    from harmonize.pairs.reference import open_reference_store
    from pipelines.evaluation.landclasses import labels_from_truth

    return labels_from_truth(open_reference_store(config.labels), like).values


def _split(config: ClassifyStageConfig, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(test, train)`` masks: held-out blocks, and training labels clear of them."""
    from harmonize.classify import block_split, train_mask

    test = block_split(
        labels.shape, block=config.block_size, test_fraction=config.test_fraction, seed=config.split_seed
    )
    return test, train_mask(labels, test, guard=config.guard)


def _train_and_score(
    config: ClassifyStageConfig,
    ledger: Ledger,
    variant: str,
    items: list[str],
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``variant``'s classifier, score it on the held-out blocks, commit both (its
    features and probabilities go into ``keep``, so the map need not make them again)."""
    from harmonize.classify import (
        ClassifierConfig,
        confusion_matrix,
        majority_baseline,
        predict_proba,
        save_classifier,
        scores,
        train_classifier,
    )
    from pipelines.evaluation.landclasses import class_names

    tic = time.perf_counter()
    feats = _features(ledger, variant, config.combine)
    labels = _labels(config, feats)
    test, train = _split(config, labels)
    model, fit = train_classifier(feats.values, labels, train, ClassifierConfig(**config.classifier))
    proba = predict_proba(model, feats.values)
    if keep is not None:
        keep.update(feats=feats, proba=proba)
    pred = np.asarray(model.codes)[proba.argmax(0)]
    held = test & (labels > 0)
    codes = sorted(set(np.unique(labels[held]).tolist()) | set(model.codes))
    cm = confusion_matrix(labels[held], pred[held], codes)
    result = {
        "variant": variant,
        "sources": list(VARIANTS[variant]),
        **scores(cm, codes, class_names()),
        "codes": codes,
        "confusion": cm.tolist(),
        "majority_baseline": majority_baseline(labels[train], labels[held]),
        "n_features": int(feats.sizes["feature"]),
        "train_pixels": fit["train_pixels"],
        "test_pixels": int(held.sum()),
        "fit_seconds": round(fit["seconds"], 2),
    }
    tmp = ledger.tmp_path(f"model-{variant}")
    save_classifier(model, tmp, variant=variant, features=list(map(str, feats["feature"].values)))
    ledger.commit(f"model-{variant}", tmp, items)
    result["seconds"] = round(time.perf_counter() - tic, 2)
    tmp = ledger.tmp_path(f"scores-{variant}.json")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    ledger.commit(f"scores-{variant}.json", tmp, items)
    log.info(
        "classify %s: OA %.3f (majority %.3f), macro F1 %.3f on %d held-out pixels",
        variant,
        result["overall_accuracy"],
        result["majority_baseline"]["overall_accuracy"],
        result["macro_f1"],
        result["test_pixels"],
    )
    return result


def _inputs(config: ClassifyStageConfig) -> list[str]:
    """The ledgers of the input stages (the item's ``derived_from`` links)."""
    roots = [config.cube] + ([config.harmonized] if config.harmonized is not None else [])
    return [(Path(r).resolve() / Ledger.FILE).as_uri() for r in roots]


def _write_map(
    config: ClassifyStageConfig, ledger: Ledger, items: list[str], kept: dict[str, Any] | None = None
) -> None:
    """The map of ``map_variant``: two COGs and their STAC item, committed last to first
    (``kept``: the variant's features and probabilities from this run's training, if any)."""
    from harmonize.classify import (
        class_map,
        classification_item,
        load_classifier,
        predict_proba,
        write_class_cogs,
    )
    from pipelines.evaluation.landclasses import CLASSES

    variant = config.map_variant
    model, _ = load_classifier(ledger.unit_path(f"model-{variant}"))
    if kept:
        feats, proba = kept["feats"], kept["proba"].copy()
    else:
        feats = _features(ledger, variant, config.combine)
        proba = predict_proba(model, feats.values)
    nodata = ~np.isfinite(feats.values).any(axis=0)
    proba[:, nodata] = np.nan
    ds = class_map(proba, model.codes, feats.rio.write_crs(open_cube(config.cube).rio.crs))
    score = json.loads(ledger.unit_path(f"scores-{variant}.json").read_text())
    tmp = ledger.tmp_path("map")
    paths = write_class_cogs(ds, tmp)
    periods = pd.DatetimeIndex(xr.open_zarr(ledger.unit_path("sums-s2.zarr"))["period"].values)
    final = tuple(config.out / p.name for p in paths)
    item = classification_item(
        final,
        ds,
        CLASSES,
        item_id=f"classes-{variant}",
        period=(periods.min(), periods.max()),
        derived_from=_inputs(config),
        properties={
            "harmonize:variant": variant,
            "harmonize:overall_accuracy": round(score["overall_accuracy"], 4),
            "harmonize:macro_f1": round(score["macro_f1"], 4),
        },
    )
    for p in paths:
        ledger.commit(p.name, p, items)
    tmp_item = ledger.tmp_path("classes.json")
    tmp_item.write_text(json.dumps(item.to_dict(), indent=1) + "\n")
    ledger.commit("classes.json", tmp_item, items)
    (tmp).rmdir()


def _units(config: ClassifyStageConfig) -> list[str]:
    """Every unit of a finished run, in the order they are made."""
    return (
        [f"sums-{s}.zarr" for s in _sources(config)]
        + [u for v in config.variants for u in (f"model-{v}", f"scores-{v}.json")]
        + list(MAP_FILES)
        + ["metrics.json"]
    )


def comparison_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: OA, kappa, macro F1, and OA minus the S2-only OA (points)."""
    s2 = results.get("s2", {}).get("overall_accuracy")
    rows = []
    for v, r in results.items():
        row = {
            "variant": v,
            "sources": " + ".join(r["sources"]),
            "overall_accuracy": r["overall_accuracy"],
            "kappa": r["kappa"],
            "macro_f1": r["macro_f1"],
            "majority_baseline": r["majority_baseline"]["overall_accuracy"],
        }
        if s2 is not None:
            row["vs_s2_points"] = 100 * (r["overall_accuracy"] - s2)
        rows.append(row)
    return rows


def classify_stage(
    config: ClassifyStageConfig, *, dry_run: bool = False, scheduler: str | None = None
) -> dict[str, Any]:
    """Build (or resume, or keep) the classify products of ``config`` (see the module docstring).

    Parameters
    ----------
    config
        The stage's settings.
    dry_run
        Report which units would be made; write nothing.
    scheduler
        Overrides ``config.scheduler`` (the dask reads of the cubes).

    Returns
    -------
    dict
        ``up_to_date``, ``made`` (units made this run), ``variants`` (held-out scores),
        ``table`` (:func:`comparison_table`), ``map`` (the class COG), ``seconds``, ``timings``.
    """
    t0 = time.perf_counter()
    if scheduler:
        config = config.model_copy(update={"scheduler": scheduler})
    fingerprint, item_set = _fingerprint(config)
    items = sorted(item_set)
    ledger = Ledger(config.out, STAGE)
    units = _units(config)
    if ledger.meta.get("inputs") != fingerprint:
        todo = units
    else:
        todo = [u for u in units if not ledger.committed(u)]
    report: dict[str, Any] = {
        "stage": STAGE,
        "out": str(config.out),
        "up_to_date": not todo,
        "dry_run": dry_run,
    }
    if not todo or dry_run:
        report["would_make"] = todo
        report["seconds"] = round(time.perf_counter() - t0, 3)
        return report
    timings: dict[str, float] = {}
    with ledger.lock():
        ledger.clean()
        if ledger.meta.get("inputs") != fingerprint:
            for name in list(ledger.units):
                ledger.forget(name)
            ledger.meta["inputs"] = fingerprint
            ledger.save()
        for source in _sources(config):
            if f"sums-{source}.zarr" in todo:
                timings[f"sums-{source}"] = _write_sums(config, ledger, source, items)
        results = {}
        kept: dict[str, Any] = {}
        for v in config.variants:
            if f"scores-{v}.json" in todo or f"model-{v}" in todo:
                keep = kept if v == config.map_variant else None
                results[v] = _train_and_score(config, ledger, v, items, keep)
                timings[f"train-{v}"] = results[v]["seconds"]
            else:
                results[v] = json.loads(ledger.unit_path(f"scores-{v}.json").read_text())
        if any(f in todo for f in MAP_FILES):
            tic = time.perf_counter()
            _write_map(config, ledger, items, kept)
            timings["map"] = time.perf_counter() - tic
        metrics = {
            "map_variant": config.map_variant,
            "features": config.features,
            "variants": results,
            "table": comparison_table(results),
            "split": {
                "block_size": config.block_size,
                "test_fraction": config.test_fraction,
                "guard": config.guard,
                "seed": config.split_seed,
            },
            "timings": {k: round(v, 2) for k, v in timings.items()},
        }
        tmp = ledger.tmp_path("metrics.json")
        atomic_write_text(tmp, json.dumps(metrics, indent=1) + "\n")
        ledger.commit("metrics.json", tmp, items)
        report["seconds"] = round(time.perf_counter() - t0, 3)
        ledger.log_run(made=todo, seconds=report["seconds"])
    report.update(
        made=todo,
        variants={v: round(r["overall_accuracy"], 4) for v, r in results.items()},
        table=metrics["table"],
        map=str(ledger.unit_path("classes.tif")),
        timings=metrics["timings"],
    )
    log.info("classify: %s in %.1f s", report["variants"], report["seconds"])
    return report


main = stage_main(ClassifyStageConfig, classify_stage)


if __name__ == "__main__":
    main()
