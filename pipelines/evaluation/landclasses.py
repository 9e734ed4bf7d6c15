"""The crop-type / land-cover legend of the classifier, and its labels from a truth store.

A simulated world's truth knows every pixel's land cover and every field's crop. The classifier
learns one legend that merges both: the four crops of the fields, then the other land covers
(roads and buildings as one ``built`` class: both are a few pixels wide here). Pixels of cropland
outside any field (field margins) are left unlabelled (code 0), as is anything the truth does
not cover.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["CLASSES", "class_names", "class_colors", "labels_from_truth"]

#: code -> (name, colour hint). 0 is "no label".
CLASSES: dict[int, tuple[str, str]] = {
    1: ("maize", "#f2c12e"),
    2: ("soybean", "#7fbf3f"),
    3: ("winter_wheat", "#c98b2b"),
    4: ("fallow", "#d9c7a7"),
    5: ("forest", "#1b6b2f"),
    6: ("grassland", "#a6d96a"),
    7: ("water", "#2b7bba"),
    8: ("bare_soil", "#8c6d4f"),
    9: ("built", "#d7301f"),
}
#: The truth's crop and land-cover names -> the legend's codes.
_CROP_NAMES = {"maize": 1, "soybean": 2, "winter_wheat": 3, "fallow": 4}
_COVER_NAMES = {"forest": 5, "grassland": 6, "water": 7, "bare_soil": 8, "road": 9, "building": 9}
#: The simulator's crop codes of ``field_crop`` (harmonize.world.landscape.CROPS).
_FIELD_CROPS = {1: "maize", 2: "soybean", 3: "winter_wheat", 4: "fallow"}


def class_names() -> dict[int, str]:
    """Code -> class name of the legend."""
    return {k: v[0] for k, v in CLASSES.items()}


def class_colors() -> dict[int, str]:
    """Code -> CSS colour of the legend."""
    return {k: v[1] for k, v in CLASSES.items()}


def labels_from_truth(truth: xr.Dataset, like: xr.Dataset | xr.DataArray | None = None) -> xr.DataArray:
    """The legend's code of every pixel (0: no label), on ``like``'s grid (default the truth's).

    Parameters
    ----------
    truth
        A truth store with ``landcover`` (``flag_values``/``flag_meanings`` attributes) and, for
        crops, ``field_id`` with the per-field table ``field_crop``.
    like
        Sets the output grid.

    Returns
    -------
    xarray.DataArray
        ``uint8`` ``(y, x)``.
    """
    t = truth[["landcover"] + _field_vars(truth)]
    if like is not None:
        t = t.reindex(y=like["y"].values, x=like["x"].values, method="nearest", tolerance=1.0)
    lc = np.nan_to_num(np.asarray(t["landcover"].values, dtype=np.float64)).astype(np.int64)
    meanings = str(truth["landcover"].attrs.get("flag_meanings", "")).split()
    values = list(truth["landcover"].attrs.get("flag_values", []))
    out = np.zeros(lc.shape, np.uint8)
    for value, name in zip(values, meanings, strict=False):
        if name in _COVER_NAMES:
            out[lc == int(value)] = _COVER_NAMES[name]
    if "field_id" in t and "field_crop" in truth:
        fid = np.nan_to_num(np.asarray(t["field_id"].values, dtype=np.float64)).astype(np.int64)
        ids = np.asarray(truth["field"].values).astype(np.int64)
        crops = np.asarray(truth["field_crop"].values).astype(np.int64)
        lookup = np.zeros(int(max(ids.max(initial=0), fid.max(initial=0))) + 1, np.uint8)
        for i, c in zip(ids, crops, strict=True):
            lookup[i] = _CROP_NAMES.get(_FIELD_CROPS.get(int(c), ""), 0)
        crop = lookup[fid]
        is_field = (fid > 0) & (crop > 0)
        out[is_field] = crop[is_field]
    coords = {"y": t["y"].values, "x": t["x"].values}
    return xr.DataArray(out, dims=("y", "x"), coords=coords, name="label")


def _field_vars(truth: xr.Dataset) -> list[str]:
    return ["field_id"] if "field_id" in truth else []
