"""Landsat stored at its native resolution, and the lazy 10 m view of it that stages read.

Ingest writes each Landsat scene on grids nesting in the common 10 m grid (edges on its lattice,
nearest the sensor's own grid: :func:`nested_grid`): the
reflectance bands and ``clear`` at 30 m on ``(time, y, x)``, the pan band at 15 m on
``(time, y_pan, x_pan)`` — 1/9 and 1/2.25 of the 10 m pixels. The scene is stored *unshifted*;
its co-registration shift (``shift_x``/``shift_y``, metres added to the geotransform origin, as
:func:`harmonize.cube.load_cube` applies it) is recorded and applied by :func:`ten_metre_view`,
which resamples every band onto the 10 m grid lazily, chunk by chunk (odc-geo's dask
reprojection: bilinear for reflectance and pan, nearest for masks). A store opened by
:func:`pipelines.core.units.open_unit_store` comes back as that view, so every later stage sees
the cube it saw when Landsat was stored at 10 m.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

__all__ = [
    "NATIVE_ATTR",
    "PAN_DIMS",
    "nested_grid",
    "native_grids",
    "native_unit",
    "is_native",
    "ten_metre_view",
    "stored_landsat_grids",
]

#: Attribute of a native-resolution store: the 10 m grid and chunk of its view.
NATIVE_ATTR = "harmonize_native"
#: Dimensions of the 15 m pan band in a native-resolution store.
PAN_DIMS = ("y_pan", "x_pan")


#: Margin (metres) the native grids reach beyond the 10 m grid on every side, so the view of a
#: scene shifted by up to this much has data to its edges (as a load from the archive does).
MARGIN_M = 90.0


def nested_grid(geobox: GeoBox, res: float, native_origin: tuple[float, float] | None = None) -> GeoBox:
    """A ``res`` grid covering ``geobox`` whose edges lie on its 10 m lattice, as near as that
    allows to a sensor grid with ``native_origin`` (WRS-2 edges sit 5 or 15 m off the 10 m
    lattice): the resampling at ingest then moves pixels by at most 5 m instead of half a pixel.

    The grid starts 0, 10 or 20 m before ``geobox``'s corner (whichever is nearest the native
    lattice) and :data:`MARGIN_M` more, so every third 10 m edge is a 30 m edge, every second
    15 m edge a 10 m edge.
    """
    a = geobox.affine
    step = abs(a.a)
    x0, y0 = a.c, a.f

    def lead(origin: float, native: float | None, sign: float) -> float:
        if native is None:
            return 0.0
        options = [k * step for k in range(int(round(30 / step)))]
        off = [abs(((origin - sign * e - native) + res / 2) % res - res / 2) for e in options]
        return options[int(np.argmin(off))]

    ex = lead(x0, None if native_origin is None else native_origin[0], 1.0) + MARGIN_M
    ey = lead(y0, None if native_origin is None else native_origin[1], -1.0) + MARGIN_M
    ny, nx = geobox.shape
    shape = (int(np.ceil((ny * step + ey + MARGIN_M) / res)), int(np.ceil((nx * step + ex + MARGIN_M) / res)))
    return GeoBox(shape, Affine(res, 0.0, x0 - ex, 0.0, -res, y0 + ey), geobox.crs)


def native_grids(
    geobox: GeoBox,
    ms_origin: tuple[float, float] | None = None,
    pan_origin: tuple[float, float] | None = None,
) -> tuple[GeoBox, GeoBox]:
    """The 30 m and 15 m grids nesting in ``geobox`` (10 m), nearest the native grids whose
    corners are ``ms_origin`` and ``pan_origin`` (see :func:`nested_grid`)."""
    return nested_grid(geobox, 30.0, ms_origin), nested_grid(geobox, 15.0, pan_origin)


def native_unit(ms: xr.Dataset, pan: xr.Dataset | None, geobox: GeoBox, chunk: int) -> xr.Dataset:
    """One Landsat store: ``ms`` (bands and masks on the 30 m grid) with ``pan`` (15 m) beside it.

    Parameters
    ----------
    ms, pan
        Cubes of the same scenes from :func:`harmonize.cube.load_cube` on the grids of
        :func:`native_grids` (``pan`` with the pan band only, or None).
    geobox
        The 10 m grid of the view.
    chunk
        Spatial chunk of the view.
    """
    from harmonize.grid import geobox_to_dict

    out = ms.copy()
    if pan is not None:
        p = pan["pan"].rename(y=PAN_DIMS[0], x=PAN_DIMS[1]).drop_vars("spatial_ref", errors="ignore")
        out["pan"] = p
        extra = {c: v for c, v in pan.coords.items() if v.dims == ("time",) and c not in out.coords}
        out = out.assign_coords(extra)
    grids = {"grid": geobox, "ms": ms.odc.geobox, **({"pan": pan.odc.geobox} if pan is not None else {})}
    out.attrs[NATIVE_ATTR] = {**{k: geobox_to_dict(g) for k, g in grids.items()}, "chunk": int(chunk)}
    return out


def is_native(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is a native-resolution store (see the module docstring)."""
    return NATIVE_ATTR in ds.attrs


