"""Benchmark: load a simulated world into a cube with :func:`harmonize.cube.load_cube`.

Usage::

    python -m pipelines.benchmarks load [--world DIR] [--tiny] [--threads N] [--repeat 3]
                                        [--chunk 512] [--no-stackstac] [--no-warp]

Three ways of reading the same assets onto the same 10 m grid, in the same run, warm file cache:

``cube``
    ``load_cube(items).compute()``: odc-stac reads, resamples and fuses every band, QA and pan
    asset onto the common grid; scale/offset, masks and pan alignment on top.
``rasterio``
    The floor: one ``rasterio`` windowed read per asset of the window covering the grid, with
    ``out_shape`` the grid's shape (bilinear; nearest for QA), in a thread pool of the same size,
    no reprojection, fusing, scaling or masking.
``cube_dn``
    The same with ``reflectance=False``: raw uint16 digital numbers, what the rasterio reads
    return (the float32 reflectance cube is twice their bytes).
``cube_warp``
    ``cube`` with every resampled read through GDAL's warper (the loader before scaled reads).
``stackstac``
    ``stackstac.stack`` of the same items and assets on the same grid, computed with the same
    dask scheduler.

Throughput is "asset megapixels per second": (assets read) x (grid pixels) / seconds, the same
numerator for all three, best of ``--repeat`` runs. Peak memory is the largest resident-set
growth during a run (sampled every 10 ms, so GDAL's and numpy's memory both count).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import numpy as np

from harmonize.bands import PAN, REFLECTANCE_BANDS
from pipelines.benchmarks.common import options_from_argv, print_document

__all__ = ["load_benchmark", "command", "run"]

CORES = len(os.sched_getaffinity(0))


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


def _world(world: Path | None, tiny: bool):  # noqa: ANN202 - harmonize.world.World
    """The world in ``world``, or the demo (or tiny) world cached in the temporary directory."""
    from harmonize.world import WorldConfig, create_world, open_world

    if world is not None:
        return open_world(world)
    cfg = WorldConfig.tiny() if tiny else WorldConfig()
    tag = hashlib.sha1(cfg.model_dump_json().encode()).hexdigest()[:10]
    root = Path(tempfile.gettempdir()) / f"harmonize-bench-world-{tag}"
    return create_world(root, cfg, progress=False)  # idempotent: reuses a finished world


def _assets_read(item: Any) -> list[tuple[str, bool]]:
    """(asset key, is_quality) of every asset the cube reads from ``item``."""
    from harmonize.providers import profile_for_item

    p = profile_for_item(item)
    if p.level == "L1":
        return [(p.assets[PAN], False)]
    return [(p.assets[b], False) for b in REFLECTANCE_BANDS] + [(p.qa_asset, True)]


def _asset_reads(items: list[Any]) -> list[tuple[str, bool]]:
    """(href, is_quality) of every asset the cube reads."""
    reads = []
    for it in items:
        for key, qa in _assets_read(it):
            reads.append((it.assets[key].get_absolute_href() or it.assets[key].href, qa))
    return reads


def _rasterio_reader(gbox: Any) -> Callable[[tuple[str, bool]], np.ndarray]:
    """A function reading one asset's window covering ``gbox`` at the grid's shape, no reprojection."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    ny, nx = gbox.shape.y, gbox.shape.x
    left, bottom, right, top = gbox.extent.boundingbox

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

    return read_one


def _pandas3_shim(stackstac: Any) -> None:
    """Let stackstac (<= 0.5.1) run on pandas 3, which removed ``to_datetime``'s
    ``infer_datetime_format`` (stackstac's ``to_coords`` still passes it, and the bench extra
    resolves the newest pandas). Only stackstac's own reference to pandas is wrapped; the
    argument has had no effect since pandas 2 (the format is always inferred)."""
    import types

    import pandas as pd

    prepare = stackstac.prepare
    if getattr(prepare.pd, "_harmonize_shim", False):
        return

    def to_datetime(*args: Any, infer_datetime_format: Any = None, **kwargs: Any) -> Any:
        return pd.to_datetime(*args, **kwargs)

    shim = types.SimpleNamespace(**{k: getattr(pd, k) for k in dir(pd) if not k.startswith("__")})
    shim.to_datetime, shim._harmonize_shim = to_datetime, True
    prepare.pd = shim


def _stackstac_figures(
    items: list[Any], gbox: Any, chunk: int, threads: int, repeat: int, mpix: float
) -> dict[str, Any]:
    """stackstac.stack of the same items and assets on the same grid, best of ``repeat``."""
    import dask
    import stackstac
    from rasterio.enums import Resampling

    _pandas3_shim(stackstac)

    assets = sorted({k for it in items for k, _ in _assets_read(it)})

    def stack() -> Any:
        arr = stackstac.stack(
            [it.to_dict() for it in items],
            assets=assets,
            epsg=gbox.crs.epsg,
            resolution=gbox.resolution.x,
            bounds=tuple(gbox.extent.boundingbox),
            chunksize=chunk,
            dtype="float32",
            fill_value=np.float32(np.nan),
            rescale=False,
            resampling=Resampling.bilinear,
            snap_bounds=False,
        )
        return arr.compute(scheduler="threads", num_workers=threads)

    with dask.config.set(scheduler="threads"):
        stack()
        figures = _figures(mpix, *_best(stack, repeat))
    return {**figures, "note": "reads every (item, asset) pair it is given; no fusing, scaling or masks"}


