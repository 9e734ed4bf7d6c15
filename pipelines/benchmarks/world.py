"""Benchmark: simulate the demo-default world and report time, disk use and scene counts.

Usage::

    python -m pipelines.benchmarks world [--out DIR] [--size-km 5.12] [--start 2023-01-01] [--end 2023-12-31]
                                        [--seed 0] [--workers 2] [--keep]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from harmonize.world import WorldConfig, create_world
from pipelines.benchmarks.common import options_from_argv, print_document

__all__ = ["world_benchmark", "command", "run"]

DEFAULTS = WorldConfig()


def _disk_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def world_benchmark(
    *,
    out: Path | None = None,
    size_km: float = DEFAULTS.size_km,
    start: str = str(DEFAULTS.start),
    end: str = str(DEFAULTS.end),
    seed: int = 0,
    workers: int = 2,
    keep: bool = False,
) -> dict[str, Any]:
    """Create a world from scratch, timing it.

    Parameters
    ----------
    out
        Where to write (default: a temporary directory, deleted afterwards unless ``keep``).
    size_km, start, end, seed
        The :class:`harmonize.world.WorldConfig` fields.
    workers
        Processes writing scenes.
    keep
        Keep a temporary world (its path is reported).

    Returns
    -------
    dict
        The config, seconds, CPU seconds, disk use (total and per part), scene counts, files and
        the world's path (``None`` once deleted).
    """
    cfg = WorldConfig(size_km=size_km, start=start, end=end, seed=seed)
    tmp = None
    if out is None:
        tmp = tempfile.mkdtemp(prefix="harmonize-world-")
        out = Path(tmp) / "world"
    try:
        t0 = time.perf_counter()
        world = create_world(out, cfg, progress=False, overwrite=True, workers=workers)
        seconds = time.perf_counter() - t0
        scenes = world.scenes
        parts = {
            p.name: round(_disk_mb(p) if p.is_dir() else p.stat().st_size / 1e6, 2) for p in out.iterdir()
        }
        return {
            "config": cfg.model_dump(mode="json"),
            "seconds": round(seconds, 2),
            "cpu_seconds": round(sum(os.times()[:2]), 2),
            "disk_mb": round(_disk_mb(out), 2),
            "disk_mb_by_part": parts,
            "scenes": {
                "sentinel-2-l2a": sum(s["sensor"] == "sentinel-2" for s in scenes),
                "landsat-c2-l2": sum(s["sensor"] == "landsat" for s in scenes),
                "landsat-c2l1": sum(s["l1_id"] is not None for s in scenes),
                "dates": int(world.truth.sizes["time"]),
            },
            "files": sum(1 for p in out.rglob("*") if p.is_file()),
            "path": str(out) if (keep or tmp is None) else None,
        }
    finally:
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)


@click.command(name="world")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write (default: a temporary directory).",
)
@click.option("--size-km", type=float, default=DEFAULTS.size_km, show_default=True)
@click.option("--start", default=str(DEFAULTS.start), show_default=True)
@click.option("--end", default=str(DEFAULTS.end), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the world (default: delete it afterwards).")
def command(**options: Any) -> None:
    """Simulate the demo-default world; report time, disk use and scene counts."""
    print_document("world", world_benchmark(**options))


def run(argv: list[str]) -> dict[str, Any]:
    """The figures for the options ``argv`` of ``python -m pipelines.benchmarks world``."""
    return world_benchmark(**options_from_argv(command, argv))
