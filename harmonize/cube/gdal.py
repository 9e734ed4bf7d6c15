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
import dataclasses
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
from odc.loader._reader import resolve_band_query, resolve_dst_dtype, resolve_dst_nodata, resolve_src_nodata
from odc.loader._rio import RioDriver, RioReader, _do_read, _reproject_info_from_rio, rio_env, rio_read
from rasterio.enums import Resampling
from rasterio.windows import Window

from harmonize.errors import AssetReadError, MissingAssetError
from harmonize.items import item_crs, local_href

__all__ = ["AssetReadWarning", "Driver", "Reader", "gdal_path", "scaled_reads", "shift_item"]


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


# ---------------------------------------------------------------------------------------------
# Scaled reads: a grid that nests in the asset's pixels is read through RasterIO, not the warper

_SCALED = {"on": os.environ.get("HARMONIZE_WARP_ALWAYS") is None}


def scaled_reads(enabled: bool | None = None) -> bool:
    """Whether assets whose pixels map onto the target grid by scale and translation alone are
    read with GDAL's resampling ``RasterIO`` instead of its warper (process-wide; default on,
    off with the environment variable ``HARMONIZE_WARP_ALWAYS``).

    Profiling the demo world's load (``python -m pipelines.benchmarks load``) put half the
    cube's CPU time in ``rasterio.warp.reproject`` of Landsat's 30 m and 15 m and Sentinel-2's
    20 m assets onto the 10 m grid, where a resampled windowed read of the same pixels costs a
    fraction of it. Nearest (QA, SCL) and pasted 10 m pixels are the same both ways; bilinear
    values differ by the kernel's rounding (at most 1 DN, at ~4 % of the pixels, more than two
    30 m pixels from no data; more within that rim, where the kernels treat no data
    differently), and the footprint is the warper's to within 0.1 % of the pixels
    (``tests/test_cube.py::test_world_scaled_reads_match_the_warper``).

    Parameters
    ----------
    enabled
        ``True``/``False`` to switch; ``None`` to only ask.

    Returns
    -------
    bool
        The setting before the call.
    """
    before = _SCALED["on"]
    if enabled is not None:
        _SCALED["on"] = bool(enabled)
    return before


_REPROJECT_INFO: dict[tuple[Any, ...], Any] = {}


def _reproject_info(rdr: Any, dst_geobox: GeoBox, ttol: float) -> Any:
    """odc-geo's ``compute_reproject_roi`` of the file's grid onto ``dst_geobox``, memoised.

    It is pure geometry of (CRS, transform, shape) and the destination grid, and every band of
    a scene (and every scene of one path/row or tile) shares them, yet odc-loader computes it for
    each read: ~0.4 ms each, 7-10 % of a demo-world load's time in the profile (the note of
    issue 14). Bounded: cleared when it grows past 4096 entries.
    """
    if rdr.crs is None:  # georeferenced by GCPs: the transform does not say where it is
        return _reproject_info_from_rio(rdr, dst_geobox, ttol=ttol)
    key = (rdr.crs, rdr.transform, rdr.shape, dst_geobox, ttol)
    rr = _REPROJECT_INFO.get(key)
    if rr is None:
        if len(_REPROJECT_INFO) >= 4096:
            _REPROJECT_INFO.clear()
        rr = _REPROJECT_INFO[key] = _reproject_info_from_rio(rdr, dst_geobox, ttol=ttol)
    return rr


_RESAMPLING = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear, "cubic": Resampling.cubic}


def _scaled_window(rdr: Any, rr: Any, eps: float = 1e-6) -> Window | None:
    """The (fractional) source window of ``rr.roi_dst`` when source pixels map to the destination
    by an axis-aligned scale and translation and the window lies inside the file, else ``None``."""
    a = rr.transform.linear
    if a is None or abs(a.b) > eps or abs(a.d) > eps or a.a <= 0 or a.e <= 0:
        return None
    inv = ~a
    ys, xs = rr.roi_dst
    c0, r0 = inv @ (xs.start, ys.start)
    c1, r1 = inv @ (xs.stop, ys.stop)
    if c0 < -eps or r0 < -eps or c1 > rdr.width + eps or r1 > rdr.height + eps:
        return None
    c0, r0 = max(c0, 0.0), max(r0, 0.0)
    return Window(c0, r0, min(c1, rdr.width) - c0, min(r1, rdr.height) - r0)


def _mask_outside_footprint(
    rdr: Any, bidx: int, win: Window, pix: np.ndarray, nodata: float, rr: Any
) -> None:
    """Set ``pix`` to ``nodata`` where the source pixel under each output pixel's centre is no
    data, in place: GDAL's warper keeps exactly those pixels, its resampling RasterIO also fills
    the rim of output pixels whose kernel reaches a valid neighbour."""
    c0, r0 = int(np.floor(win.col_off)), int(np.floor(win.row_off))
    c1 = min(int(np.ceil(win.col_off + win.width)), rdr.width)
    r1 = min(int(np.ceil(win.row_off + win.height)), rdr.height)
    native = rdr.read(bidx, window=Window(c0, r0, c1 - c0, r1 - r0))
    missing = native == nodata if not np.isnan(nodata) else np.isnan(native)
    if not missing.any():
        return
    inv = ~rr.transform.linear
    ys, xs = rr.roi_dst
    cols = inv.a * (np.arange(xs.start, xs.stop) + 0.5) + inv.c
    rows = inv.e * (np.arange(ys.start, ys.stop) + 0.5) + inv.f
    ci = np.clip(np.floor(cols).astype(int) - c0, 0, c1 - c0 - 1)
    ri = np.clip(np.floor(rows).astype(int) - r0, 0, r1 - r0 - 1)
    pix[missing[np.ix_(ri, ci)]] = nodata


