"""Where the demo writes each product, and readers of a finished demo folder.

Both the demo run (:mod:`pipelines.demo.run`) and its report (:mod:`pipelines.demo.report`) read
this layout, so neither needs the other to find a product.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


#: Products opened already: (reader, folder) -> (its ledger's mtime and size, the lazy dataset).
_OPENED: dict[tuple[str, Path], tuple[tuple[int, int], xr.Dataset]] = {}


def _memo(reader: Any, folder: Path) -> xr.Dataset:
    """``reader(folder)``, opened once while the folder's ledger stays the same (opening a
    cube builds a view of every scene: seconds, and the report, its map and the LST section
    each ask); a shallow copy, so a caller's changes stay its own."""
    ledger = folder / "ledger.json"
    if not ledger.exists():
        return reader(folder)
    st = ledger.stat()
    stamp, key = (st.st_mtime_ns, st.st_size), (reader.__name__, folder.absolute())
    hit = _OPENED.get(key)
    if hit is None or hit[0] != stamp:
        hit = _OPENED[key] = (stamp, reader(folder))
    return hit[1].copy(deep=False)


def open_cube(out: str | Path) -> xr.Dataset:
    """The demo's ingested, co-registered cube (both sensors), lazy."""
    return _memo(stores.open_cube, demo_paths(out)["cube"])


def open_harmonized(out: str | Path) -> xr.Dataset:
    """The demo's harmonized Landsat dates (the model's output), lazy."""
    return _memo(stores.open_harmonized, demo_paths(out)["harmonized"])


def open_timeseries(out: str | Path) -> xr.Dataset:
    """The demo's NDVI products: ``ndvi`` (gap-filled), ``observations`` and phenology, lazy."""
    return stores.open_timeseries(demo_paths(out)["timeseries"])
