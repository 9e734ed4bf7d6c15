"""The entry point: :func:`load_cube` = plan the read, read, build the graph.

:func:`~harmonize.cube.plan.plan_load` decides from metadata alone which scenes make which
time step on which grid; :func:`~harmonize.cube.read.read_plan` turns the plan into lazy
arrays (one read task per time step and chunk, :mod:`harmonize.cube.direct`, which also scales
them); :func:`~harmonize.cube.assemble.assemble` builds the labelled cube.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from harmonize.cube.assemble import assemble
from harmonize.cube.plan import Groupby, ShiftsLike, plan_load
from harmonize.cube.read import read_plan
from harmonize.cube.reflectance import relabel_reflectance, to_reflectance
from harmonize.grid import DEFAULT_RESOLUTION
from harmonize.items import Scene
from harmonize.providers import Provider

__all__ = ["load_cube"]


def load_cube(
    items: Iterable[pystac.Item | Scene],
    bands: str | Sequence[str] | None = None,
    *,
    # Geo selection
    geobox: GeoBox | None = None,
    bbox: Sequence[float] | None = None,
    crs: Any = None,
    resolution: float = DEFAULT_RESOLUTION,
    # Time
    groupby: Groupby = "solar_day",
    # STAC related
    provider: str | Provider | None = None,
    shifts: ShiftsLike = None,
    # Values
    reflectance: bool = True,
    masks: Sequence[str] = ("clear",),
    resampling: str = "bilinear",
    # Dask
    chunks: Mapping[str, int] | None = None,
    # UI
    fail_on_error: bool = True,
    progress: Any = None,
) -> xr.Dataset:
    """Load Landsat and Sentinel-2 items into one lazy cube on a common grid.

    Parameters
    ----------
    items
        STAC items: Level-2 Landsat and/or Sentinel-2 of any known provider, plus optionally the
        Landsat Collection 2 Level-1 items (``landsat-c2l1``) that carry the pan band; or the
        :class:`~harmonize.items.Scene` records :func:`harmonize.items.parse_items` made of them
        (they are then not parsed again).
    bands
        Canonical bands to load (default: all six reflectance bands, plus ``pan`` when Level-1
        items are among ``items``).
    geobox
        Target grid; overrides ``bbox``, ``crs`` and ``resolution``.
    bbox
        Area of interest ``(west, south, east, north)`` in degrees; default: the footprint union
        of the Sentinel-2 items (the grid is theirs), or of all items when there are none.
    crs
        Output CRS; default: the UTM zone of the AOI centre.
    resolution
        Pixel size; the default 10 m with edges on 10 m multiples is the Sentinel-2 grid.
    groupby
        ``"solar_day"`` fuses same-day scenes of one collection and platform into one time step;
        ``"time"`` and ``"id"`` keep every scene.
    provider
        Provider profile (name or :class:`~harmonize.providers.Provider`) used to recognise
        items, sign hrefs and set GDAL options; default: whichever profile matches.
    shifts
        Per Level-2 item id, ``(dx, dy)`` in metres added to that scene's geotransform origin
        (and to its Level-1 pan scene) before loading, so each scene is resampled once, from its
        native pixels; or the shift table of :func:`harmonize.coregister.estimate_shifts`
        (its ``item_id``, ``dx``, ``dy``, ``flagged`` and ``quality`` columns). Recorded as
        ``shift_x`` and ``shift_y`` time coordinates (with a table also ``shift_flagged`` and
        ``shift_quality``).
    reflectance
        ``True``: float32 reflectance with NaN for no data. ``False``: raw digital numbers with
        per-time ``scale``, ``offset``, ``nodata`` (and ``pan_scale`` …) coordinates; see
        :func:`to_reflectance`.
    masks
        Boolean masks to decode from QA_PIXEL/SCL, any of :data:`harmonize.qa.MASK_NAMES`.
    resampling
        Resampling of the reflectance bands onto the grid (quality bands always use nearest).
    chunks
        Dask chunks (default :data:`DEFAULT_CHUNKS`); the cube is always lazy.
    fail_on_error
        ``True``: an unreadable asset raises :class:`~harmonize.errors.AssetReadError` at compute
        time. ``False``: it warns (:class:`AssetReadWarning`, with the href) and loads as NaN.
    progress
        Passed to ``odc.stac.load`` where it reads (surface temperature); the cube is lazy, so
        wrap ``.compute()`` in ``dask.diagnostics.ProgressBar`` to see its progress.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``, sorted by time, with the CRS attached (``ds.odc.geobox``,
        ``ds.rio.crs``); per time step ``sensor``, ``platform``, ``item_id`` (the Level-2 ids,
        comma-joined), ``pan_item_id`` (the Level-1 ids of its pan, when pan is loaded),
        ``shift_x``, ``shift_y``; the options in ``attrs["harmonize_load"]``.

    Raises
    ------
    EmptySearchError
        No items (or no Level-2 items).
    UnknownCollectionError
        An item of a collection no provider profile knows.
    UnknownBandError, MissingAssetError
        A band that is not canonical or that an item lacks.
    NoOverlapError
        ``bbox``/``geobox`` does not intersect the items.
    """
    plan = plan_load(
        items,
        bands,
        geobox=geobox,
        bbox=bbox,
        crs=crs,
        resolution=resolution,
        groupby=groupby,
        provider=provider,
        shifts=shifts,
        reflectance=reflectance,
        masks=masks,
        resampling=resampling,
        chunks=chunks,
        fail_on_error=fail_on_error,
    )
    arrays = read_plan(plan, progress=progress)
    cube = assemble(plan, arrays)
    if arrays.scaled:  # the read tasks applied scale and offset
        return relabel_reflectance(cube)
    return to_reflectance(cube) if plan.reflectance else cube
