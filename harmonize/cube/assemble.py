"""Building the cube from a plan and its per-step arrays: one lazy ``xr.Dataset`` on ``(time, y, x)``.

The last of :func:`harmonize.cube.load_cube`'s steps (stackstac's ``to_coords``): the per-step
arrays of :func:`harmonize.cube.read.read_plan` are concatenated along time by chunk-aligned
slicing (no work added to the graph), and every time step gets its coordinates from the plan:
``sensor``, ``platform``, ``item_id`` (comma-joined Level-2 ids), ``pan_item_id`` (the Level-1
ids its pan came from, where pan is loaded), ``shift_x``/``shift_y`` (and ``shift_flagged``/
``shift_quality`` from a shift table), and the raw scaling (``scale``, ``offset``, ``nodata``,
``pan_*``). The cube's provenance is these coordinates: it carries no item documents.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

import numpy as np
import odc.geo.xr  # noqa: F401 - registers the .odc accessor the cube is used with
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr

from harmonize.bands import PAN
from harmonize.cube.plan import LoadPlan
from harmonize.cube.read import StepArrays

__all__ = ["assemble", "step_item_ids"]


def _step_coords(plan: LoadPlan, arrays: StepArrays) -> dict[str, Any]:
    steps = plan.steps
    coords: dict[str, Any] = {
        "sensor": ("time", [st.sensor for st in steps]),
        "platform": ("time", [st.platform for st in steps]),
        "item_id": ("time", [",".join(s.id for s in st.scenes) for st in steps]),
        "shift_x": ("time", np.array([st.shift[0] for st in steps], "float64")),
        "shift_y": ("time", np.array([st.shift[1] for st in steps], "float64")),
        "scale": ("time", np.array([st.scaling.scale for st in steps], "float64")),
        "offset": ("time", np.array([st.scaling.offset for st in steps], "float64")),
        "nodata": ("time", np.array([np.nan if f is None else f for f in arrays.fills], "float64")),
    }
    if plan.has_table:
        coords["shift_flagged"] = ("time", np.array([bool(st.flagged) for st in steps], bool))
        coords["shift_quality"] = ("time", np.array([st.quality for st in steps], "float64"))
    if plan.pan:
        coords["pan_item_id"] = ("time", [",".join(p.id for p in st.pans) for st in steps])
        scale, offset, nodata = arrays.pan_scaling  # type: ignore[misc]
        coords.update(pan_scale=("time", scale), pan_offset=("time", offset), pan_nodata=("time", nodata))
    coords.update(arrays.extra_coords)
    return coords


def _stacked(arrays: StepArrays, name: str, time_chunk: int) -> Any:
    """Variable ``name`` along all steps: its family blocks concatenated and put in step order
    by one indexing operation (or its per-step pieces concatenated)."""
    import dask.array as da

    if name in arrays.blocks:
        blocks = arrays.blocks[name]
        positions = np.concatenate([np.asarray(p, dtype=int) for p, _ in blocks])
        arr = da.concatenate([a for _, a in blocks], axis=0) if len(blocks) > 1 else blocks[0][1]
        order = np.argsort(positions, kind="stable")
        if not np.array_equal(order, np.arange(order.size)):
            arr = arr[order]
    else:
        parts = arrays.pieces[name]
        arr = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    return arr.rechunk({0: time_chunk}) if time_chunk > 1 else arr


def _load_options(plan: LoadPlan) -> dict[str, Any]:
    """What the cube was loaded with (provenance, JSON-serialisable)."""
    return {
        "bands": list(plan.requested),
        "groupby": plan.groupby,
        "provider": plan.provider.name if plan.provider is not None else None,
        "reflectance": plan.reflectance,
        "masks": list(plan.masks),
        "resampling": plan.resampling,
    }


def assemble(plan: LoadPlan, arrays: StepArrays) -> xr.Dataset:
    """The raw-DN cube of ``plan`` from its per-step arrays (see the module docstring).

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``, raw digital numbers of the reflectance bands (and ``pan``), the
        boolean masks, the step coordinates, the grid of the plan; ``attrs["harmonize_load"]``
        records the load options.
    """
    template = arrays.template
    var_order = [*plan.bands, *([PAN] if plan.pan else []), *arrays.extra, *plan.masks]
    spatial = {c: template.coords[c] for c in template.coords if c != "time"}
    time_chunk = int(plan.chunks.get("time", 1) or 1)
    cube = xr.Dataset(
        {v: (("time", "y", "x"), _stacked(arrays, v, time_chunk)) for v in var_order},
        coords={"time": np.arange(len(plan.steps)), **spatial},
    )
    for v in var_order:
        if v in template.data_vars:
            cube[v].attrs = dict(template[v].attrs)
        elif v == PAN:
            cube[v].attrs = {"nodata": arrays.pan_fill}
        elif v in arrays.extra:
            cube[v].attrs = dict(arrays.extra[v])
    times = np.array(
        [np.datetime64(st.time.astimezone(timezone.utc).replace(tzinfo=None), "ns") for st in plan.steps]
    )
    cube = cube.assign_coords(time=times).assign_coords(_step_coords(plan, arrays))
    for name in plan.masks:
        cube[name].attrs = {"long_name": f"{name} (decoded from QA_PIXEL / SCL)"}
    cube.attrs["harmonize_load"] = _load_options(plan)
    return cube


def step_item_ids(step: xr.Dataset) -> list[str]:
    """The item ids a cube's time step (or steps) came from: its Level-2 ids, then its Level-1
    pan ids, each once (the ``item_id`` and ``pan_item_id`` coordinates, comma-joined).

    Works on a cube from :func:`assemble` and on stores written from one (a store without
    ``pan_item_id`` gives its Level-2 ids alone).
    """
    ids: list[str] = []
    for coord in ("item_id", "pan_item_id"):
        if coord in step.coords:
            ids += [s for v in np.atleast_1d(step[coord].values) for s in str(v).split(",") if s]
    return list(dict.fromkeys(ids))
