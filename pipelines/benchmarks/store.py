"""Benchmark: ingest with Landsat at native resolution against Landsat resampled to 10 m.

Usage::

    python -m pipelines.benchmarks store [--preset demo] [--seed 0] [--size-km 2.56] [--world DIR] [--out DIR]
        [--store zarr|icechunk] [--scheduler threads] [--tiny]

Both variants ingest the same simulated world in one run (10 m first, then native), each into
a fresh folder: seconds of the whole ingest stage, bytes on disk per Landsat scene (its store's
files; for ``--store icechunk`` the repository's chunks are counted per scene through the
folders' variant, so use ``zarr`` for the per-scene figure), and how far the native store's
lazy 10 m view is from the 10 m store (median/p99 absolute reflectance difference on clear
Landsat pixels, agreement of ``clear``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipelines.benchmarks.common import options_from_argv, print_document

__all__ = ["store_benchmark", "command", "run"]


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _landsat_bytes(out: Path) -> list[int]:
    return [_bytes(p) for p in sorted((out / "scenes").glob("landsat_*.zarr"))]


def _ingest(world: Path, out: Path, *, native: bool, store: str, scheduler: str) -> dict[str, Any]:
    from pipelines.stages.ingest import IngestConfig, ingest

    shutil.rmtree(out, ignore_errors=True)
    cfg = IngestConfig(source=str(world), out=out, scheduler=scheduler, native=native, store=store)
    t0 = time.perf_counter()
    report = ingest(cfg)
    seconds = time.perf_counter() - t0
    sizes = _landsat_bytes(out) if store == "zarr" else []
    return {
        "seconds": round(seconds, 2),
        "stores": len(report["committed"]),
        "bytes_total": _bytes(out),
        "landsat_scenes": len(sizes),
        "bytes_per_landsat_scene": int(np.mean(sizes)) if sizes else None,
    }


def _view_difference(ten: Path, native: Path) -> dict[str, float]:
    from pipelines.core.stores import open_cube

    a, b = open_cube(ten), open_cube(native)
    ls = np.flatnonzero(np.asarray(a["sensor"].values) == "landsat")
    a, b = a.isel(time=ls), b.isel(time=ls)
    out: dict[str, float] = {}
    for band in ("red", "nir", "pan"):
        x, y = a[band].values, b[band].values
        ok = np.isfinite(x) & np.isfinite(y) & a["clear"].values
        d = np.abs(x - y)[ok]
        out[f"{band}_median_abs"] = round(float(np.median(d)), 5)
        out[f"{band}_p99_abs"] = round(float(np.percentile(d, 99)), 5)
    out["clear_agreement"] = round(float((a["clear"].values == b["clear"].values).mean()), 4)
    return out


def store_benchmark(
    *,
    preset: str = "demo",
    seed: int | None = None,
    size_km: float | None = None,
    tiny: bool = False,
    world: Path | None = None,
    out: Path | None = None,
    store: str = "zarr",
    scheduler: str = "threads",
) -> dict[str, Any]:
    """Ingest one world twice (Landsat at 10 m, then native) and compare; see the module docstring."""
    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="harmonize-store-bench-"))
    if world is None:
        from harmonize.world import create_world
        from harmonize.world.presets import preset_config

        world = root / "world"
        if not (world / "items.parquet").exists():
            overrides: dict[str, Any] = {} if seed is None else {"seed": seed}
            if size_km is not None:
                overrides["size_km"] = size_km
            create_world(world, preset_config(preset, tiny=tiny, **overrides), progress=False)
    ten = _ingest(world, root / "ingest-10m", native=False, store=store, scheduler=scheduler)
    nat = _ingest(world, root / "ingest-native", native=True, store=store, scheduler=scheduler)
    figures: dict[str, Any] = {
        "world": str(world),
        "preset": preset,
        "seed": seed,
        "size_km": size_km,
        "store": store,
        "landsat_10m": ten,
        "landsat_native": nat,
        "ingest_speedup": round(ten["seconds"] / nat["seconds"], 2),
    }
    if ten["bytes_per_landsat_scene"] and nat["bytes_per_landsat_scene"]:
        figures["landsat_bytes_ratio"] = round(
            nat["bytes_per_landsat_scene"] / ten["bytes_per_landsat_scene"], 3
        )
    figures["view_vs_10m"] = _view_difference(root / "ingest-10m", root / "ingest-native")
    return figures


@click.command("store")
@click.option("--preset", default="demo", show_default=True, help="World preset to simulate.")
@click.option("--seed", type=int, default=None, help="World seed (default: the preset's).")
@click.option("--size-km", type=float, default=None, help="World size (default: the preset's).")
@click.option("--tiny", is_flag=True, help="The preset's tiny variant (seconds).")
@click.option("--world", type=click.Path(path_type=Path), default=None, help="An existing world folder.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Working folder (default: a temporary one)."
)
@click.option("--store", type=click.Choice(["zarr", "icechunk"]), default="zarr", show_default=True)
@click.option("--scheduler", default="threads", show_default=True)
def command(**kw: Any) -> None:
    """Ingest with Landsat at native resolution vs resampled to 10 m (seconds, bytes, view error)."""
    print_document("store", store_benchmark(**kw))


def run(argv: list[str]) -> dict[str, Any]:
    """The benchmark's figures for a command line (for tests)."""
    return store_benchmark(**options_from_argv(command, argv))
