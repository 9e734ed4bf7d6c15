"""Fast reads for the common case: same CRS, axis-aligned grids, up-sampling or same resolution.

odc-loader reads a source that is not pixel-aligned with the destination through
``rasterio.warp.reproject`` (GDAL's warper), which is general but slow: it transforms every
destination pixel's coordinates and evaluates the kernel pixel by pixel. When source and
destination share a CRS and both grids are north-up and axis-aligned, the source position of a
destination pixel centre is a separate affine function of its column and of its row, so the
resampling kernel is separable: :func:`read` reads the covering source window once at native
resolution and resamples it with two small matrix products, ``out = Wy @ src @ Wx.T``.

It reproduces GDAL's warp semantics (``GWKBilinearResample4Sample``, ``GWKCubicResample4Sample``
and the nearest-neighbour kernel of GDAL 3.x, for scale factors ≥ 1):

* pixel-centre mapping; a destination pixel is written only if its centre falls inside the
  source image (otherwise it keeps the destination no-data value);
* ``bilinear``: triangle kernel on the 2 x 2 neighbours; neighbours outside the image or equal
  to the source no-data value are left out and the weights renormalised (no value if the
  remaining weight is below 1e-5);
* ``cubic``: Keys' cubic convolution with a = -0.5 on the 4 x 4 neighbours, falling back to the
  bilinear rule above for pixels whose 4 x 4 support leaves the image or holds no data (for a
  centre exactly on a source pixel centre, GDAL's choice of which 4 taps to check depends on
  rounding in its coordinate transformer; there the two may pick different kernels next to no
  data or the image edge);
* ``nearest``: the source pixel containing the centre (``floor(x + 1e-10)``);
* integer outputs are rounded half away from zero and clamped to the type's range, and a valid
  value that lands on the destination no-data value is nudged by one, as GDAL does.

Anything else (another CRS, rotation, down-sampling, other kernels, multi-band reads, float
sources without a no-data value) returns ``None`` so that the caller falls back to odc-loader's
``rio_read``. :func:`disabled` switches the fast path off (benchmarks and tests compare both).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.overlap import compute_reproject_roi
from odc.geo.roi import roi_is_empty, roi_shape, w_
from odc.loader._reader import (
    nodata_mask,
    resolve_band_query,
    resolve_dst_dtype,
    resolve_dst_nodata,
    resolve_src_nodata,
    same_nodata,
)
from odc.loader._rio import rio_env

__all__ = ["FAST_RESAMPLING", "AxisWeights", "axis_weights", "disabled", "enabled", "read", "resample"]

#: Resampling kernels the fast path implements (others go through GDAL).
FAST_RESAMPLING = frozenset({"nearest", "bilinear", "cubic"})

# GDAL's constants: the nearest-neighbour epsilon and the smallest accumulated weight that
# still makes a value.
_NEAREST_EPS = 1e-10
_MIN_WEIGHT = 1e-5
# A transform term below this fraction of the pixel size counts as zero (no rotation/shear).
_AXIS_TOL = 1e-9

_switch = threading.Lock()
_disabled_depth = 0


def enabled() -> bool:
    """Whether :func:`read` may be used (``False`` inside :func:`disabled`)."""
    return _disabled_depth == 0


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Switch the fast path off (process-wide) for the duration of the ``with`` block."""
    global _disabled_depth
    with _switch:
        _disabled_depth += 1
    try:
        yield
    finally:
        with _switch:
            _disabled_depth -= 1


# ---------------------------------------------------------------------------------------------
# Numerics


