"""Reading a planned load with one dask task per (time step, chunk) that reads every band.

The default reader of :func:`harmonize.cube.read.read_plan` (the odc-stac one,
:func:`harmonize.cube.read.read_plan_odc`, remains for surface temperature and for
comparison). Profiling the demo world's load (the note of issue 14) put a third of the cube's
CPU time outside GDAL: odc-stac parsing the items again and binning them into chunks (a third
of building the graph), a reorder of its per-collection arrays into time order (another fifth),
and at compute time one task per band and chunk, then one more per band for scale and offset
and one per mask, each pass writing a new array. Here one task per time step and chunk:

* reads each band, the QA asset and (Landsat) pan of the step's scenes through the same
  :class:`~harmonize.cube.gdal.Reader` odc-loader's tasks use (same resampling, same
  scaled reads, same named errors and warnings, the GDAL environment odc-loader captures),
  fusing same-day scenes as odc-loader does (the first scene in time/id order with data wins);
* decodes the masks (a pixel missing in any band is no data, not clear);
* applies the step's scale and offset (float32, NaN for no data) unless raw numbers were asked.

Each variable is then one getitem of that task's tuple per chunk: a graph of
``steps x chunks x (1 + variables)`` light tasks, in time order, with nothing to reorder.
The values are those of the odc-stac path bit for bit (``tests/test_cube.py``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox, GeoboxTiles
from odc.loader.types import RasterBandMetadata, RasterLoadParams, RasterSource

from harmonize.bands import PAN
from harmonize.cube.gdal import Driver
from harmonize.cube.plan import LoadPlan, TimeStep
from harmonize.errors import HarmonizeError
from harmonize.items import Scene
from harmonize.qa import landsat_masks, scl_masks

__all__ = ["read_direct"]


@dataclass(frozen=True)
class _Asset:
    """One band of the scenes of a step: the sources in fusing order, and how to read them."""

    cfg: RasterLoadParams
    sources: tuple[RasterSource, ...]
    extents: tuple[tuple[float, float, float, float] | None, ...]  # per source, grid CRS


@dataclass(frozen=True)
class _StepRead:
    """Everything one task needs to make one step's chunk of every variable."""

    bands: tuple[_Asset, ...]
    qa: _Asset
    qa_kind: str
    pan: _Asset | None
    masks: tuple[str, ...]
    fill: int | float
    scaling: tuple[float, float, float] | None  # reflectance: (scale, offset, nodata)
    pan_scaling: tuple[float, float, float] | None
    pan_fill: int


def _extent(scene: Scene, shift: tuple[float, float], crs: Any) -> tuple[float, float, float, float] | None:
    """The scene's raster extent in the grid's CRS, moved by its shift (``None``: unknown, read it)."""
    t, shape = scene.transform, scene.shape
    if t is None or shape is None or scene.crs is None or str(crs).lower() != str(scene.crs).lower():
        return None
    x0, y0 = t[2] + shift[0], t[5] + shift[1]
    x1, y1 = x0 + t[0] * shape[1], y0 + t[4] * shape[0]
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _asset(
    scenes: Sequence[Scene],
    band: str,
    items: Sequence[Any],
    plan: LoadPlan,
    resampling: str,
) -> _Asset:
    """The reads of ``band`` over ``scenes`` (``items``: their prepared copies, signed/shifted)."""
    first = scenes[0]
    scaling = first.scaling[band]
    meta = RasterBandMetadata(data_type=scaling.dtype, nodata=scaling.nodata, units="1")
    cfg = RasterLoadParams(
        dtype=scaling.dtype, fill_value=scaling.nodata, resampling=resampling, fail_on_error=True, meta=meta
    )
    sources, extents = [], []
    crs = plan.geobox.crs
    for scene, item in zip(scenes, items, strict=True):
        asset = item.assets[scene.asset_key(band)]
        href = asset.get_absolute_href() or asset.href
        sources.append(RasterSource(uri=href, band=1, meta=meta))
        extents.append(_extent(scene, plan.shift_of(_l2_id(scene, plan)), crs))
    return _Asset(cfg, tuple(sources), tuple(extents))


def _l2_id(scene: Scene, plan: LoadPlan) -> str:
    """The Level-2 id whose shift a scene takes (a pan scene takes its Level-2 scene's)."""
    if scene.level == "L2":
        return scene.id
    for st in plan.steps:
        for s in st.scenes:
            if s.pan is scene:
                return s.id
    return scene.id


