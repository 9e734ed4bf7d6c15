"""Job: fuse Sentinel-2 with harmonized Landsat, gap-fill NDVI, derive phenology, plot.

Usage::

    python -m pipelines.stages.timeseries pipelines/configs/timeseries.yaml [--dry-run] [key=value ...]

What it writes under ``out``::

    observations.zarr   NDVI of every clear observation, both sensors (``sensor`` coordinate)
    ndvi.zarr           gap-filled NDVI on a regular time axis (``n_obs``: observations used)
    phenology.zarr      start / peak / end / length of season, peak and base NDVI, amplitude
    ndvi_series.png, ndvi_maps.png, clear_observations.png
    ledger.json         the STAC items of both inputs, a fingerprint of inputs and settings

Gap-filling is global in time, so the products are rebuilt (each store committed atomically)
when either input gained stores or the settings changed, and left alone otherwise.
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

from harmonize.pairs.reference import open_reference_store
from pipelines.core.cli import stage_main
from pipelines.core.config import StageConfig
from pipelines.core.ledger import Ledger
from pipelines.core.stores import (
    INFER,
    INGEST,
    TIMESERIES,
    TIMESERIES_STORES,
    exact_time_encoding,
    inputs_fingerprint,
    open_cube,
    open_harmonized,
    read_observations,
)

log = logging.getLogger(__name__)

__all__ = ["TimeseriesStageConfig", "timeseries_stage", "fused_observations", "write_products", "main"]


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
    truth
        A reference store (Zarr with ``red``/``nir`` on ``time, y, x`` and optionally a
        ``field_id`` map; a simulated world's ``truth.zarr``): the plots then show its NDVI and
        follow its largest fields.
    keep_unregistered
        Fuse Landsat scenes whose shift could not be measured (``shift_flagged`` in the ingest
        output). Off by default: a misregistered view would blur every date it fills.
    """

    stage: Literal["timeseries"] = "timeseries"
    scheduler: str | None = "threads"
    cube: Path
    harmonized: Path | None = None
    timeseries: dict[str, Any] = Field(default_factory=dict)
    plots: bool = True
    truth: Path | None = None
    keep_unregistered: bool = False


STAGE = TIMESERIES
STORES = TIMESERIES_STORES