def _read(src: Any, cfg: Any, dst_geobox: GeoBox, dst: np.ndarray | None, selection: Any) -> Any:
    """odc-loader's ``rio_read`` for a single band onto a 2-D destination, with the scaled read
    of :func:`scaled_reads` where the grid nests; everything else goes to odc-loader."""
    if not _SCALED["on"] or cfg.resampling not in _RESAMPLING:
        return rio_read(src, cfg, dst_geobox, dst=dst, selection=selection)
    with rasterio.open(src.uri, "r", sharing=False) as rdr:
        bidx = resolve_band_query(src, rdr.count, selection=selection)
        if not isinstance(bidx, int) or (dst is not None and dst.ndim != 2):
            return rio_read(src, cfg, dst_geobox, dst=dst, selection=selection)
        rr = _reproject_info(rdr, dst_geobox, 0.9 if cfg.nearest else 0.05)
        if cfg.use_overviews and rr.read_shrink > 1 and rdr.overviews(bidx):
            return rio_read(src, cfg, dst_geobox, dst=dst, selection=selection)
        win = None if rr.paste_ok else _scaled_window(rdr, rr)
        # odc-loader's per-read environment carries the session and options its
        # configure_rio/configure_s3_access set; reads without it (on the thread's held
        # environment alone) hung against an S3 endpoint configured after the thread began
        if win is None:
            with rio_env(VSI_CACHE=False):
                return _do_read(rasterio.band(rdr, bidx), cfg, dst_geobox, rr, dst=dst)
        ys, xs = rr.roi_dst
        shape = (ys.stop - ys.start, xs.stop - xs.start)
        dtype = resolve_dst_dtype(rdr.dtypes[bidx - 1], cfg)
        src_nodata = resolve_src_nodata(rdr.nodatavals[bidx - 1], cfg)
        dst_nodata = resolve_dst_nodata(dtype if dst is None else dst.dtype, cfg, src_nodata)
        with rio_env(VSI_CACHE=False):
            pix = rdr.read(bidx, window=win, out_shape=shape, resampling=_RESAMPLING[cfg.resampling])
        if src_nodata is not None:
            _mask_outside_footprint(rdr, bidx, win, pix, src_nodata, rr)
        remap = dst_nodata is not None and src_nodata is not None and src_nodata != dst_nodata
        if dst is None and pix.dtype == dtype and not remap:
            return (ys, xs), pix  # GDAL's buffer is the answer: no copy
        out = dst[ys, xs] if dst is not None else np.empty(shape, dtype=dtype)
        if remap:
            np.copyto(out, dst_nodata, where=pix == src_nodata)
            np.copyto(out, pix, where=pix != src_nodata, casting="unsafe")
        else:
            np.copyto(out, pix, casting="unsafe")
        return (ys, xs), out


class Reader(RioReader):
    """odc-loader's rasterio reader that names the href of an asset it cannot read."""

    def __init__(self, src: Any, ctx: Any, strict: bool) -> None:
        if src.uri.startswith("file://"):  # percent-decoded: GDAL would look for "a%20b"
            src = dataclasses.replace(src, uri=local_href(src.uri))
        super().__init__(src, ctx)
        self._strict = strict

    def read(self, cfg: Any, dst_geobox: GeoBox, *, dst: np.ndarray | None = None, selection: Any = None):  # noqa: ANN201
        _hold_rasterio_env()
        try:
            return _read(self._src, cfg, dst_geobox, dst, selection)
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


#: GDAL's retries of transient HTTP/S3 errors (429, 5xx) when odc-loader's env does not set them.
GDAL_RETRY = {"GDAL_HTTP_MAX_RETRY": "4", "GDAL_HTTP_RETRY_DELAY": "0.5"}


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
        for key, value in GDAL_RETRY.items():  # transient HTTP errors (issue 17); the user's env wins,
            if key in os.environ:  # over odc-loader's cloud defaults too (GDAL_HTTP_MAX_RETRY=0: none)
                env[key] = os.environ[key]
            else:
                env.setdefault(key, value)
        return env

    def open(self, src: Any, ctx: Any) -> Reader:
        return Reader(src, ctx, self._strict)


# ---------------------------------------------------------------------------------------------
# Shifted grids


def gdal_path(href: str) -> str:
    """The GDAL path of an href (``/vsis3/`` for ``s3://``, ``/vsicurl/`` for http(s))."""
    if href.startswith("file://"):
        return local_href(href)
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