def _on_grid(var: xr.DataArray, geobox: GeoBox, dims: tuple[str, str]) -> xr.DataArray:
    from odc.geo.xr import xr_coords

    a = var.rename({dims[0]: "y", dims[1]: "x"}) if dims != ("y", "x") else var
    a = a.drop_vars([c for c in a.coords if c not in ("time",)])
    return a.assign_coords(xr_coords(geobox, crs_coord_name="spatial_ref"))


def _shifted(geobox: GeoBox, dx: float, dy: float) -> GeoBox:
    return GeoBox(geobox.shape, Affine.translation(dx, dy) * geobox.affine, geobox.crs)


def _view_var(var: xr.DataArray, src: GeoBox, dst: GeoBox, chunk: int) -> xr.DataArray:
    from odc.geo.xr import xr_reproject

    if var.dtype == bool:
        as_int = var.astype("uint8").assign_attrs(nodata=255)
        out = xr_reproject(as_int, dst, resampling="nearest", chunks=(chunk, chunk), dst_nodata=255)
        return (out == 1).assign_attrs(var.attrs)
    out = xr_reproject(var, dst, resampling="bilinear", chunks=(chunk, chunk), dst_nodata=np.nan)
    return out.astype(var.dtype).assign_attrs({k: v for k, v in var.attrs.items() if k != "nodata"})


def ten_metre_view(ds: xr.Dataset) -> xr.Dataset:
    """A native-resolution store as the 10 m cube it stands for, lazy, shifts applied.

    Every variable is resampled once, from its stored pixels moved by the scene's
    ``shift_x``/``shift_y``, onto the 10 m grid (bilinear; masks nearest), one task per
    output chunk.
    """
    from harmonize.grid import geobox_from_dict

    info: dict[str, Any] = ds.attrs[NATIVE_ATTR]
    dst, chunk = geobox_from_dict(info["grid"]), int(info["chunk"])
    g30 = geobox_from_dict(info["ms"])
    g15 = geobox_from_dict(info["pan"]) if "pan" in info else None
    if ds.sizes["time"] != 1:
        raise ValueError("a native-resolution store holds one time step")
    dx = float(ds["shift_x"].values[0]) if "shift_x" in ds.coords else 0.0
    dy = float(ds["shift_y"].values[0]) if "shift_y" in ds.coords else 0.0
    time_coords = {c: v for c, v in ds.coords.items() if v.dims == ("time",)}
    variables = {}
    for name, var in ds.data_vars.items():
        if var.dims[-2:] == PAN_DIMS:
            assert g15 is not None
            src, dims = g15, PAN_DIMS
        else:
            src, dims = g30, ("y", "x")
        shifted = _shifted(src, dx, dy)
        variables[name] = _view_var(_on_grid(var, shifted, dims), shifted, dst, chunk).drop_vars(
            list(time_coords), errors="ignore"
        )
    out = xr.Dataset(variables).assign_coords(time_coords)
    out.attrs = {k: v for k, v in ds.attrs.items() if k != NATIVE_ATTR}
    return out


def stored_landsat_grids(cube_dir: str | Path) -> dict[str, list[float]]:
    """The 30 m grid (``proj:transform``) each native-resolution Landsat store of an ingested
    cube folder was written on, by item id, in the stores' order (stores written at 10 m keep
    no Landsat grid and are left out).

    Parameters
    ----------
    cube_dir
        The ingest stage's output folder (its ``scenes/`` stores).

    Returns
    -------
    dict of str to list of float
        Item id (each of a same-day mosaic's) to the six ``proj:transform`` values.
    """
    import zarr

    grids: dict[str, list[float]] = {}
    for store in sorted(Path(cube_dir, "scenes").glob("landsat*")):
        try:
            group = zarr.open_group(str(store), mode="r")
            info = group.attrs.get(NATIVE_ATTR)
            ids = [str(v) for v in np.asarray(group["item_id"][:]).ravel()]
        except Exception:  # not a Zarr group or no item ids: nothing to learn from it
            continue
        if info and "ms" in info:
            for i in ids:
                for part in i.split(","):
                    grids[part] = list(info["ms"]["transform"])
    return grids
