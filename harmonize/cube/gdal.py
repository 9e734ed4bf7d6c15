"""Reading assets through GDAL: odc-loader's rasterio driver with named errors, and shifted grids.

- :class:`Driver` / :class:`Reader`: odc-loader's rasterio reader that names the href of an
  asset it cannot read (raising :class:`~harmonize.errors.AssetReadError`, or warning with
  :class:`AssetReadWarning` and loading no data), with extra GDAL options (requester pays) and
  one rasterio environment held per worker thread.
- :func:`shift_item`: a copy of an item whose pixels sit ``(dx, dy)`` metres from where its
  metadata says, through GDAL ``vrt://`` paths that override each file's geotransform, so the
  loader resamples the native pixels once.
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.errors
import shapely.affinity
from odc.geo import geom
from odc.geo.geobox import GeoBox
from odc.loader._rio import RioDriver, RioReader, rio_read

from harmonize.errors import AssetReadError, MissingAssetError
from harmonize.items import item_crs

__all__ = ["AssetReadWarning", "Driver", "Reader", "gdal_path", "shift_item"]


class AssetReadWarning(UserWarning):
    """An asset could not be read and was loaded as no data (``fail_on_error=False``)."""


def _display_href(uri: str) -> str:
    """The asset href behind a (possibly ``vrt://``-wrapped) GDAL path."""
    if uri.startswith("vrt://"):
        uri = uri[len("vrt://") :].rsplit("?", 1)[0]
    return uri


_THREAD = threading.local()


def _hold_rasterio_env() -> None:
    """Keep one rasterio environment open for the life of the calling (worker) thread.

    Every ``rasterio.open``/``reproject`` enters a GDAL environment; when none is open around
    it, rasterio builds a new one and tears it down again afterwards (re-registering drivers,
    searching GDAL/PROJ data folders), which took ~15 % of a demo ingest's busy time. Nested
    environments (odc-loader's per-task options, credentials) still set and restore their own
    options inside it.
    """
    if getattr(_THREAD, "env", None) is None and os.environ.get("HARMONIZE_NO_HELD_ENV") is None:
        env = rasterio.Env()
        env.__enter__()
        _THREAD.env = env


class Reader(RioReader):
    """odc-loader's rasterio reader that names the href of an asset it cannot read."""

    def __init__(self, src: Any, ctx: Any, strict: bool) -> None:
        super().__init__(src, ctx)
        self._strict = strict

    def read(self, cfg: Any, dst_geobox: GeoBox, *, dst: np.ndarray | None = None, selection: Any = None):  # noqa: ANN201
        _hold_rasterio_env()
        try:
            return rio_read(self._src, cfg, dst_geobox, dst=dst, selection=selection)
        except (rasterio.errors.RasterioError, OSError) as exc:
            href = _display_href(self._src.uri)
            if self._strict:
                raise AssetReadError(
                    f"Could not read asset {href} ({exc}). Check that the file exists and is a valid "
                    "GeoTIFF (and that credentials/requester-pays are set), or pass "
                    "fail_on_error=False to load it as no data."
                ) from exc
            warnings.warn(
                f"Could not read asset {href} ({exc}); its pixels are loaded as no data (NaN).",
                AssetReadWarning,
                stacklevel=2,
            )
            out = dst[0:0, 0:0] if dst is not None else np.ndarray((0, 0), dtype=cfg.dtype)
            return np.s_[0:0, 0:0], out


class Driver(RioDriver):
    """odc-loader's rasterio driver with :class:`Reader` and extra GDAL options."""

    def __init__(self, strict: bool, gdal_env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._strict = strict
        self._gdal_env = dict(gdal_env or {})

    def restore_env(self, env: dict[str, Any], load_state: Any) -> Any:
        _hold_rasterio_env()
        return super().restore_env(env, load_state)

    def capture_env(self) -> dict[str, Any]:
        env = super().capture_env()
        env.update(self._gdal_env)
        return env

    def open(self, src: Any, ctx: Any) -> Reader:
        return Reader(src, ctx, self._strict)


# ---------------------------------------------------------------------------------------------
# Shifted grids


def gdal_path(href: str) -> str:
    """The GDAL path of an href (``/vsis3/`` for ``s3://``, ``/vsicurl/`` for http(s))."""
    if href.startswith("file://"):
        return href[len("file://") :]
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://") :]
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    return href


def _translate(g: geom.Geometry, dx: float, dy: float) -> geom.Geometry:
    return geom.Geometry(shapely.affinity.translate(g.geom, dx, dy), g.crs)


def _shift_transform(t: Sequence[float], dx: float, dy: float) -> list[float]:
    t = [float(v) for v in t]
    t[2] += dx
    t[5] += dy
    return t


def _shift_metadata(d: dict[str, Any], dx: float, dy: float) -> None:
    """Move the projection fields and the footprint of an item dict by ``(dx, dy)``, in place."""
    props = d["properties"]
    crs = item_crs(d)
    for holder in [props, *d["assets"].values()]:
        if "proj:transform" in holder:
            holder["proj:transform"] = _shift_transform(holder["proj:transform"], dx, dy)
        if "proj:bbox" in holder:
            b = holder["proj:bbox"]
            holder["proj:bbox"] = [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
        if "proj:geometry" in holder:
            g = _translate(geom.Geometry(holder["proj:geometry"], crs), dx, dy)
            holder["proj:geometry"] = g.json
    if crs is not None and d.get("geometry") is not None:
        g = _translate(geom.Geometry(d["geometry"], "epsg:4326").to_crs(crs), dx, dy).to_crs("epsg:4326")
        d["geometry"] = g.json
        d["bbox"] = list(g.boundingbox)


def _repoint(d: dict[str, Any], item_id: str, keys: Iterable[str]) -> None:
    """Point each asset of ``keys`` at a ``vrt://`` path carrying its (shifted) geotransform."""
    props = d["properties"]
    for key in keys:
        a = d["assets"][key]
        t = a.get("proj:transform") or props.get("proj:transform")
        if t is None:
            raise MissingAssetError(
                f"Asset {key!r} of item {item_id!r} has no proj:transform, so it cannot be loaded on a "
                "shifted grid; add the projection extension to the item."
            )
        gt = (t[2], t[0], t[1], t[5], t[3], t[4])  # GDAL's geotransform order
        a["href"] = f"vrt://{gdal_path(a['href'])}?a_gt={','.join(repr(float(v)) for v in gt)}"


def shift_item(item: pystac.Item, dx: float, dy: float, assets: Iterable[str] | None = None) -> pystac.Item:
    """A copy of ``item`` whose pixels sit ``(dx, dy)`` metres from where its metadata says.

    The shift is added to the geotransform origin of the item and of each asset (``proj:transform``,
    ``proj:bbox``, ``proj:geometry``), to the footprint (``bbox``, ``geometry``), and to the
    files themselves: each raster asset's href becomes a GDAL ``vrt://`` path that overrides the
    file's geotransform, so a loader resamples the pixels once, onto the target grid.

    Parameters
    ----------
    item
        The item to shift (left untouched).
    dx, dy
        Shift in CRS units (metres) added to the origin.
    assets
        Asset keys to re-point (default: every asset with a ``proj:transform`` or raster type).

    Raises
    ------
    MissingAssetError
        If an asset to shift has no ``proj:transform`` (neither its own nor the item's).
    """
    d = copy.deepcopy(item.to_dict(include_self_link=False, transform_hrefs=False))  # to_dict shares dicts
    if dx == 0 and dy == 0:
        return pystac.Item.from_dict(d, preserve_dict=False)
    _shift_metadata(d, dx, dy)
    keys = (
        list(assets)
        if assets is not None
        else [
            k
            for k, a in d["assets"].items()
            if "proj:transform" in a or "image/tiff" in str(a.get("type", ""))
        ]
    )
    _repoint(d, item.id, keys)
    return pystac.Item.from_dict(d, preserve_dict=False)