def _step_read(plan: LoadPlan, step: TimeStep, pan_fill: int, prepared: Any) -> _StepRead:
    prof = step.profile
    scenes = step.scenes
    keys = {b: prof.assets[b] for b in plan.bands} | {"qa": prof.qa_asset}
    items = [prepared(s, keys, plan.shift_of(s.id)) for s in scenes]
    bands = tuple(_asset(scenes, b, items, plan, plan.resampling) for b in plan.bands)
    fills = {a.cfg.fill_value for a in bands}
    if len(fills) > 1:
        raise HarmonizeError(f"Items of {prof.collection!r} mark no data differently per band ({fills}).")
    fill = next(iter(fills)) if fills else step.scaling.nodata
    qa = _asset(scenes, "qa", items, plan, "nearest")
    pan = pan_scaling = None
    if plan.pan and step.pans:
        pans = [s.pan for s in scenes if s.pan is not None]
        pkeys = {PAN: pans[0].profile.assets[PAN]}
        pitems = [prepared(p, pkeys, plan.shift_of(s.id)) for s in scenes if (p := s.pan) is not None]
        pan = _asset(pans, PAN, pitems, plan, plan.resampling)
        ps = step.pans[0].scaling[PAN]
        nd = pan.cfg.fill_value if pan.cfg.fill_value is not None else ps.nodata
        pan_scaling = (ps.scale, ps.offset, np.nan if nd is None else nd)
    scaling = None
    if plan.reflectance:
        nodata = fill if fill is not None else step.scaling.nodata
        scaling = (step.scaling.scale, step.scaling.offset, np.nan if nodata is None else nodata)
    return _StepRead(
        bands=bands,
        qa=qa,
        qa_kind=prof.qa_kind,
        pan=pan,
        masks=plan.masks,
        fill=fill,
        scaling=scaling,
        pan_scaling=pan_scaling,
        pan_fill=pan_fill,
    )


def _overlaps(extent: tuple[float, ...] | None, box: tuple[float, ...]) -> bool:
    if extent is None:
        return True
    return extent[0] < box[2] and extent[2] > box[0] and extent[1] < box[3] and extent[3] > box[1]


def _read_asset(asset: _Asset, gbox: GeoBox, box: Any, driver: Driver, ctx: Any) -> np.ndarray:
    """One band of the chunk: the step's scenes fused, first with data wins (odc-loader's fuser).

    The first read that covers the whole chunk is the chunk (GDAL's fresh buffer, no fill and
    copy); the chunk is filled with no data first only when a read covers part of it.
    """
    fill = asset.cfg.fill_value
    shape, dtype = gbox.shape.yx, np.dtype(asset.cfg.dtype)
    dst: np.ndarray | None = None
    for src, extent in zip(asset.sources, asset.extents, strict=True):
        if not _overlaps(extent, box):
            continue
        roi, pix = driver.open(src, ctx).read(asset.cfg, gbox)
        if pix.size == 0:
            continue
        if dst is None and pix.shape == shape and pix.dtype == dtype and pix.flags.writeable:
            dst = pix  # the whole chunk from the first scene: what the fuser's copy would hold
        elif dst is None or fill is None:  # dst is all fill there: the fuser copies every pixel
            if dst is None:
                dst = np.full(shape, fill if fill is not None else 0, dtype=dtype)
            dst[roi] = pix
        else:
            part = dst[roi]
            np.copyto(part, pix, where=part == fill)
    if dst is None:
        dst = np.full(shape, fill if fill is not None else 0, dtype=dtype)
    return dst


def _scale(dn: np.ndarray, scale: float, offset: float, nodata: float) -> np.ndarray:
    """:func:`harmonize.cube.reflectance._scale_block` on one chunk (the same float32 ops)."""
    out = np.multiply(dn, np.float32(scale), dtype=np.float32)
    out += np.float32(offset)
    np.copyto(out, np.float32(np.nan), where=dn == nodata)
    return out


def _read_step_chunk(
    task: _StepRead,
    tiles: GeoboxTiles,
    idx: tuple[int, int],
    driver: Driver,
    env: dict[str, Any],
    load_state: Any,
) -> tuple[np.ndarray, ...]:
    """Every variable of one step's chunk, in the order bands, pan, masks."""
    gbox = tiles[idx]
    box = tuple(gbox.extent.boundingbox)
    with driver.restore_env(env, load_state) as ctx:
        dns = [_read_asset(a, gbox, box, driver, ctx) for a in task.bands]
        qa = _read_asset(task.qa, gbox, box, driver, ctx)
        pan = _read_asset(task.pan, gbox, box, driver, ctx) if task.pan is not None else None
    out: list[np.ndarray] = []
    if task.scaling is not None:
        out += [_scale(dn, *task.scaling) for dn in dns]
    else:
        out += dns
    if task.pan_fill >= 0:  # pan is loaded for this cube
        if pan is None:  # no pan scene at this step
            refl = task.scaling is not None
            out.append(
                np.full(gbox.shape.yx, np.nan if refl else task.pan_fill, np.float32 if refl else "uint16")
            )
        elif task.scaling is not None:
            assert task.pan_scaling is not None
            out.append(_scale(pan, *task.pan_scaling))
        else:
            out.append(pan)
    if task.masks:
        decoded = landsat_masks(qa) if task.qa_kind == "qa_pixel" else scl_masks(qa)
        missing = np.zeros(qa.shape, bool)
        for dn in dns:
            missing |= dn == task.fill
        for name in task.masks:
            mask = np.asarray(decoded[name], bool)
            out.append(mask | missing if name == "nodata" else mask & ~missing)
    return tuple(o[np.newaxis] for o in out)


