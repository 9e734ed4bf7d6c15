"""Reading a planned load: raw digital numbers and QA masks as lazy dask arrays, one per step.

The second of :func:`harmonize.cube.load_cube`'s steps. Each family of time steps (one
collection and asset layout, :meth:`~harmonize.cube.plan.LoadPlan.families`) is one
``odc.stac.load`` of its items, prepared for reading (signed hrefs, shifted grids); the Level-1
pan scenes of Landsat steps are one more load per collection. The result is, per variable, one
``(1, y, x)`` dask array per time step: the graph is built, nothing is read.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pystac
import xarray as xr
from odc.geo import CRS, geom

from harmonize.bands import PAN
from harmonize.cube.gdal import Driver, shift_item
from harmonize.cube.plan import LoadPlan, TimeStep
from harmonize.cube.thermal import read_lst
from harmonize.errors import HarmonizeError
from harmonize.items import Scene
from harmonize.qa import landsat_masks, scl_masks

__all__ = ["StepArrays", "read_plan", "read_plan_odc"]


@dataclass
class StepArrays:
    """What :func:`read_plan` gives :func:`harmonize.cube.assemble.assemble`.

    Attributes
    ----------
    pieces
        Variable name -> one lazy ``(1, y, x)`` array per time step (``None`` where a step has
        none), for variables read step by step (surface temperature).
    blocks
        Variable name -> ``(step positions, lazy (len(positions), y, x) array)`` per family:
        reflectance, masks and pan as odc-stac loaded them, one array per collection
        (:func:`harmonize.cube.assemble.assemble` places them by position in one indexing
        operation; slicing each family into one piece per step was a third of the time spent
        building a demo world's graph).
    fills
        Per step, the value odc-stac fills missing reflectance pixels with (what to mask).
    template
        One family's raw dataset: the spatial coordinates and the variables' attributes.
    pan_scaling
        ``(scale, offset, nodata)`` arrays of the pan band per step (NaN without pan).
    pan_fill
        The DN that marks no pan (steps without a pan scene are filled with it).
    extra
        Further variables (surface temperature, :mod:`harmonize.cube.thermal`) -> their
        attributes; their pieces are in ``pieces``.
    extra_coords
        Per-step coordinates of those variables (``lst_scale`` ...).
    scaled
        Whether the bands (and pan) already are float32 reflectance (the direct reader applies
        each step's scale and offset in its read tasks); the scaling coordinates are then only
        provenance.
    """

    pieces: dict[str, list[Any]]
    fills: list[float | int | None]
    template: xr.Dataset
    pan_scaling: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    pan_fill: int = 0
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_coords: dict[str, Any] = field(default_factory=dict)
    blocks: dict[str, list[tuple[list[int], Any]]] = field(default_factory=dict)
    scaled: bool = False

    def add_block(self, name: str, positions: Sequence[int], arr: Any) -> None:
        """Record ``arr`` (``len(positions)`` time steps) as variable ``name`` at ``positions``."""
        self.blocks.setdefault(name, []).append(([int(i) for i in positions], arr))


def _prepared(
    scene: Scene, keys: Mapping[str, str], shift: tuple[float, float], plan: LoadPlan
) -> pystac.Item:
    """A copy of the scene's item to read: hrefs signed/re-pointed by the provider, grid shifted
    by ``shift`` (a pan scene takes its Level-2 scene's shift)."""
    item, prov = scene.item, plan.provider
    if prov is not None and (prov.sign is not None or prov.prefer_alternate):
        d = copy.deepcopy(item.to_dict(include_self_link=False, transform_hrefs=False))
        for band, key in keys.items():
            d["assets"][key]["href"] = scene.href(band, prov)
        item = pystac.Item.from_dict(d, preserve_dict=False)
    dx, dy = _in_item_crs(scene, shift, plan)
    if dx or dy:
        item = shift_item(item, dx, dy, assets=keys.values())
    return item


def _in_item_crs(scene: Scene, shift: tuple[float, float], plan: LoadPlan) -> tuple[float, float]:
    """A shift measured on the grid (its CRS) as the move of the scene's own geotransform.

    The same vector where the scene is in the grid's CRS; for a scene in another UTM zone the
    grid's axes are turned by the meridian convergence (~4 degrees at a zone edge), so the shift
    is the difference of the scene's centre and the centre moved by ``shift``, both carried
    into the scene's CRS.
    """
    dx, dy = shift
    if not (dx or dy) or scene.crs is None or CRS(scene.crs) == plan.geobox.crs:
        return float(dx), float(dy)
    grid = plan.geobox.crs
    ((x, y),) = scene.footprint.to_crs(grid).centroid.points
    ((ax, ay),) = geom.point(x, y, grid).to_crs(scene.crs).points
    ((bx, by),) = geom.point(x + dx, y + dy, grid).to_crs(scene.crs).points
    return float(bx - ax), float(by - ay)


def _load_family(
    items: Sequence[pystac.Item],
    first: Scene,
    keys: Mapping[str, str],
    group_of: Mapping[str, int],
    plan: LoadPlan,
    driver: Driver,
    progress: Any,
) -> xr.Dataset:
    """Raw DNs of one collection, one time step per step index (sorted), canonical names."""
    import odc.stac

    assets = {
        key: {"data_type": first.scaling[b].dtype, "nodata": first.scaling[b].nodata}
        for b, key in keys.items()
    }
    stac_cfg = {c: {"assets": assets, "warnings": "ignore"} for c in {it.collection_id for it in items}}
    resampling = {key: ("nearest" if band == "qa" else plan.resampling) for band, key in keys.items()}
    ds = odc.stac.load(
        items,
        bands=list(keys.values()),
        groupby=lambda item, parsed, idx: group_of[item.id],
        geobox=plan.geobox,
        chunks=dict(plan.chunks),
        resampling=resampling,
        stac_cfg=stac_cfg,
        driver=driver,
        fail_on_error=True,  # the Reader decides between raising and warning
        progress=progress,
    )
    ds = ds.rename({key: band for band, key in keys.items() if key != band})
    return ds.assign_coords(time=np.array(sorted(set(group_of[it.id] for it in items))))


def _mask_block(qa: np.ndarray, *bands: np.ndarray, kind: str, mask_name: str, fill: Any) -> np.ndarray:
    decoded = landsat_masks(qa) if kind == "qa_pixel" else scl_masks(qa)
    mask = np.asarray(decoded[mask_name], bool)
    if not bands:
        return mask
    missing = np.zeros(mask.shape, bool)
    for b in bands:
        missing |= b == fill
    return mask | missing if mask_name == "nodata" else mask & ~missing


def _masks(
    ds: xr.Dataset, kind: str, names: Sequence[str], bands: Sequence[str], fill: Any
) -> dict[str, Any]:
    """Dask masks decoded from ``ds.qa``; a pixel missing in any loaded band is no data, not clear.

    (Sentinel-2's 10 m bands end at a swath edge a 20 m SCL pixel straddles, for instance.) One
    blockwise task per chunk and mask keeps the graph small.
    """
    import dask.array as da

    arrays = [ds["qa"].data, *(ds[b].data for b in bands)]
    return {
        n: da.map_blocks(_mask_block, *arrays, kind=kind, mask_name=n, fill=fill, dtype=bool) for n in names
    }


def _read_family(
    plan: LoadPlan, positions: list[int], group_of: Mapping[str, int], driver: Driver, progress: Any
) -> tuple[xr.Dataset, float | int | None, dict[str, Any]]:
    """One family's reflectance and masks: the raw dataset, its fill value, the lazy variables."""
    steps = [plan.steps[i] for i in positions]
    prof = steps[0].profile
    keys = {b: prof.assets[b] for b in plan.bands} | {"qa": prof.qa_asset}
    items = [_prepared(s, keys, plan.shift_of(s.id), plan) for st in steps for s in st.scenes]
    ds = _load_family(items, steps[0].scenes[0], keys, group_of, plan, driver, progress)
    fills = {ds[b].attrs.get("nodata") for b in plan.bands}
    if len(fills) > 1:
        raise HarmonizeError(f"Items of {prof.collection!r} mark no data differently per band ({fills}).")
    fill = next(iter(fills), None)
    variables = {b: ds[b].data for b in plan.bands}
    variables.update(_masks(ds, prof.qa_kind, plan.masks, plan.bands, fill))
    return ds, fill, variables


def _read_reflectance(
    plan: LoadPlan, group_of: Mapping[str, int], driver: Driver, progress: Any
) -> StepArrays:
    n = len(plan.steps)
    fills: list[float | int | None] = [None] * n
    template: xr.Dataset | None = None
    blocks: list[tuple[Any, dict[str, Any]]] = []
    for positions in plan.families().values():
        ds, fill, variables = _read_family(plan, positions, group_of, driver, progress)
        template = ds if template is None else template
        for i in positions:  # the value odc-stac fills missing pixels with is what to mask
            fills[i] = fill if fill is not None else plan.steps[i].scaling.nodata
        blocks.append((ds.time.values, variables))
    assert template is not None
    arrays = StepArrays(pieces={}, fills=fills, template=template)
    for steps, variables in blocks:
        for name, arr in variables.items():
            arrays.add_block(name, steps, arr)
    return arrays


def _pan_families(plan: LoadPlan) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, step in enumerate(plan.steps):
        if step.pans:
            out.setdefault(step.pans[0].collection, []).append(i)
    return out


def _read_pan(
    plan: LoadPlan, group_of: Mapping[str, int], driver: Driver, progress: Any, arrays: StepArrays
) -> None:
    """Add the pan band's pieces and per-step scaling to ``arrays`` (pan follows its L2 scene)."""
    import dask.array as da

    n = len(plan.steps)
    scale, offset, nodata = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    loaded: list[int] = []
    for positions in _pan_families(plan).values():
        steps: list[TimeStep] = [plan.steps[i] for i in positions]
        first = steps[0].pans[0]
        keys = {PAN: first.profile.assets[PAN]}
        items = [
            _prepared(s.pan, keys, plan.shift_of(s.id), plan)
            for st in steps
            for s in st.scenes
            if s.pan is not None
        ]
        part = _load_family(items, first, keys, group_of, plan, driver, progress)
        nd = part[PAN].attrs.get("nodata")
        arrays.add_block(PAN, part.time.values, part[PAN].data)
        loaded += [int(i) for i in part.time.values]
        for st, i in zip(steps, positions, strict=True):
            ps = st.pans[0].scaling[PAN]
            scale[i], offset[i] = ps.scale, ps.offset
            value = nd if nd is not None else ps.nodata
            nodata[i] = np.nan if value is None else value
    fill = int(np.nanmax(nodata)) if np.isfinite(nodata).any() else 0
    nodata[np.isnan(nodata)] = fill
    (ny, nx), chunks = plan.geobox.shape, plan.chunks
    missing = sorted(set(range(n)) - set(loaded))
    if missing:  # steps without a pan scene: the no-pan DN
        shape, cy, cx = (len(missing), ny, nx), chunks.get("y", ny), chunks.get("x", nx)
        arrays.add_block(PAN, missing, da.full(shape, fill, dtype="uint16", chunks=(1, cy, cx)))
    arrays.pan_scaling = (scale, offset, nodata)
    arrays.pan_fill = fill


def _read_direct(plan: LoadPlan) -> StepArrays:
    """:func:`harmonize.cube.direct.read_direct`'s variables as :class:`StepArrays`."""
    from odc.geo.xr import xr_coords

    from harmonize.cube.direct import read_direct

    def prepared(scene: Scene, keys: Mapping[str, str], shift: tuple[float, float]) -> pystac.Item:
        return _prepared(scene, keys, shift, plan)

    variables, fills, pan = read_direct(plan, prepared)
    first = next(iter(fills), None)
    template = xr.Dataset(
        {b: ((), 0, {"nodata": first}) for b in plan.bands},
        coords=xr_coords(plan.geobox, crs_coord_name="spatial_ref"),
    )
    arrays = StepArrays(pieces={}, fills=fills, template=template, scaled=plan.reflectance)
    steps = list(range(len(plan.steps)))
    for name, arr in variables.items():
        arrays.add_block(name, steps, arr)
    if pan:
        arrays.pan_scaling, arrays.pan_fill = pan["scaling"], pan["fill"]
    return arrays


def read_plan(plan: LoadPlan, *, progress: Any = None) -> StepArrays:
    """The lazy arrays of every step of ``plan`` (see :class:`StepArrays`).

    By default one read task per time step and chunk (:mod:`harmonize.cube.direct`); with
    surface temperature, or with the environment variable ``HARMONIZE_ODC_LOAD`` set, one
    ``odc.stac.load`` per collection (:func:`read_plan_odc`, raw numbers). Both give the same
    values.

    Parameters
    ----------
    plan
        From :func:`harmonize.cube.plan.plan_load`.
    progress
        Passed to ``odc.stac.load`` (odc-stac reader only).
    """
    if plan.lst or os.environ.get("HARMONIZE_ODC_LOAD"):
        return read_plan_odc(plan, progress=progress)
    return _read_direct(plan)


def read_plan_odc(plan: LoadPlan, *, progress: Any = None) -> StepArrays:
    """The lazy raw arrays of every step of ``plan``, one ``odc.stac.load`` per collection.

    Parameters
    ----------
    plan
        From :func:`harmonize.cube.plan.plan_load`.
    progress
        Passed to ``odc.stac.load``.
    """
    driver = Driver(strict=plan.fail_on_error, gdal_env=plan.provider.gdal_env() if plan.provider else None)
    group_of = {s.id: i for i, st in enumerate(plan.steps) for s in st.scenes}
    group_of.update({p.id: i for i, st in enumerate(plan.steps) for p in st.pans})
    arrays = _read_reflectance(plan, group_of, driver, progress)
    if plan.pan:
        _read_pan(plan, group_of, driver, progress, arrays)
    if plan.lst:

        def load(scenes: Sequence[Scene], keys: Mapping[str, str]) -> xr.Dataset:
            items = [_prepared(s, keys, plan.shift_of(s.id), plan) for s in scenes]
            return _load_family(items, scenes[0], keys, group_of, plan, driver, progress)

        read_lst(plan, arrays, load)
    return arrays