def _keys_cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (GDAL's ``cubic``)."""
    t = np.abs(t)
    t2, t3 = t * t, t * t * t
    return np.where(t <= 1, 1.5 * t3 - 2.5 * t2 + 1, np.where(t < 2, -0.5 * t3 + 2.5 * t2 - 4 * t + 2, 0.0))


@dataclass(frozen=True)
class AxisWeights:
    """Resampling weights along one axis, on the source window ``[lo, lo + size)``.

    Each matrix has one row per destination pixel and one column per window pixel; taps
    outside the image are left out (rows then sum to less than one).
    """

    lo: int
    size: int
    #: destination pixels whose centre lies inside the image
    inside: np.ndarray
    #: the source pixel containing each centre (GDAL only writes a pixel if that one is valid)
    nearest: np.ndarray
    #: bilinear weights (GDAL's 2-tap rule, the first half pixel snapped onto pixel 0)
    linear: np.ndarray
    #: Keys' cubic weights, zero rows where the 4 taps leave the image (cubic only)
    cubic: np.ndarray | None = None
    #: 1 on the 4 cubic taps of rows whose support lies in the image (cubic only)
    support: np.ndarray | None = None

    @property
    def full(self) -> np.ndarray:
        """Rows whose cubic support lies inside the image."""
        assert self.support is not None
        return self.support.sum(axis=1) == 4


def axis_weights(pos: np.ndarray, n_src: int, kind: str) -> AxisWeights:
    """Resampling weights along one axis.

    Parameters
    ----------
    pos
        Source pixel coordinate (0 at the image's first edge, pixel ``i`` spans ``[i, i+1)``) of
        each destination pixel centre.
    n_src
        Number of source pixels along the axis.
    kind
        ``"nearest"``, ``"bilinear"`` or ``"cubic"``.
    """
    pos = np.asarray(pos, dtype=np.float64)
    m = pos.size
    near = np.floor(pos + _NEAREST_EPS).astype(np.int64)
    inside = (pos >= 0) & (near < n_src)
    tap_sets: list[tuple[np.ndarray, np.ndarray]] = [(near[:, None], np.ones((m, 1)))]
    if kind != "nearest":
        i0 = np.floor(pos - 0.5).astype(np.int64)
        frac = pos - 0.5 - i0
        taps = np.stack([i0, i0 + 1], axis=1)
        w = np.stack([1.0 - frac, frac], axis=1)
        first = i0 == -1
        taps[first] = [0, 1]
        w[first] = [1.0, 0.0]
        tap_sets.append((taps, w))
    if kind == "cubic":
        i0 = np.floor(pos - 0.5).astype(np.int64)
        ctaps = i0[:, None] + np.arange(-1, 3)[None, :]
        full = ((ctaps >= 0) & (ctaps < n_src)).all(axis=1, keepdims=True)
        tap_sets.append((ctaps, np.where(full, _keys_cubic(pos[:, None] - 0.5 - ctaps), 0.0)))
        # (A centre exactly on a source pixel centre has zero-weight taps on both sides; GDAL's
        # transformer rounding then decides which 4 it checks. Here: floor, as if exact.)
        tap_sets.append((ctaps, np.broadcast_to(full, ctaps.shape).astype(np.float64)))
    used = np.concatenate([t[inside].ravel() for t, _ in tap_sets])
    used = used[(used >= 0) & (used < n_src)]
    lo = int(used.min()) if used.size else 0
    size = int(used.max()) + 1 - lo if used.size else 0
    rows = np.broadcast_to(np.arange(m)[:, None], (m, 4))

    def scatter(t: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros((m, size))
        ok = (t >= lo) & (t < lo + size) & inside[:, None]
        np.add.at(out, (rows[:, : t.shape[1]][ok], t[ok] - lo), v[ok])
        return out

    mats = [scatter(t, w) for t, w in tap_sets]
    nearest = mats[0]
    linear = mats[1] if kind != "nearest" else nearest
    cubic, support = (mats[2], mats[3]) if kind == "cubic" else (None, None)
    return AxisWeights(lo, size, inside, nearest, linear, cubic, support)


def _rownorm(w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1, keepdims=True)
    return w / np.where(total > 0, total, 1.0)


def _span(mask: np.ndarray) -> slice:
    """The contiguous run of ``True`` in a 1-D mask (the pixels inside the image, say)."""
    idx = np.flatnonzero(mask)
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


def _sep(wy: np.ndarray, a: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """``wy @ a @ wx.T`` with the banded weight matrices as sparse matrices (2-4 taps a row)."""
    import scipy.sparse as sp

    tmp = sp.csr_matrix(wy) @ a
    return np.ascontiguousarray((sp.csr_matrix(wx) @ tmp.T).T)


def resample(src: np.ndarray, valid: np.ndarray | None, y: AxisWeights, x: AxisWeights, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Separable resampling of a source window: ``(values, has_value)``, both destination-shaped.

    ``valid`` marks the source pixels that hold data (``None``: all do). A destination pixel has
    a value where its centre is inside the image on a valid pixel and some tap weight is left.
    """
    a = src.astype(np.float64)
    if valid is None:
        # Renormalising over the taps inside the image is separable: normalise the rows.
        out = _sep(_rownorm(y.linear), a, _rownorm(x.linear))
        if kind == "cubic":
            assert y.cubic is not None and x.cubic is not None
            fy, fx = _span(y.full), _span(x.full)
            out[fy, fx] = _sep(y.cubic[fy], a, x.cubic[fx])
        return out, np.outer(y.inside, x.inside)
    v = valid.astype(np.float64)
    a[~valid] = 0.0  # no-data may be NaN, which a zero weight would not hide
    num = _sep(y.linear, a, x.linear)
    den = _sep(y.linear, v, x.linear)
    on_valid = den if kind == "nearest" else _sep(y.nearest, v, x.nearest)
    has = np.outer(y.inside, x.inside) & (on_valid > 0.5) & (den >= _MIN_WEIGHT)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    if kind == "cubic":
        assert y.cubic is not None and x.cubic is not None and y.support is not None and x.support is not None
        full = np.outer(y.full, x.full) & has
        full &= (_sep(y.support, (~valid).astype(np.float64), x.support)) == 0
        if full.any():
            np.copyto(out, _sep(y.cubic, a, x.cubic), where=full)
    return out, has


def _to_dtype(values: np.ndarray, has: np.ndarray, dtype: np.dtype, nodata: float | None) -> np.ndarray:
    """GDAL's conversion of warped doubles to the output type (round, clamp, avoid no-data).

    ``values`` is overwritten.
    """
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if info.min < 0:
            values += np.copysign(0.5, values)
            np.trunc(values, out=values)
        else:  # rounding half away from zero, for the non-negative values that survive the clip
            values += 0.5
            np.floor(values, out=values)
        np.clip(values, info.min, info.max, out=values)
        if nodata is not None and not math.isnan(nodata) and info.min <= nodata <= info.max:
            hit = has & (values == nodata)
            if hit.any():
                values[hit] = nodata + 1 if nodata == info.min else nodata - 1
    values[~has] = 0  # 0/0 where nothing was valid; masked by the caller
    return values.astype(dtype)


# ---------------------------------------------------------------------------------------------
# Reading


def _open_target(uri: str) -> tuple[str, Affine | None]:
    """The path to open and, for a ``vrt://path?a_gt=...`` path with no other option, the
    overriding geotransform (the file is then opened directly, skipping the VRT layer)."""
    if not uri.startswith("vrt://") or "?" not in uri:
        return uri, None
    path, query = uri[len("vrt://") :].rsplit("?", 1)
    opts = parse_qsl(query, keep_blank_values=True)
    if len(opts) != 1 or opts[0][0] != "a_gt":
        return uri, None
    try:
        gt = [float(v) for v in opts[0][1].split(",")]
    except ValueError:
        return uri, None
    if len(gt) != 6:
        return uri, None
    return path, Affine.from_gdal(*gt)


def _axis_aligned(a: Affine) -> bool:
    scale = max(abs(a.a), abs(a.e))
    return abs(a.b) <= _AXIS_TOL * scale and abs(a.d) <= _AXIS_TOL * scale


def read(
    src: Any,
    cfg: Any,
    dst_geobox: GeoBox,
    *,
    dst: np.ndarray | None = None,
    selection: Any = None,
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """odc-loader's ``rio_read`` for aligned grids, or ``None`` where it does not apply.

    Parameters
    ----------
    src
        ``odc.loader.types.RasterSource`` (``uri``, ``band``, ``meta``).
    cfg
        ``odc.loader.types.RasterLoadParams`` (dtype, no-data, resampling, ...).
    dst_geobox
        The destination grid (a chunk of the cube's grid).
    dst, selection
        As for ``rio_read``: optional 2-D output array, band selection.

    Returns
    -------
    (roi, pixels) or None
        ``roi`` is the part of ``dst_geobox`` the source touches (the same region ``rio_read``
        reports) and ``pixels`` its values; ``None`` means "use ``rio_read``".

    Raises
    ------
    rasterio.errors.RasterioError
        If the file cannot be opened or read (the caller turns it into a named error).
    """
    kind = str(cfg.resampling)
    if kind not in FAST_RESAMPLING or (dst is not None and dst.ndim != 2):
        return None
    path, gt = _open_target(src.uri)
    with rasterio.open(path, "r", sharing=False) as rdr:
        bidx = resolve_band_query(src, rdr.count, selection=selection)
        if not isinstance(bidx, int) or rdr.crs is None:
            return None
        transform = gt if gt is not None else rdr.transform
        if not (_axis_aligned(transform) and _axis_aligned(dst_geobox.transform)):
            return None
        src_gbox = GeoBox((rdr.height, rdr.width), transform, rdr.crs)
        if src_gbox.crs != dst_geobox.crs:
            return None
        rr = compute_reproject_roi(src_gbox, dst_geobox, ttol=0.9 if cfg.nearest else 0.05)
        back = rr.transform.back.linear if rr.transform.linear is not None else None
        if back is None or rr.read_shrink != 1 or not _axis_aligned(back) or back.a <= 0 or back.e <= 0:
            return None
        # Up-sampling or the same resolution only: GDAL widens its kernels when down-sampling.
        if back.a > 1 + 1e-9 or back.e > 1 + 1e-9:
            return None

        src_dtype = np.dtype(rdr.dtypes[bidx - 1])
        src_nodata = resolve_src_nodata(rdr.nodatavals[bidx - 1], cfg)
        if src_dtype.kind == "f" and src_nodata is None:
            return None  # NaNs would spread through the matrix products; GDAL copes
        roi = rr.roi_dst
        out_dtype = resolve_dst_dtype(src_dtype.name, cfg)
        out = dst[roi] if dst is not None else np.empty(roi_shape(roi), dtype=out_dtype)
        dst_nodata = resolve_dst_nodata(out.dtype, cfg, src_nodata)
        if roi_is_empty(roi):
            return roi, out
        fill = 0 if dst_nodata is None else dst_nodata
        if roi_is_empty(rr.roi_src):
            out[...] = fill
            return roi, out

        with rio_env(VSI_CACHE=False):
            if rr.paste_ok:  # what rio_read does: a plain windowed read
                rdr.read(bidx, out=out, window=w_[rr.roi_src])
                if dst_nodata is not None and not same_nodata(src_nodata, dst_nodata):
                    np.copyto(out, dst_nodata, where=nodata_mask(out, src_nodata))
                return roi, out

            ys, xs = roi
            pos_y = back.e * (np.arange(ys.start, ys.stop) + 0.5) + back.f
            pos_x = back.a * (np.arange(xs.start, xs.stop) + 0.5) + back.c
            wy = axis_weights(pos_y, rdr.height, kind)
            wx = axis_weights(pos_x, rdr.width, kind)
            if wy.size == 0 or wx.size == 0:
                out[...] = fill
                return roi, out
            window = ((wy.lo, wy.lo + wy.size), (wx.lo, wx.lo + wx.size))
            pix = rdr.read(bidx, window=window)

        missing = nodata_mask(pix, src_nodata) if src_nodata is not None else None
        valid = None if missing is None or not missing.any() else ~missing
        values, has = resample(pix, valid, wy, wx, kind)
        res = _to_dtype(values, has, out.dtype, dst_nodata)
        if has.all():
            out[...] = res
        else:
            out[...] = fill
            np.copyto(out, res, where=has)
        return roi, out
