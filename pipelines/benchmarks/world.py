"""Benchmark: simulate the demo-default world and report time, disk use and scene counts.

Usage::

    python -m pipelines.benchmarks world [--out DIR] [--size-km 5.12] [--start 2023-01-01] [--end 2023-12-31]
                                        [--seed 0] [--workers 2] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from harmonize.world import WorldConfig, create_world


def _disk_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def run(argv: list[str]) -> dict[str, Any]:
    """Create a world from scratch, timing it; return the figures as a dict."""
    ap = argparse.ArgumentParser(prog="python -m pipelines.benchmarks world")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--size-km", type=float, default=WorldConfig().size_km)
    ap.add_argument("--start", default=str(WorldConfig().start))
    ap.add_argument("--end", default=str(WorldConfig().end))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the world (default: delete it afterwards)")
    args = ap.parse_args(argv)
    cfg = WorldConfig(size_km=args.size_km, start=args.start, end=args.end, seed=args.seed)
    tmp = None
    if args.out is None:
        tmp = tempfile.mkdtemp(prefix="harmonize-world-")
        out = Path(tmp) / "world"
    else:
        out = args.out
    try:
        t0 = time.perf_counter()
        world = create_world(out, cfg, progress=False, overwrite=True, workers=args.workers)
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
            "path": str(out) if (args.keep or tmp is None) else None,
        }
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
