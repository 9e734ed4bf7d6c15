"""Lazy cubes of Landsat and Sentinel-2 on one common grid, loaded with odc-stac.

:func:`load_cube` takes STAC items of both sensors (Level-2 surface reflectance, plus optionally
the Landsat Collection 2 Level-1 items that carry the 15 m pan band) and returns one
``xr.Dataset`` on ``(time, y, x)``:

* canonical reflectance bands (``blue`` … ``swir22``) as float32 with NaN for no data;
* ``pan`` from each Landsat scene's Level-1 companion (NaN at Sentinel-2 times);
* a boolean ``clear`` (and optionally other masks) decoded from ``QA_PIXEL`` / ``SCL``;
* per-time coordinates ``sensor``, ``platform``, ``item_id``, ``pan_item_id``, ``shift_x``,
  ``shift_y``.

It is three named steps, as odc-stac's ``parse_items -> output_geobox -> group -> graph`` and
stackstac's ``prepare -> to_dask -> to_coords`` are: :func:`plan_load` (metadata only: bands,
grid, time steps, shifts; :mod:`harmonize.cube.plan`), :func:`read_plan` (lazy: one dask task
per time step and chunk reads every band, QA and pan through odc-loader's rasterio reader,
decodes the masks and scales; :mod:`harmonize.cube.direct`, :mod:`harmonize.cube.read`) and
:func:`assemble` (the labelled cube; :mod:`harmonize.cube.assemble`).

Scale and offset differ per item (the Sentinel-2 processing baseline changed the offset in
2022), so each time step is scaled with its own scale/offset (recorded as 1-D coordinates
along time in a raw cube, ``reflectance=False``; :func:`to_reflectance`), not with odc-stac's
collection-level scaling. A co-registration shift
is applied by loading the scene on a shifted grid (a GDAL ``vrt://`` path overrides the asset's
geotransform, :func:`shift_item`), so pixels are resampled once.
"""

from harmonize.cube.assemble import assemble, step_item_ids
from harmonize.cube.gdal import AssetReadWarning, shift_item
from harmonize.cube.load import load_cube
from harmonize.cube.plan import DEFAULT_CHUNKS, LoadPlan, TimeStep, plan_load, shifts_by_item
from harmonize.cube.read import read_plan
from harmonize.cube.reflectance import to_reflectance

__all__ = [
    "DEFAULT_CHUNKS",
    "AssetReadWarning",
    "LoadPlan",
    "TimeStep",
    "assemble",
    "load_cube",
    "plan_load",
    "read_plan",
    "shift_item",
    "shifts_by_item",
    "step_item_ids",
    "to_reflectance",
]
