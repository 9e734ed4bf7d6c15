"""Benchmark: load a simulated world into a cube with :func:`harmonize.cube.load_cube`.

Usage::

    python -m pipelines.benchmarks load [--world DIR] [--tiny] [--threads N] [--repeat 3]
                                       [--chunk 512] [--no-stackstac]

Three ways of reading the same assets onto the same 10 m grid, in the same run, warm file cache:

``cube``
    ``load_cube(items).compute()``: odc-stac reads, resamples and fuses every band, QA and pan
    asset onto the common grid; scale/offset, masks and pan alignment on top.
``rasterio``
    The floor: one ``rasterio`` windowed read per asset of the window covering the grid, with
    ``out_shape`` the grid's shape (bilinear; nearest for QA), in a thread pool of the same size,
    no reprojection, fusing, scaling or masking.
``stackstac``
    ``stackstac.stack`` of the same items and assets on the same grid, computed with the same
    dask scheduler.

Throughput is "asset megapixels per second": (assets read) x (grid pixels) / seconds, the same
numerator for all three, best of ``--repeat`` runs. Peak memory is the largest resident-set
growth during a run (sampled every 10 ms, so GDAL's and numpy's memory both count).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from harmonize.bands import PAN, REFLECTANCE_BANDS


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class _PeakRSS:
    """Largest RSS growth (MB) over a ``with`` block, sampled in a thread."""

    def __init__(self, every: float = 0.01) -> None:
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> _PeakRSS:
        self.base = _rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb() - self.base)
            time.sleep(self.every)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb() - self.base)


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    """Best wall time, best CPU time and largest peak RSS growth over ``repeat`` runs of ``fn``.

    CPU time (all threads of this process) is the steadier figure on a shared machine.
    """
    times, cpus, peaks = [], [], []
    for _ in range(repeat):
        with _PeakRSS() as mem:
            c0, t0 = time.process_time(), time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        del out
        peaks.append(mem.peak)
    return min(times), min(cpus), max(peaks)


def _figures(mpix: float, wall: float, cpu: float, mem: float) -> dict[str, float]:
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "mpix_per_s": round(mpix / wall, 2),
        "mpix_per_cpu_s": round(mpix / cpu, 2),
        "peak_rss_mb": round(mem, 1),
    }


def _world(args: argparse.Namespace):  # noqa: ANN202 - harmonize.world.World
    from harmonize.world import WorldConfig, create_world, open_world

    if args.world is not None:
        return open_world(args.world)
    cfg = WorldConfig.tiny() if args.tiny else WorldConfig()
    tag = hashlib.sha1(cfg.model_dump_json().encode()).hexdigest()[:10]
    root = Path(tempfile.gettempdir()) / f"harmonize-bench-world-{tag}"
    return create_world(root, cfg, progress=False)  # idempotent: reuses a finished world


def _asset_reads(items: list, keys_of: Callable) -> list[tuple[str, bool]]:  # noqa: ANN001
    """(href, is_quality) of every asset the cube reads."""
    reads = []
    for it in items:
        for key, qa in keys_of(it):
            reads.append((it.assets[key].get_absolute_href() or it.assets[key].href, qa))
    return reads


def run(argv: list[str]) -> dict[str, Any]:
    """Time load_cube against rasterio and stackstac on one world; return the figures."""
    ap = argparse.ArgumentParser(prog="python -m pipelines.benchmarks load")
    ap.add_argument(
        "--world", type=Path, default=None, help="an existing world directory (default: demo world, cached)"
    )
    ap.add_argument("--tiny", action="store_true", help="use the tiny test world instead of the demo default")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=512, help="spatial chunk of the cube (pixels)")
    ap.add_argument("--no-stackstac", action="store_true")
    args = ap.parse_args(argv)

    import dask
    import pystac
    import rasterio
    import rustac
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    from harmonize.cube import load_cube
    from harmonize.providers import profile_for_item

    world = _world(args)
    items = [pystac.Item.from_dict(d) for d in rustac.read_sync(str(world.items_path))["features"]]
    gbox = world.geobox
    ny, nx = gbox.shape.y, gbox.shape.x
    left, bottom, right, top = gbox.extent.boundingbox

    def keys_of(it: pystac.Item) -> list[tuple[str, bool]]:
        p = profile_for_item(it)
        if p.level == "L1":
            return [(p.assets[PAN], False)]
        return [(p.assets[b], False) for b in REFLECTANCE_BANDS] + [(p.qa_asset, True)]

    reads = _asset_reads(items, keys_of)
    mpix = len(reads) * ny * nx / 1e6
    chunks = {"time": 1, "y": args.chunk, "x": args.chunk}
    scheduler = dict(scheduler="threads", num_workers=args.threads)

    def cube() -> Any:
        return load_cube(items, geobox=gbox, chunks=chunks).compute(**scheduler)

    def read_one(href_qa: tuple[str, bool]) -> np.ndarray:
        href, qa = href_qa
        with rasterio.open(href) as src:
            win = from_bounds(left, bottom, right, top, src.transform)
            return src.read(
                1,
                window=win,
                out_shape=(ny, nx),
                boundless=False,
                resampling=Resampling.nearest if qa else Resampling.bilinear,
            )

    def raw() -> Any:
        with ThreadPoolExecutor(args.threads) as pool:
            return list(pool.map(read_one, reads))

    results: dict[str, Any] = {}
    raw()  # warm the file cache for everyone
    results["rasterio"] = _figures(mpix, *_best(raw, args.repeat))
    cube()  # warm imports and GDAL
    results["cube"] = _figures(mpix, *_best(cube, args.repeat))

    if not args.no_stackstac:
        import stackstac

        assets = sorted({k for it in items for k, _ in keys_of(it)})

        def stack() -> Any:
            arr = stackstac.stack(
                [it.to_dict() for it in items],
                assets=assets,
                epsg=gbox.crs.epsg,
                resolution=gbox.resolution.x,
                bounds=(left, bottom, right, top),
                chunksize=args.chunk,
                dtype="float32",
                fill_value=np.float32(np.nan),
                rescale=False,
                resampling=Resampling.bilinear,
                snap_bounds=False,
            )
            return arr.compute(**scheduler)

        with dask.config.set(scheduler="threads"):
            stack()
            figures = _figures(mpix, *_best(stack, args.repeat))
        results["stackstac"] = {
            **figures,
            "note": "reads every (item, asset) pair it is given; no fusing, scaling or masks",
        }

    out = {
        "world": {
            "path": str(world.root),
            "size_km": world.config.size_km,
            "start": str(world.config.start),
            "end": str(world.config.end),
            "items": len(items),
        },
        "grid": {"shape": [ny, nx], "crs": str(gbox.crs), "resolution": gbox.resolution.x},
        "asset_reads": len(reads),
        "asset_megapixels": round(mpix, 2),
        "threads": args.threads,
        "repeat": args.repeat,
        **results,
        # Throughput ratios (>1: the cube is faster), by wall time and by CPU time.
        "cube_vs_rasterio": round(results["rasterio"]["seconds"] / results["cube"]["seconds"], 3),
        "cube_vs_rasterio_cpu": round(results["rasterio"]["cpu_seconds"] / results["cube"]["cpu_seconds"], 3),
    }
    if "stackstac" in results:
        out["cube_vs_stackstac"] = round(results["stackstac"]["seconds"] / results["cube"]["seconds"], 3)
        out["cube_vs_stackstac_cpu"] = round(
            results["stackstac"]["cpu_seconds"] / results["cube"]["cpu_seconds"], 3
        )
    return out
