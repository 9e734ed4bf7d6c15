"""Landsat/Sentinel-2 training pairs: matching, a lazy patch index, and a torch Dataset.

The stage between the cube and the model, in parts that import only what they need:

- :mod:`harmonize.pairs.index` (no torch): :func:`match_pairs`, :func:`build_pair_index`,
  :func:`block_splits`, :class:`PairConfig`: which patch windows of which pairs a model learns
  from, read from the ``clear`` masks alone.
- :mod:`harmonize.pairs.dataset` (the torch adapter): :class:`PairDataset` serves an index's
  windows as tensors from the lazy cube; :func:`cache_pairs` fills its Zarr patch cache.
- :mod:`harmonize.pairs.factory`: :func:`datasets_from_config`, the dataset factory of
  ``harmonize train``.
- :mod:`harmonize.pairs.reference`, :mod:`harmonize.pairs.augment`, :mod:`harmonize.pairs.cache`,
  :mod:`harmonize.pairs.sources`: an optional reference aligned to the cube, the dihedral
  augmentation, the patch cache, and the sensors' time positions in a cube.

Every name is imported on first use, so ``import harmonize.pairs`` and building an index never
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harmonize.pairs.dataset import PairDataset, cache_pairs
    from harmonize.pairs.factory import datasets_from_config
    from harmonize.pairs.index import (
        INPUT_BANDS,
        SPLITS,
        TARGET_BANDS,
        PairConfig,
        block_splits,
        build_pair_index,
        match_pairs,
    )

_LAZY = {
    "INPUT_BANDS": "harmonize.pairs.index",
    "TARGET_BANDS": "harmonize.pairs.index",
    "SPLITS": "harmonize.pairs.index",
    "PairConfig": "harmonize.pairs.index",
    "match_pairs": "harmonize.pairs.index",
    "block_splits": "harmonize.pairs.index",
    "build_pair_index": "harmonize.pairs.index",
    "PairDataset": "harmonize.pairs.dataset",
    "cache_pairs": "harmonize.pairs.dataset",
    "datasets_from_config": "harmonize.pairs.factory",
}

__all__ = [
    "INPUT_BANDS",
    "TARGET_BANDS",
    "SPLITS",
    "PairConfig",
    "match_pairs",
    "block_splits",
    "build_pair_index",
    "PairDataset",
    "cache_pairs",
    "datasets_from_config",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'harmonize.pairs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