def _pan_fill(plan: LoadPlan) -> int:
    """The DN of no pan (the largest no-data value of the pan scenes), ``-1`` without pan."""
    if not plan.pan:
        return -1
    values = [st.pans[0].scaling[PAN].nodata for st in plan.steps if st.pans]
    values = [v for v in values if v is not None]
    return int(max(values)) if values else 0


def read_direct(plan: LoadPlan, prepared: Any) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """The lazy variables of every step of ``plan``, one read task per (step, chunk).

    Parameters
    ----------
    plan
        From :func:`harmonize.cube.plan.plan_load` (without surface temperature).
    prepared
        ``prepared(scene, keys, shift) -> pystac.Item``: the scene's item with signed, shifted hrefs.

    Returns
    -------
    tuple
        Variable name -> dask array ``(steps, y, x)`` (bands as float32 reflectance when the
        plan asks for it, else raw DNs; pan; masks), the fill value per step, and the pan's
        per-step ``(scale, offset, nodata)`` with its fill (``{}`` without pan).
    """
    import dask.array as da
    from dask._task_spec import Task, TaskRef
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    driver = Driver(strict=plan.fail_on_error, gdal_env=plan.provider.gdal_env() if plan.provider else None)
    (ny, nx), chunks = plan.geobox.shape, plan.chunks
    cy = int(chunks.get("y") or ny) if int(chunks.get("y") or ny) > 0 else ny
    cx = int(chunks.get("x") or nx) if int(chunks.get("x") or nx) > 0 else nx
    tiles = GeoboxTiles(plan.geobox, (cy, cx))
    env = driver.capture_env()
    load_state = driver.new_load(plan.geobox, chunks={"y": cy, "x": cx})
    pan_fill = _pan_fill(plan)
    reads = [_step_read(plan, st, pan_fill, prepared) for st in plan.steps]
    names = [*plan.bands, *([PAN] if plan.pan else []), *plan.masks]
    refl = plan.reflectance
    dtypes = [np.float32 if refl else np.dtype(reads[0].bands[i].cfg.dtype) for i in range(len(plan.bands))]
    if plan.pan:
        dtypes.append(np.float32 if refl else np.dtype("uint16"))
    dtypes += [np.dtype(bool)] * len(plan.masks)
    uris = [[s.uri for a in (*r.bands, r.qa, *([r.pan] if r.pan else [])) for s in a.sources] for r in reads]
    token = tokenize(plan.geobox, uris, names, refl, (cy, cx), plan.resampling, plan.fail_on_error)
    read_name = f"harmonize-read-{token}"
    ty, tx = tiles.shape.yx
    layer: dict[Any, Any] = {}
    for t, task in enumerate(reads):
        for iy in range(ty):
            for ix in range(tx):
                key = (read_name, t, iy, ix)
                layer[key] = Task(key, _read_step_chunk, task, tiles, (iy, ix), driver, env, load_state)
    out: dict[str, Any] = {}
    chunk_sizes = ((1,) * len(reads), tiles.chunks[0], tiles.chunks[1])
    for k, (name, dtype) in enumerate(zip(names, dtypes, strict=True)):
        vname = f"{name}-{token}"
        picks = {
            (vname, t, iy, ix): Task((vname, t, iy, ix), operator.getitem, TaskRef((read_name, t, iy, ix)), k)
            for t in range(len(reads))
            for iy in range(ty)
            for ix in range(tx)
        }
        graph = HighLevelGraph({read_name: layer, vname: picks}, {read_name: set(), vname: {read_name}})
        out[name] = da.Array(graph, vname, chunk_sizes, dtype=dtype, shape=(len(reads), ny, nx))
    fills = [r.fill for r in reads]
    pan_info: dict[str, Any] = {}
    if plan.pan:
        n = len(reads)
        scale, offset, nodata = np.full(n, np.nan), np.full(n, np.nan), np.full(n, float(pan_fill))
        for i, st in enumerate(plan.steps):
            if st.pans:
                ps = st.pans[0].scaling[PAN]
                scale[i], offset[i] = ps.scale, ps.offset
                nodata[i] = ps.nodata if ps.nodata is not None else pan_fill
        pan_info = {"scaling": (scale, offset, nodata), "fill": pan_fill}
    return out, fills, pan_info