def _ratios(results: dict[str, Any]) -> dict[str, float]:
    """Throughput ratios (>1: the cube is faster), by wall time and by CPU time."""
    out = {}
    for other in ("rasterio", "stackstac", "cube_warp"):
        if other in results:
            out[f"cube_vs_{other}"] = round(results[other]["seconds"] / results["cube"]["seconds"], 3)
            out[f"cube_vs_{other}_cpu"] = round(
                results[other]["cpu_seconds"] / results["cube"]["cpu_seconds"], 3
            )
    if "cube_dn" in results:  # raw DNs: the same values (uint16) the rasterio reads return
        out["cube_dn_vs_rasterio"] = round(results["rasterio"]["seconds"] / results["cube_dn"]["seconds"], 3)
        out["cube_dn_vs_rasterio_cpu"] = round(
            results["rasterio"]["cpu_seconds"] / results["cube_dn"]["cpu_seconds"], 3
        )
    for name in ("cube", "cube_dn", "cube_warp"):
        if name in results and results["rasterio"]["peak_rss_mb"] > 0:
            out[f"{name}_rss_vs_rasterio"] = round(
                results[name]["peak_rss_mb"] / results["rasterio"]["peak_rss_mb"], 2
            )
    return out


def load_benchmark(
    *,
    world: Path | None = None,
    tiny: bool = False,
    threads: int = CORES,
    repeat: int = 3,
    chunk: int = 512,
    stackstac: bool = True,
    warp: bool = True,
) -> dict[str, Any]:
    """Time load_cube against rasterio and stackstac on one world.

    Parameters
    ----------
    world
        An existing world folder (default: the demo world, created once and cached).
    tiny
        Use the tiny test world instead of the demo default.
    threads
        Threads of every reader.
    repeat
        Runs of each reader (the best counts).
    chunk
        Spatial chunk of the cube (pixels).
    stackstac
        Also time stackstac.
    warp
        Also time the cube with every resampled read through GDAL's warper (``cube_warp``, the
        loader before :func:`harmonize.cube.gdal.scaled_reads`).

    Returns
    -------
    dict
        The world, grid and asset counts; per reader seconds, CPU seconds, megapixels per second
        and peak memory; the cube's throughput ratios against the others.
    """
    import pystac
    import rustac

    from harmonize.cube import load_cube
    from harmonize.cube.gdal import scaled_reads

    w = _world(world, tiny)
    items = [pystac.Item.from_dict(d) for d in rustac.read_sync(str(w.items_path))["features"]]
    gbox = w.geobox
    ny, nx = gbox.shape.y, gbox.shape.x
    reads = _asset_reads(items)
    mpix = len(reads) * ny * nx / 1e6
    chunks = {"time": 1, "y": chunk, "x": chunk}

    def cube(reflectance: bool = True) -> Any:
        return load_cube(items, geobox=gbox, chunks=chunks, reflectance=reflectance).compute(
            scheduler="threads", num_workers=threads
        )

    def cube_warp() -> Any:  # the loader before scaled reads: every resampled read warped
        before = scaled_reads(False)
        try:
            return cube()
        finally:
            scaled_reads(before)

    read_one = _rasterio_reader(gbox)

    def raw() -> Any:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(read_one, reads))

    results: dict[str, Any] = {}
    raw()  # warm the file cache for everyone
    results["rasterio"] = _figures(mpix, *_best(raw, repeat))
    cube()  # warm imports and GDAL
    results["cube"] = _figures(mpix, *_best(cube, repeat))
    results["cube_dn"] = _figures(mpix, *_best(lambda: cube(False), repeat))
    if warp:
        results["cube_warp"] = _figures(mpix, *_best(cube_warp, repeat))
    if stackstac:
        results["stackstac"] = _stackstac_figures(items, gbox, chunk, threads, repeat, mpix)
    return {
        "world": {
            "path": str(w.root),
            "size_km": w.config.size_km,
            "start": str(w.config.start),
            "end": str(w.config.end),
            "items": len(items),
        },
        "grid": {"shape": [ny, nx], "crs": str(gbox.crs), "resolution": gbox.resolution.x},
        "asset_reads": len(reads),
        "asset_megapixels": round(mpix, 2),
        "threads": threads,
        "repeat": repeat,
        **results,
        **_ratios(results),
    }


@click.command(name="load")
@click.option(
    "--world",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="An existing world directory (default: the demo world, cached).",
)
@click.option("--tiny", is_flag=True, help="Use the tiny test world instead of the demo default.")
@click.option("--threads", type=int, default=CORES, show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True)
@click.option("--chunk", type=int, default=512, show_default=True, help="Spatial chunk of the cube (pixels).")
@click.option("--stackstac/--no-stackstac", default=True, show_default=True, help="Also time stackstac.")
@click.option(
    "--warp/--no-warp", default=True, show_default=True, help="Also time the cube with warped reads only."
)
def command(**options: Any) -> None:
    """Load a simulated world with load_cube, rasterio and stackstac; compare throughput."""
    print_document("load", load_benchmark(**options))


def run(argv: list[str]) -> dict[str, Any]:
    """The figures for the options ``argv`` of ``python -m pipelines.benchmarks load``."""
    return load_benchmark(**options_from_argv(command, argv))
