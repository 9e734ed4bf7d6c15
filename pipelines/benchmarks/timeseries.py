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

import argparse
import os
import time
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from harmonize.gapfill import METHODS, gap_fill


def synthetic_ndvi(
    dates: int, size: int, chunk: int, cloud: float, seed: int = 0
) -> tuple[xr.DataArray, xr.DataArray]:
    """A ``(dates, size, size)`` NDVI cube with double-logistic seasons, noise and clouds, and its truth."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2023-01-03T10:30", periods=dates, freq="5D")
    doy = np.asarray(t.dayofyear, dtype=np.float32)[:, None, None]
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


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; return figures as a JSON-able dict."""
    p = argparse.ArgumentParser(prog="python -m pipelines.benchmarks timeseries")
    p.add_argument("--dates", type=int, default=73)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--cloud", type=float, default=0.4)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--freq", default="5D")
    p.add_argument("--lmbda", default="100", help="Whittaker lambda: a number or 'gcv'")
    p.add_argument("--weighted", action="store_true", help="random observation weights in [0.2, 1]")
    p.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    )
    args = p.parse_args(argv)

    obs, truth = synthetic_ndvi(args.dates, args.size, args.chunk, args.cloud)
    pixel_steps = args.dates * args.size * args.size
    lmbda: float | str = args.lmbda if args.lmbda == "gcv" else float(args.lmbda)
    weights = None
    if args.weighted:
        rng = np.random.default_rng(1)
        weights = xr.DataArray(rng.uniform(0.2, 1.0, obs.shape).astype(np.float32), dims=obs.dims).chunk(
            dict(zip(obs.dims, obs.data.chunksize, strict=True))
        )
    results: dict[str, Any] = {}
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            filled = gap_fill(
                obs, method=method, freq=args.freq, lmbda=lmbda, n_harmonics=3, weights=weights
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
            "dates": args.dates,
            "size": args.size,
            "chunk": args.chunk,
            "cloud": args.cloud,
            "pixel_time_steps": pixel_steps,
            "workers": args.workers,
            "freq": args.freq,
            "lmbda": args.lmbda,
            "weighted": args.weighted,
        },
        "methods": results,
    }
