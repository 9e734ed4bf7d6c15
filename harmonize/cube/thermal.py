"""Reading Landsat surface temperature into a planned cube: ``lst`` and ``lst_qa`` in kelvin.

Collection 2 Level-2 items carry ``ST_B10`` (asset ``lwir11``: DN * 0.00341802 + 149 K, nodata
0) and ``ST_QA`` (asset ``qa``: uncertainty DN * 0.01 K, nodata -9999) next to the reflectance
bands, at 30 m resampled from TIRS's ~100 m footprint. Like the pan band, they are one more
``odc.stac.load`` per Landsat collection, on the plan's grid and with each scene's shift, and are
no data at Sentinel-2 steps; their per-step scaling becomes ``lst_scale`` ... coordinates that
:func:`harmonize.cube.reflectance.to_reflectance` applies. The QA_PIXEL masks of the step
(``clear`` ...) say which pixels are clear sky.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from harmonize.bands import LST, LST_QA
from harmonize.cube.plan import LoadPlan, TimeStep
from harmonize.items import Scene

__all__ = ["read_lst"]


def _families(plan: LoadPlan) -> dict[str, list[int]]:
    """Landsat step positions per collection."""
    out: dict[str, list[int]] = {}
    for i, step in enumerate(plan.steps):
        if step.sensor == "landsat":
            out.setdefault(step.profile.collection, []).append(i)
    return out


def read_lst(
    plan: LoadPlan, arrays: Any, load: Callable[[Sequence[Scene], Mapping[str, str]], xr.Dataset]
) -> None:
    """Add ``lst`` and ``lst_qa`` pieces, attributes and per-step scaling to ``arrays``.

    Parameters
    ----------
    plan
        The load plan (``plan.lst`` set).
    arrays
        The :class:`harmonize.cube.read.StepArrays` being filled.
    load
        ``load(scenes, {variable: asset key})``: one lazy odc-stac load of those scenes (shifted,
        signed), one time step per step index (:func:`harmonize.cube.read.read_plan` passes it).
    """
    import dask.array as da

    n = len(plan.steps)
    names = (LST, LST_QA)
    scaling = {v: {c: np.full(n, np.nan) for c in ("scale", "offset", "nodata")} for v in names}
    pieces: dict[str, list[Any]] = {v: [None] * n for v in names}
    for positions in _families(plan).values():
        steps: list[TimeStep] = [plan.steps[i] for i in positions]
        first = steps[0].scenes[0]
        keys = {v: first.profile.assets[v] for v in names}
        part = load([s for st in steps for s in st.scenes], keys)
        for k, i in enumerate(part.time.values):
            for v in names:
                pieces[v][int(i)] = part[v].data[k : k + 1]
        for st, i in zip(steps, positions, strict=True):
            for v in names:
                s = st.scenes[0].scaling[v]
                nd = part[v].attrs.get("nodata", s.nodata)
                scaling[v]["scale"][i], scaling[v]["offset"][i] = s.scale, s.offset
                scaling[v]["nodata"][i] = np.nan if nd is None else nd
    (ny, nx), chunks = plan.geobox.shape, plan.chunks
    for v, dtype, default in ((LST, "uint16", 0), (LST_QA, "int16", -9999)):
        nodata = scaling[v]["nodata"]
        fill = int(np.nanmax(nodata)) if np.isfinite(nodata).any() else default
        nodata[np.isnan(nodata)] = fill
        scaling[v]["scale"][np.isnan(scaling[v]["scale"])] = 1.0
        scaling[v]["offset"][np.isnan(scaling[v]["offset"])] = 0.0
        empty = da.full((1, ny, nx), fill, dtype=dtype, chunks=(1, chunks.get("y", ny), chunks.get("x", nx)))
        arrays.pieces[v] = [p if p is not None else empty for p in pieces[v]]
        arrays.extra[v] = {"nodata": fill}
        arrays.extra_coords.update(
            {f"{v}_{c}": ("time", scaling[v][c]) for c in ("scale", "offset", "nodata")}
        )