def _plot_locations(truth: xr.Dataset | None, ndvi: xr.DataArray, n: int = 4) -> dict[str, Any]:
    """The ``n`` largest fields of the reference's ``field_id`` map (masks), else ``n`` points on
    a diagonal."""
    if truth is not None and "field_id" in truth:
        fid = truth["field_id"].sel(y=ndvi["y"], x=ndvi["x"], method="nearest").values
        ids, counts = np.unique(fid[fid > 0], return_counts=True)
        top = ids[np.argsort(-counts)][:n]
        return {
            f"field {int(k)}": xr.DataArray(
                fid == k, dims=("y", "x"), coords={"y": ndvi["y"], "x": ndvi["x"]}
            )
            for k in top
        }
    ys, xs = ndvi["y"].values, ndvi["x"].values
    return {
        f"point {k + 1}": (float(xs[len(xs) * (k + 1) // (n + 1)]), float(ys[len(ys) * (k + 1) // (n + 1)]))
        for k in range(n)
    }


def _fingerprint(config: TimeseriesStageConfig, ts_cfg: Any) -> tuple[str, set[str]]:
    """A fingerprint of both inputs' ledgers, the model and the settings; the inputs' item ids."""
    cube_ledger = Ledger(config.cube, INGEST)
    hz_ledger = Ledger(config.harmonized, INFER) if config.harmonized is not None else None
    fingerprint = inputs_fingerprint(
        cube_ledger.fingerprint(),
        hz_ledger.fingerprint() if hz_ledger else None,
        hz_ledger.meta.get("model_checksum") if hz_ledger else None,
        ts_cfg.model_dump(mode="json"),
        config.plots,
    )
    return fingerprint, cube_ledger.items() | (hz_ledger.items() if hz_ledger else set())


def drop_unregistered(cube: xr.Dataset, harmonized: xr.Dataset) -> xr.Dataset:
    """``harmonized`` without the dates whose Landsat scene ingest flagged as not co-registered.

    Parameters
    ----------
    cube
        The ingest output (its Landsat steps carry ``shift_flagged`` where shifts were measured).
    harmonized
        The infer output, on the Landsat dates.

    Returns
    -------
    xarray.Dataset
        ``harmonized`` with the flagged dates left out (each logged by date and item).
    """
    if "shift_flagged" not in cube.coords:
        return harmonized
    flagged = np.asarray(cube["shift_flagged"].values, bool)
    landsat = np.asarray(cube["sensor"].values) == "landsat"
    bad = pd.DatetimeIndex(cube["time"].values[flagged & landsat])
    times = pd.DatetimeIndex(harmonized["time"].values)
    drop = times.isin(bad)
    if not drop.any():
        return harmonized
    ids = cube["item_id"].values[flagged & landsat] if "item_id" in cube.coords else bad
    for when, item in zip(bad, ids, strict=True):
        log.warning(
            "Landsat %s (%s) left out of the fused series: not co-registered "
            "(keep_unregistered: true keeps it)", item, when.date()
        )
    return harmonized.isel(time=np.flatnonzero(~drop))


def fused_observations(config: TimeseriesStageConfig, ts_cfg: Any) -> xr.Dataset:
    """The NDVI of every clear Sentinel-2 and harmonized Landsat observation (lazy), with its
    ``sensor``/``platform`` labels and the cube's CRS."""
    from harmonize.timeseries import fused_ndvi

    cube = open_cube(config.cube)
    s2 = cube.isel(time=np.flatnonzero(np.asarray(cube["sensor"].values) == "sentinel-2"))
    hz = open_harmonized(config.harmonized) if config.harmonized is not None else None
    if hz is not None and not config.keep_unregistered:
        hz = drop_unregistered(cube, hz)
    # reads red, nir, clear (+ Sentinel-2 blue, green to sharpen its nir)
    obs = fused_ndvi(s2, hz, same_day=ts_cfg.same_day, sharpen_s2_nir=ts_cfg.sharpen_s2_nir)
    # what the report needs to score this product as made (it reads the store back)
    made = {"sharpen_s2_nir": int(ts_cfg.sharpen_s2_nir), "weights": int(ts_cfg.weights)}
    obs_ds = obs.rename("ndvi").assign_attrs(made).to_dataset().rio.write_crs(cube.rio.crs)
    for c in ("sensor", "platform"):
        if c in obs_ds.coords:
            obs_ds = obs_ds.assign_coords({c: ("time", np.asarray(obs_ds[c].values).astype(str))})
    return obs_ds


def write_products(
    config: TimeseriesStageConfig, ledger: Ledger, obs_ds: xr.Dataset, ts_cfg: Any, items: list[str]
) -> tuple[xr.DataArray, list[Path], dict[str, float]]:
    """Commit the observations, the gap-filled NDVI and the phenology (each computed from the
    store before it), then the plots.

    Returns
    -------
    tuple
        The gap-filled NDVI (lazy), the plots' paths, and seconds per step (``observations``,
        ``gap_fill``, ``phenology``, ``plots``).
    """
    from harmonize.io import write_zarr
    from harmonize.phenology import phenology
    from harmonize.timeseries import fill_ndvi

    crs = obs_ds.rio.crs
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    tmp = ledger.tmp_path("observations.zarr")
    write_zarr(exact_time_encoding(obs_ds.chunk(_obs_chunks(obs_ds))), tmp, mode="w-")
    ledger.commit("observations.zarr", tmp, items)
    # Fill from the stored observations: the cubes are read and NDVI computed once, not
    # again for the weights and the fill.
    filled = fill_ndvi(read_observations(ledger.unit_path("observations.zarr")), ts_cfg)
    timings["observations"] = time.perf_counter() - tic
    tic = time.perf_counter()
    tmp = ledger.tmp_path("ndvi.zarr")
    write_zarr(filled.to_dataset(name="ndvi").rio.write_crs(crs), tmp, mode="w-")
    ledger.commit("ndvi.zarr", tmp, items)
    timings["gap_fill"] = time.perf_counter() - tic
    tic = time.perf_counter()
    filled_back = xr.open_zarr(ledger.unit_path("ndvi.zarr"))["ndvi"]
    tmp = ledger.tmp_path("phenology.zarr")
    write_zarr(phenology(filled_back).rio.write_crs(crs), tmp, mode="w-")
    ledger.commit("phenology.zarr", tmp, items)
    timings["phenology"] = time.perf_counter() - tic
    tic = time.perf_counter()
    plots = _plots(config, ledger) if config.plots else []
    timings["plots"] = time.perf_counter() - tic
    return filled, plots, timings


def timeseries_stage(
    config: TimeseriesStageConfig, *, dry_run: bool = False, scheduler: str | None = None
) -> dict[str, Any]:
    """Build (or keep) the NDVI time series of ``config.cube`` (+ ``config.harmonized``).

    Parameters
    ----------
    config
        The stage's settings.
    dry_run
        Report whether the products would be rebuilt; write nothing.
    scheduler
        Overrides ``config.scheduler``.

    Returns
    -------
    dict
        ``up_to_date``, ``stores``, ``plots``, ``observations``, ``steps``, ``seconds`` and
        ``timings`` (seconds per step: observations, gap_fill, phenology, plots).
    """
    from harmonize.timeseries import TimeSeriesConfig
    from pipelines.core.cluster import dask_scheduler

    t0 = time.perf_counter()
    ts_cfg = TimeSeriesConfig.build(**config.timeseries)
    fingerprint, items = _fingerprint(config, ts_cfg)
    ledger = Ledger(config.out, STAGE)
    up_to_date = ledger.meta.get("inputs") == fingerprint and all(ledger.committed(s) for s in STORES)
    report: dict[str, Any] = {
        "stage": STAGE,
        "out": str(config.out),
        "up_to_date": up_to_date,
        "dry_run": dry_run,
    }
    if up_to_date or dry_run:
        log.info("timeseries: %s", "up to date" if up_to_date else "would rebuild the time series")
        report["seconds"] = round(time.perf_counter() - t0, 3)
        return report
    with ledger.lock():
        ledger.clean()
        obs_ds = fused_observations(config, ts_cfg)
        with dask_scheduler(
            scheduler or config.scheduler,
            report=config.out / "performance-report.html",
            **config.cluster_kwargs(),
        ):
            filled, plots, timings = write_products(config, ledger, obs_ds, ts_cfg, sorted(items))
        ledger.meta["inputs"] = fingerprint
        ledger.save()
        report.update(
            {
                "stores": [str(ledger.unit_path(s)) for s in STORES],
                "plots": [str(p) for p in plots],
                "observations": int(obs_ds.sizes["time"]),
                "steps": int(filled.sizes["time"]),
                "seconds": round(time.perf_counter() - t0, 3),
                "timings": {k: round(v, 3) for k, v in timings.items()},
            }
        )
        ledger.log_run(observations=report["observations"], steps=report["steps"], seconds=report["seconds"])
    log.info(
        "timeseries: %d observations -> %d steps in %.1f s",
        report["observations"],
        report["steps"],
        report["seconds"],
    )
    return report


def _obs_chunks(obs: xr.Dataset, tile: int = 256, max_bytes: int = 64 * 2**20) -> dict[str, int]:
    """Chunks of the stored observations: the whole time axis per ``tile`` square (what the
    gap fill reads) unless that exceeds ``max_bytes``; then as many steps as fit."""
    steps = max(1, min(obs.sizes["time"], max_bytes // (4 * tile * tile)))
    return {"time": steps, "y": tile, "x": tile}


def _field_series(
    locations: dict[str, Any], arrays: dict[str, xr.DataArray | None]
) -> tuple[dict[str, Any], dict[str, xr.DataArray | None]]:
    """Field-mean series of every array, all computed in one pass, as a 1 x n-fields "grid".

    The plot takes the mean over a mask per field and per array; done lazily that reads each
    array once per field. Reducing here (one compute for all) and handing the plot one pixel
    per field gives the same curves.
    """
    import dask

    names = list(locations)
    if not names or not all(isinstance(v, xr.DataArray) for v in locations.values()):
        return locations, arrays
    out: dict[str, xr.DataArray | None] = {}
    for key, da in arrays.items():
        if da is None:
            out[key] = None
            continue
        masks = [xr.DataArray(np.asarray(locations[n].values, bool), dims=("y", "x")) for n in names]
        plain = da.drop_vars([c for c in ("y", "x") if c in da.coords])
        cols = [plain.where(m).mean(("y", "x"), skipna=True) for m in masks]
        out[key] = xr.concat(cols, dim="x", coords="minimal", compat="override").expand_dims("y", axis=1)
    computed = dask.compute(*[v for v in out.values() if v is not None])
    it = iter(computed)
    reduced: dict[str, xr.DataArray | None] = {}
    for key, v in out.items():
        if v is None:
            reduced[key] = None
            continue
        r = next(it)
        r = r.assign_coords(y=[0.0], x=np.arange(len(names), dtype=float))
        reduced[key] = r.assign_attrs(arrays[key].attrs)
    points = {n: (float(i), 0.0) for i, n in enumerate(names)}
    return points, reduced


def _plots(config: TimeseriesStageConfig, ledger: Ledger) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harmonize.plot import plot_clear_observations, plot_ndvi_maps, plot_ndvi_timeseries
    from harmonize.timeseries import ndvi

    obs = xr.open_zarr(ledger.unit_path("observations.zarr"))["ndvi"]
    filled = xr.open_zarr(ledger.unit_path("ndvi.zarr"))["ndvi"]
    truth_ds = truth = None
    if config.truth is not None:
        truth_ds = open_reference_store(config.truth)
        truth = ndvi(truth_ds)
    out = Path(config.out)
    paths = []
    if truth is not None:
        truth = truth.reindex(y=filled["y"].values, x=filled["x"].values, method="nearest", tolerance=1.0)
    points, series = _field_series(
        _plot_locations(truth_ds, filled), {"obs": obs, "filled": filled, "truth": truth}
    )
    fig = plot_ndvi_timeseries(
        points, series["obs"], series["filled"], series["truth"], path=out / "ndvi_series.png"
    )
    plt.close(fig)
    paths.append(out / "ndvi_series.png")
    times = filled["time"].values
    dates = [times[int(k * (len(times) - 1) / 3)] for k in range(4)] if len(times) else []
    fig = plot_ndvi_maps(filled, dates, path=out / "ndvi_maps.png")
    plt.close(fig)
    paths.append(out / "ndvi_maps.png")
    clear = obs.notnull().rename("clear")
    fig = plot_clear_observations(clear, path=out / "clear_observations.png")
    plt.close(fig)
    paths.append(out / "clear_observations.png")
    return paths


main = stage_main(TimeseriesStageConfig, timeseries_stage)


if __name__ == "__main__":
    main()
