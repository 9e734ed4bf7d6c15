"""The class map as Cloud-Optimized GeoTIFFs and a STAC item in the classification extension.

``classes.tif``: one uint8 band of class codes, 0 = no data (overviews by mode, so a zoomed-out
map shows the commonest class, not an average code). ``probabilities.tif``: one uint8 band per
class, the probability in percent (``raster:bands`` scale 0.01), 255 = no data. The item lists
the legend as ``classification:classes`` on the class asset, and the held-out scores as properties.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import xarray as xr

__all__ = ["class_map", "write_class_cogs", "classification_item", "CLASSIFICATION_EXTENSION"]

CLASSIFICATION_EXTENSION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
PROB_NODATA = 255


def class_map(proba: np.ndarray, codes: Sequence[int], like: xr.DataArray | xr.Dataset) -> xr.Dataset:
    """The most probable class and every class's probability, on ``like``'s grid and CRS.

    Parameters
    ----------
    proba
        ``(classes, H, W)`` probabilities in the order of ``codes``; NaN where not classified.
    codes
        Class code of each probability layer.
    like
        Sets ``y``, ``x`` and the CRS.

    Returns
    -------
    xarray.Dataset
        ``classes`` (uint8, 0 where not classified) and ``probability`` (float32,
        ``class`` × y × x).
    """
    codes_arr = np.asarray(codes, np.uint8)
    valid = np.isfinite(proba).all(axis=0)
    best = codes_arr[np.argmax(np.nan_to_num(proba, nan=-1.0), axis=0)]
    coords = {"y": like["y"].values, "x": like["x"].values}
    ds = xr.Dataset(
        {
            "classes": (("y", "x"), np.where(valid, best, 0).astype(np.uint8)),
            "probability": (("class", "y", "x"), proba.astype(np.float32)),
        },
        coords={**coords, "class": codes_arr},
    )
    return ds.rio.write_crs(like.rio.crs)


def _to_cog(arr: xr.DataArray, path: Path, *, nodata: int, resampling: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        arr.rio.write_nodata(nodata).rio.to_raster(
            tmp, driver="COG", compress="DEFLATE", blocksize=256, overviews="AUTO", resampling=resampling
        )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_class_cogs(ds: xr.Dataset, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``classes.tif`` and ``probabilities.tif`` of :func:`class_map` into ``folder``.

    Each is written under a temporary name and renamed into place, so a reader never sees half
    a file.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    crs = ds.rio.crs
    classes = ds["classes"].rio.write_crs(crs)
    classes.attrs = {"long_name": "classes"}
    prob = ds["probability"]
    pct = xr.where(prob.notnull(), (prob.fillna(0) * 100).round(), PROB_NODATA).astype(np.uint8)
    pct = pct.rename({"class": "band"}).assign_coords(band=np.arange(1, prob.sizes["class"] + 1))
    pct = pct.transpose("band", "y", "x").rio.write_crs(crs)
    pct.attrs = {"long_name": tuple(f"p_{int(c)}" for c in prob["class"].values)}
    a = _to_cog(classes, root / "classes.tif", nodata=0, resampling="mode")
    b = _to_cog(pct, root / "probabilities.tif", nodata=PROB_NODATA, resampling="average")
    return a, b


def _classes(legend: Mapping[int, tuple[str, str]], codes: Iterable[int]) -> list[Any]:
    from pystac.extensions.classification import Classification

    out = []
    for c in codes:
        name, color = legend.get(int(c), (str(c), ""))
        kw: dict[str, Any] = {"value": int(c), "description": name.replace("_", " "), "name": name}
        if color:
            kw["color_hint"] = color.lstrip("#").upper()
        out.append(Classification.create(**kw))
    return out


def classification_item(
    paths: tuple[Path, Path],
    ds: xr.Dataset,
    legend: Mapping[int, tuple[str, str]],
    *,
    item_id: str = "classes",
    period: tuple[Any, Any] | None = None,
    derived_from: Iterable[str | pystac.Item] = (),
    properties: Mapping[str, Any] | None = None,
) -> pystac.Item:
    """The STAC item of the two COGs: ``classification:classes`` on the class asset, one
    ``raster:bands`` entry per class (scale 0.01) on the probability asset.

    Parameters
    ----------
    paths
        ``(classes.tif, probabilities.tif)`` from :func:`write_class_cogs`.
    ds
        :func:`class_map`'s dataset (grid, CRS and classes).
    legend
        Code -> (name, colour ``#rrggbb``) of every class.
    item_id
        The item's id.
    period
        ``(start, end)`` of the features' time series (the item's datetime range).
    derived_from
        Source items or their hrefs (``derived_from`` links).
    properties
        Extra properties (e.g. held-out accuracy).
    """
    from pystac.extensions.classification import ClassificationExtension

    from harmonize.io import stac_item_for_output

    desc = ds[["classes"]]
    if period is not None:
        desc = desc.assign_coords(time=np.array(list(period), dtype="datetime64[ns]"))
    item = stac_item_for_output(
        list(paths), desc, bands=[], item_id=item_id, derived_from=derived_from, properties=properties
    )
    codes = [int(c) for c in ds["class"].values]
    classes_asset, prob_asset = item.assets["classes"], item.assets["probabilities"]
    classes_asset.title, classes_asset.roles = "crop type / land cover class", ["data"]
    classes_asset.extra_fields["raster:bands"] = [
        {"name": "classes", "data_type": "uint8", "nodata": 0, "sampling": "area"}
    ]
    prob_asset.title, prob_asset.roles = "class probabilities (percent)", ["data"]
    prob_asset.extra_fields["raster:bands"] = [
        {
            "name": f"p_{c}",
            "description": f"probability of {legend.get(c, (str(c), ''))[0]}",
            "data_type": "uint8",
            "nodata": PROB_NODATA,
            "scale": 0.01,
            "offset": 0.0,
        }
        for c in codes
    ]
    ClassificationExtension.ext(classes_asset, add_if_missing=True).classes = _classes(legend, codes)
    if CLASSIFICATION_EXTENSION not in item.stac_extensions:
        item.stac_extensions.append(CLASSIFICATION_EXTENSION)
    return item
