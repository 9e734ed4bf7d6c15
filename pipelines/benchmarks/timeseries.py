"""Benchmark of gap-filling throughput on a synthetic cloud-gapped NDVI cube.

Usage::

    python -m pipelines.benchmarks timeseries [--dates 73] [--size 512] [--chunk 256]
        [--methods linear,whittaker,harmonic,rbf] [--cloud 0.4] [--workers N]
        [--lmbda 100|gcv] [--weighted]

Reports, per method, wall seconds and pixel-time-steps per second (input dates x pixels / s) for
``gap_fill(...).compute()`` with dask's threaded scheduler, plus the RMSE of the filled series
against the noise-free curve the cube was drawn from. ``--weighted`` passes random per-pixel
observation weights (0.2 to 1) to time the weighted kernels.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click
import dask
import numpy as np
import pandas as pd
import xarray as xr

from harmonize.gapfill import METHODS, gap_fill
from pipelines.benchmarks.common import options_from_argv, print_document

__all__ = ["synthetic_ndvi", "timeseries_benchmark", "command", "run"]

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def synthetic_ndvi(
    dates: int, size: int, chunk: int, cloud: float, seed: int = 0
) -> tuple[xr.DataArray, xr.DataArray]:
    """A ``(dates, size, size)`` NDVI cube with double-logistic seasons, noise and clouds, and its truth."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2023-01-03T10:30", periods=dates, freq="5D")
    doy = np.asarray(t.day_of_year, dtype=np.float32)[:, None, None]
    sos = rng.uniform(90, 150, (1, size, size)).astype(np.float32)
    los = rng.uniform(90, 170, (1, size, size)).astype(np.float32)
    truth = 0.15 + 0.7 * (
        1 / (1 + np.exp(-0.1 * (doy - sos))) + 1 / (1 + np.exp(0.1 * (doy - sos - los))) - 1
    )
    obs = truth + rng.normal(0, 0.02, truth.shape).astype(np.float32)
    obs[rng.random(obs.shape) < cloud] = np.nan
    coords = {"time": t, "y": np.arange(size) * -10.0, "x": np.arange(size) * 10.0}
    chunks = {"time": -1, "y": chunk, "x": chunk}
    obs_da = xr.DataArray(obs.astype(np.float32), dims=("time", "y", "x"), coords=coords).chunk(chunks)
    truth_da = xr.DataArray(truth.astype(np.float32), dims=("time", "y", "x"), coords=coords)
    return obs_da, truth_da


def _weights_like(obs: xr.DataArray) -> xr.DataArray:
    """Random observation weights in [0.2, 1], chunked like ``obs``."""
    rng = np.random.default_rng(1)
    return xr.DataArray(rng.uniform(0.2, 1.0, obs.shape).astype(np.float32), dims=obs.dims).chunk(
        dict(zip(obs.dims, obs.data.chunksize, strict=True))
    )


def timeseries_benchmark(
    *,
    dates: int = 73,
    size: int = 512,
    chunk: int = 256,
    cloud: float = 0.4,
    methods: str = ",".join(METHODS),
    freq: str = "5D",
    lmbda: str = "100",
    weighted: bool = False,
    workers: int = CORES,
) -> dict[str, Any]:
    """Gap-fill a synthetic cube with each method, timing it and scoring it against its curve.

    Parameters
    ----------
    dates, size, chunk, cloud
        The synthetic cube (:func:`synthetic_ndvi`): dates, side, dask chunk, cloud fraction.
    methods
        Comma-separated :data:`harmonize.gapfill.METHODS`.
    freq
        Output time step.
    lmbda
        Whittaker lambda: a number or ``"gcv"``.
    weighted
        Pass random per-pixel observation weights (0.2 to 1).
    workers
        dask threads.

    Returns
    -------
    dict
        ``cube`` (the settings) and ``methods``: per method seconds, pixel-time-steps per second,
        output steps, RMSE against the noise-free curve and the filled fraction.
    """
    obs, truth = synthetic_ndvi(dates, size, chunk, cloud)
    pixel_steps = dates * size * size
    lmbda_value: float | str = lmbda if lmbda == "gcv" else float(lmbda)
    weights = _weights_like(obs) if weighted else None
    results: dict[str, Any] = {}
    with dask.config.set(scheduler="threads", num_workers=workers):
        for method in methods.split(","):
            t0 = time.perf_counter()
            filled = gap_fill(
                obs, method=method, freq=freq, lmbda=lmbda_value, n_harmonics=3, weights=weights
            ).compute()
            wall = time.perf_counter() - t0
            est = filled.interp(time=truth.time)
            err = (est - truth).values
            ok = np.isfinite(err)
            results[method] = {
                "seconds": round(wall, 3),
                "pixel_time_steps_per_s": round(pixel_steps / wall),
                "output_steps": int(filled.sizes["time"]),
                "rmse_vs_truth": round(float(np.sqrt(np.mean(err[ok] ** 2))), 5),
                "filled_fraction": round(float(ok.mean()), 4),
            }
    return {
        "cube": {
            "dates": dates,
            "size": size,
            "chunk": chunk,
            "cloud": cloud,
            "pixel_time_steps": pixel_steps,
            "workers": workers,
            "freq": freq,
            "lmbda": lmbda,
            "weighted": weighted,
        },
        "methods": results,
    }


@click.command(name="timeseries")
@click.option("--dates", type=int, default=73, show_default=True)
@click.option("--size", type=int, default=512, show_default=True)
@click.option("--chunk", type=int, default=256, show_default=True)
@click.option("--cloud", type=float, default=0.4, show_default=True)
@click.option("--methods", default=",".join(METHODS), show_default=True)
@click.option("--freq", default="5D", show_default=True)
@click.option("--lmbda", default="100", show_default=True, help="Whittaker lambda: a number or 'gcv'.")
@click.option("--weighted", is_flag=True, help="Random observation weights in [0.2, 1].")
@click.option("--workers", type=int, default=CORES, show_default=True)
def command(**options: Any) -> None:
    """Gap-filling throughput on a synthetic cloud-gapped NDVI cube."""
    print_document("timeseries", timeseries_benchmark(**options))


def run(argv: list[str]) -> dict[str, Any]:
    """The figures for the options ``argv`` of ``python -m pipelines.benchmarks timeseries``."""
    return timeseries_benchmark(**options_from_argv(command, argv))
