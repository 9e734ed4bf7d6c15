"""The embedded default: a deterministic simulated Landsat-8/9 + Sentinel-2 archive.

It writes what real providers serve - Cloud-Optimized GeoTIFFs with the products' digital
numbers (surface temperature ST_B10/ST_QA included), QA_PIXEL and SCL, STAC items shaped like
Earth Search v1 and USGS - plus the truth they were simulated from, so every later step can be
measured against it.

>>> from harmonize.world import WorldConfig, create_world
>>> world = create_world("demo-world", WorldConfig.tiny())      # doctest: +SKIP
>>> world.items_path, world.truth, world.manifest["scenes"][0]   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["WorldConfig", "World", "create_world", "open_world", "FORMAT", "SHIFT_CONVENTION"]

# Imported on first use: the archive pulls in rasterio/xarray, which `harmonize world serve`
# (harmonize.world.server) does not need.
_LAZY = {
    "WorldConfig": "harmonize.world.config",
    "World": "harmonize.world.archive",
    "create_world": "harmonize.world.archive",
    "open_world": "harmonize.world.archive",
    "FORMAT": "harmonize.world.archive",
    "SHIFT_CONVENTION": "harmonize.world.archive",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harmonize.world' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
