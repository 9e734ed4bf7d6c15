"""Crop-type / land-cover maps from the harmonized time series (a small UNet classifier).

The pieces, each usable on its own::

    edges = period_edges(start, end, "MS")                    # monthly periods
    sums = add_sums(period_sums(s2, edges), period_sums(hz, edges))   # one read per source
    feats = composite_features(sums)                          # (feature, y, x) + phenology
    test = block_split(feats.shape[1:], block=128)            # held-out blocks
    model, _ = train_classifier(feats.values, labels, train_mask(labels, test))
    proba = predict_proba(model, feats.values)
    cm = confusion_matrix(labels[test], np.asarray(model.codes)[proba.argmax(0)][test], codes)
    ds = class_map(proba, model.codes, feats); write_class_cogs(ds, out)

Labels are any ``(y, x)`` raster of class codes (0: no label); the jobs read them from a
reference store. Submodules load on first use (torch only for the model).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "period_edges": "features",
    "period_sums": "features",
    "add_sums": "features",
    "fill_sums": "features",
    "composite_features": "features",
    "ndvi_observations": "features",
    "PHENOLOGY_FEATURES": "features",
    "ClassifierConfig": "model",
    "UNetClassifier": "model",
    "save_classifier": "model",
    "load_classifier": "model",
    "block_split": "train",
    "train_mask": "train",
    "train_classifier": "train",
    "predict_proba": "train",
    "confusion_matrix": "accuracy",
    "scores": "accuracy",
    "majority_baseline": "accuracy",
    "class_map": "output",
    "write_class_cogs": "output",
    "classification_item": "output",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
