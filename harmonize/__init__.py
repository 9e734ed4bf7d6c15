"""harmonize: Landsat-8/9 and Sentinel-2 into one analysis-ready, cloud-gap-filled time series.

The main entry points are re-exported here; heavy ones (odc-stac, torch) are imported on first
use, so ``import harmonize`` stays quick. Importing harmonize registers the ``.hz`` accessor on
xarray objects.
"""

from __future__ import annotations

import importlib
from typing import Any

import harmonize.accessor  # noqa: F401  (registers ds.hz)
from harmonize.bands import BANDS, PAN, REFLECTANCE_BANDS
from harmonize.errors import HarmonizeError
from harmonize.providers import PROVIDERS, get_provider

__version__ = "0.1.0"

_LAZY = {
    "search": "harmonize.catalog",
    "Scene": "harmonize.items",
    "parse_items": "harmonize.items",
    "load_cube": "harmonize.cube",
    "plan_load": "harmonize.cube",
    "to_reflectance": "harmonize.cube",
    "estimate_shifts": "harmonize.coregister",
    "load_coregistered": "harmonize.coregister",
    "coregister": "harmonize.coregister",
    "hls_adjust": "harmonize.bandpass",
    "fit_linear_adjustment": "harmonize.bandpass",
    "sharpen_20m": "harmonize.sharpen",
    "ndvi": "harmonize.indices",
    "PairConfig": "harmonize.pairs",
    "build_pair_index": "harmonize.pairs",
    "PairDataset": "harmonize.pairs",
    "UNetConfig": "harmonize.model",
    "build_model": "harmonize.model",
    "save_model_package": "harmonize.model",
    "load_model_package": "harmonize.model",
    "TrainConfig": "harmonize.train",
    "fit": "harmonize.train",
    "train_from_config": "harmonize.train",
    "evaluate": "harmonize.metrics",
    "super_resolve": "harmonize.infer",
    "write_zarr": "harmonize.io",
    "write_cogs": "harmonize.io",
    "fuse": "harmonize.timeseries",
    "ndvi_timeseries": "harmonize.timeseries",
    "TimeSeriesConfig": "harmonize.timeseries",
    "observation_weights": "harmonize.timeseries",
    "fill_ndvi": "harmonize.timeseries",
    "fused_ndvi": "harmonize.timeseries",
    "sharpen_nir": "harmonize.timeseries",
    "gap_fill": "harmonize.gapfill",
    "select_lmbda": "harmonize.gapfill",
    "phenology": "harmonize.phenology",
}

__all__ = [
    "BANDS",
    "PAN",
    "REFLECTANCE_BANDS",
    "HarmonizeError",
    "PROVIDERS",
    "get_provider",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harmonize' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
