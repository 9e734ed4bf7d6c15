"""Where the demo writes each product, and readers of a finished demo folder.

Both the demo run (:mod:`pipelines.demo.run`) and its report (:mod:`pipelines.demo.report`) read
this layout, so neither needs the other to find a product.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from pipelines.core import stores

__all__ = ["demo_paths", "open_cube", "open_harmonized", "open_timeseries"]


def demo_paths(out: str | Path) -> dict[str, Path]:
    """Where the demo writes each product under ``out``."""
    root = Path(out)
    return {
        "world": root / "world",
        "truth": root / "world" / "truth.zarr",
        "cube": root / "cube",
        "pairs": root / "pairs",
        "pair_index": root / "pairs" / stores.INDEX,
        "model": root / "model",
        "model_package": stores.model_package(root / "model"),
        "harmonized": root / "harmonized",
        "timeseries": root / "timeseries",
        "report": root / "report",
        "timings": root / "timings.json",
        "demo": root / "demo.json",
    }


def open_cube(out: str | Path) -> xr.Dataset:
    """The demo's ingested, co-registered cube (both sensors), lazy."""
    return stores.open_cube(demo_paths(out)["cube"])


def open_harmonized(out: str | Path) -> xr.Dataset:
    """The demo's harmonized Landsat dates (the model's output), lazy."""
    return stores.open_harmonized(demo_paths(out)["harmonized"])


def open_timeseries(out: str | Path) -> xr.Dataset:
    """The demo's NDVI products: ``ndvi`` (gap-filled), ``observations`` and phenology, lazy."""
    return stores.open_timeseries(demo_paths(out)["timeseries"])
