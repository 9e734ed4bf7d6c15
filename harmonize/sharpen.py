"""Sharpen Sentinel-2's 20 m bands to 10 m with a local regression on its 10 m bands.

Sentinel-2 measures nir (B8A), swir16 (B11) and swir22 (B12) at 20 m; on the 10 m grid they are
blurred, and a model trained on them as targets learns the blur. Within a small window a 20 m
band is close to a linear mix of the 10 m bands (blue, green, red) plus a constant, so:

1. degrade the 10 m guides exactly as the 20 m band was degraded (:func:`degrade`): the extra
   blur of the 20 m pixel response over the 10 m one, the mean over each 20 m cell (cells sit on
   multiples of 20 m in the CRS, as the MGRS grids do), and the bilinear resampling back onto the
   10 m grid the cube was loaded with;
2. regress the 20 m band on the degraded guides in a moving window (a ridge-regularised,
   multi-channel guided filter), with masked local sums so that cloudy or missing pixels do not
   enter any neighbour's coefficients (normalised convolution);
3. apply the (window-averaged) coefficients to the sharp 10 m guides;
4. optionally add back what the regression misses at 20 m: ``band - degrade(prediction)``, so
   the sharpened band degrades to (nearly) the measured one.

:func:`sharpen_20m` works on whole cubes, lazily (dask ``map_overlap`` with a halo that covers
every filter, so a chunked result equals the whole-image one); :func:`sharpen_block` is the
numpy kernel, used also for single patches (:class:`harmonize.pairs.PairDataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from harmonize.errors import HarmonizeError, UnknownBandError

__all__ = [
    "SHARPEN_BANDS",
    "GUIDE_BANDS",
    "DEFAULT_WINDOW",
    "DEFAULT_EPS",
    "EXTRA_SIGMA_PX",
    "halo",
    "grid_phase",
    "degrade",
    "sharpen_block",
    "sharpen_20m",
]

#: Sentinel-2 bands that are 20 m natively (B8A, B11, B12).
SHARPEN_BANDS: tuple[str, ...] = ("nir", "swir16", "swir22")
#: Sentinel-2 10 m bands used as guides (B02, B03, B04).
GUIDE_BANDS: tuple[str, ...] = ("blue", "green", "red")
#: Regression window side in 10 m pixels (chosen on the demo world; see the report).
DEFAULT_WINDOW = 5
#: Ridge term added to the guides' local covariance (reflectance squared).
DEFAULT_EPS = 1e-6
#: Extra Gaussian blur (10 m pixels) of the 20 m pixel response over the 10 m one: the MSI
#: 20 m PSF (box 20 m * Gaussian 8 m) is the 10 m one (box 10 m * Gaussian 4 m) averaged over
#: two pixels (box 20 m) and blurred by a Gaussian of sqrt(8² - 4²) m.
EXTRA_SIGMA_PX = float(np.sqrt(8.0**2 - 4.0**2) / 10.0)
_MIN_WEIGHT = 3.0  # fewest valid pixels in a window for its own coefficients


def halo(window: int = DEFAULT_WINDOW, sigma: float = EXTRA_SIGMA_PX) -> int:
    """Pixels of context a sharpened pixel depends on (the ``map_overlap`` depth).

    Parameters
    ----------
    window
        Regression window side in 10 m pixels.
    sigma
        Extra Gaussian blur of :func:`degrade`, in 10 m pixels.

    Returns
    -------
    int
        The reach of :func:`degrade` (Gaussian, 2x2 cell, bilinear) twice (the guides, then the
        residual), two half-windows (the coefficients, then their average) and a margin of 2.
    """
    reach_d = int(np.ceil(4.0 * sigma)) + 4  # Gaussian + 2x2 cell + bilinear
    return 2 * (window // 2) + 2 * reach_d + 2


# --------------------------------------------------------------------------------------------
# numpy kernel


def _cell_sum(a: np.ndarray, phase: tuple[int, int]) -> np.ndarray:
    """Sum of ``a`` (..., y, x) over the 2x2 cells starting at ``phase`` (zero-padded)."""
    py, px = phase
    ny, nx = a.shape[-2:]
    top, left = py, px
    bottom = (-(ny + top)) % 2
    right = (-(nx + left)) % 2
    pad = [(0, 0)] * (a.ndim - 2) + [(top, bottom), (left, right)]
    a = np.pad(a, pad)
    s = a.shape
    return a.reshape(*s[:-2], s[-2] // 2, 2, s[-1] // 2, 2).sum(axis=(-3, -1))


def _bilinear_up(c: np.ndarray, phase: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Bilinear x2 upsampling of cell values ``c`` onto the 10 m pixels (weights 3/4, 1/4).

    A 10 m pixel centre lies 5 m from its cell's centre and 15 m from the neighbour's, as
    GDAL/odc-stac bilinear resampling of a 20 m raster onto a nested 10 m grid weighs them.
    Missing neighbours beyond the edge are zeros; callers normalise by the same operator
    applied to the weights.
    """
    out = c
    for axis, p, n in ((-2, phase[0], shape[0]), (-1, phase[1], shape[1])):
        m = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (1, 1)
        e = np.pad(out, pad)
        centre = np.take(e, np.arange(1, m + 1), axis=axis)
        first = 0.75 * centre + 0.25 * np.take(e, np.arange(0, m), axis=axis)
        second = 0.75 * centre + 0.25 * np.take(e, np.arange(2, m + 2), axis=axis)
        # interleave the two halves of each cell: (..., m, ...) -> (..., 2m, ...)
        up = np.stack([first, second], axis=axis % out.ndim + 1)
        shape_up = list(first.shape)
        shape_up[axis] = 2 * m
        up = up.reshape(shape_up)
        out = np.take(up, np.arange(p, p + n), axis=axis)
    return out


def _degrade_linear(a: np.ndarray, phase: tuple[int, int], sigma: float) -> np.ndarray:
    """The linear degradation operator (no normalisation) on (..., y, x)."""
    if sigma > 0:
        a = ndimage.gaussian_filter(
            a, sigma=[0] * (a.ndim - 2) + [sigma, sigma], mode="constant", truncate=4.0
        )
    return _bilinear_up(_cell_sum(a, phase) / 4.0, phase, a.shape[-2:])


def degrade(
    a: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    phase: tuple[int, int] = (0, 0),
    sigma: float = EXTRA_SIGMA_PX,
) -> np.ndarray:
    """Degrade 10 m images to how Sentinel-2's 20 m bands look on the 10 m grid.

    Parameters
    ----------
    a
        ``(..., y, x)`` float array on the 10 m grid.
    weight
        ``(y, x)`` weights (1 valid, 0 masked); masked pixels are left out and the result is
        normalised by the degraded weights (normalised convolution). Default: finite pixels.
    phase
        ``(row, col)`` parity of the first pixel within its 20 m cell (0: the first pixel starts
        a cell, as when the grid's top-left corner lies on a multiple of 20 m).
    sigma
        Extra Gaussian blur in 10 m pixels (default :data:`EXTRA_SIGMA_PX`).

    Returns
    -------
    numpy.ndarray
        float64, same shape; NaN where no valid pixel contributes.
    """
    a = np.asarray(a, np.float64)
    w = (
        np.isfinite(a).all(axis=tuple(range(a.ndim - 2)))
        if weight is None
        else np.asarray(weight, np.float64)
    )
    w = w.astype(np.float64) * np.isfinite(a).all(axis=tuple(range(a.ndim - 2)))
    num = _degrade_linear(np.where(w > 0, a, 0.0) * w, phase, sigma)
    den = _degrade_linear(w, phase, sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1.0), np.nan)


def _box(a: np.ndarray, size: int) -> np.ndarray:
    """Moving-window sum over the last two axes (zeros beyond the edges)."""
    return ndimage.uniform_filter(a, size=[1] * (a.ndim - 2) + [size, size], mode="constant") * (size * size)


def _solve_spd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` per pixel for symmetric ``a`` ``(g, g, y, x)`` and ``b`` ``(g, nb, y, x)``.

    Three guides (the usual case) are solved in closed form with the adjugate, elementwise
    over the pixels: ``numpy.linalg.solve`` makes one LAPACK call per 3 x 3 system, which
    cost a third of the sharpening.
    """
    g = a.shape[0]
    if g != 3:
        x = np.linalg.solve(np.moveaxis(a, (0, 1), (-2, -1)), np.moveaxis(b, (0, 1), (-2, -1)))
        return np.moveaxis(x, (-2, -1), (0, 1))
    a00, a01, a02, a11, a12, a22 = a[0, 0], a[0, 1], a[0, 2], a[1, 1], a[1, 2], a[2, 2]
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_det = 1.0 / (a00 * c00 + a01 * c01 + a02 * c02)
    b0, b1, b2 = b[0], b[1], b[2]
    return np.stack(
        [
            (c00 * b0 + c01 * b1 + c02 * b2) * inv_det,
            (c01 * b0 + c11 * b1 + c12 * b2) * inv_det,
            (c02 * b0 + c12 * b1 + c22 * b2) * inv_det,
        ]
    )


def sharpen_block(
    targets: np.ndarray,
    guides: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    phase: tuple[int, int] = (0, 0),
    window: int = DEFAULT_WINDOW,
    eps: float = DEFAULT_EPS,
    residual: bool = True,
    sigma: float = EXTRA_SIGMA_PX,
) -> np.ndarray:
    """Sharpen 20 m bands of one scene (numpy), regressing them on the 10 m guides locally.

    Parameters
    ----------
    targets
        ``(nb, y, x)`` 20 m bands as loaded onto the 10 m grid (bilinear).
    guides
        ``(ng, y, x)`` 10 m bands of the same scene.
    valid
        ``(y, x)`` bool: pixels allowed into the regression (e.g. clear-sky); non-finite pixels
        are always left out. Pixels outside it keep their input value.
    phase
        Parity ``(row, col)`` of the first pixel within its 20 m cell (see :func:`degrade`).
    window
        Side of the square regression window, 10 m pixels (odd).
    eps
        Ridge term on the guides' local covariance (reflectance²); larger is smoother.
    residual
        Add back ``targets - degrade(prediction)``, so the result keeps the measured 20 m
        signal that the guides do not explain.
    sigma
        Extra Gaussian blur of :func:`degrade`.

    Returns
    -------
    numpy.ndarray
        float32 ``(nb, y, x)``.
    """
    T = np.asarray(targets, np.float64)
    G = np.asarray(guides, np.float64)
    if T.ndim != 3 or G.ndim != 3 or T.shape[1:] != G.shape[1:]:
        raise HarmonizeError(f"targets {T.shape} and guides {G.shape} must be (band, y, x) on one grid")
    ok = np.isfinite(T).all(0) & np.isfinite(G).all(0)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    if not ok.any():  # nothing to regress on (a cloud-covered block): every pixel keeps its input
        return T.astype(np.float32)
    w = ok.astype(np.float64)
    Tz, Gz = np.where(ok, T, 0.0), np.where(ok, G, 0.0)
    D = degrade(Gz, w, phase=phase, sigma=sigma)
    D = np.where(ok, D, 0.0)
    D = np.nan_to_num(D)

    n = np.rint(_box(w, window))  # integer counts: the threshold below must not see rounding
    inv = np.where(n >= _MIN_WEIGHT, 1.0 / np.maximum(n, 1.0), 0.0)
    mg = _box(D * w, window) * inv  # (ng, y, x)
    mt = _box(Tz * w, window) * inv  # (nb, y, x)
    ng, nb = G.shape[0], T.shape[0]
    cov = np.empty((ng, ng) + T.shape[1:])
    for i in range(ng):
        for j in range(i, ng):
            cov[i, j] = cov[j, i] = _box(D[i] * D[j] * w, window) * inv - mg[i] * mg[j]
    cross = np.empty((ng, nb) + T.shape[1:])
    for i in range(ng):
        cross[i] = _box(D[i] * Tz * w, window) * inv - mg[i] * mt
    for i in range(ng):
        cov[i, i] += eps
    coef = _solve_spd(cov, cross)  # (ng, nb, y, x)
    coef = np.where(n >= _MIN_WEIGHT, coef, 0.0)
    icpt = mt - np.einsum("gbyx,gyx->byx", coef, mg)
    # average the coefficients of every window covering a pixel, weighted by its valid count
    nw = np.where(n >= _MIN_WEIGHT, n, 0.0)
    norm = _box(nw, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        coef = _box(coef * nw, window) / norm
        icpt = _box(icpt * nw, window) / norm
    pred = np.einsum("gbyx,gyx->byx", coef, Gz) + icpt
    if residual:
        back = degrade(np.where(ok, pred, 0.0), w, phase=phase, sigma=sigma)
        pred = pred + (Tz - back)
    out = np.where(ok & np.isfinite(pred).all(0), pred, T)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# xarray / dask


def grid_phase(ds: xr.Dataset | xr.DataArray, cell: float = 20.0) -> tuple[int, int]:
    """Parity ``(row, col)`` of pixel (0, 0) of a 10 m grid within the ``cell``-metre lattice.

    Parameters
    ----------
    ds
        A cube with ``y`` and ``x`` pixel-centre coordinates in metres.
    cell
        Side of the coarse cells in metres.

    Returns
    -------
    tuple of int
        0 when the pixel's top (left) edge lies on a multiple of ``cell`` metres in the CRS,
        else 1.

    Raises
    ------
    HarmonizeError
        When the grid is not 10 m.
    """
    out = []
    for dim in ("y", "x"):
        c = np.asarray(ds[dim].values, np.float64)
        if c.size < 2:
            out.append(0)
            continue
        res = abs(float(c[1] - c[0]))
        if not np.isclose(res * 2, cell):
            raise HarmonizeError(
                f"sharpen_20m needs a 10 m grid (got {res:g} m along {dim}); load the cube at 10 m"
            )
        edge = c[0] + res / 2 if c[1] < c[0] else c[0] - res / 2  # top or left edge
        out.append(int(np.rint(edge / res)) % 2 if c[1] > c[0] else int(np.rint(-edge / res)) % 2)
    return out[0], out[1]


def _block_kernel(
    stack: np.ndarray, iy: np.ndarray, ix: np.ndarray, *, nb: int, ng: int, phase0: tuple[int, int], **kw: Any
) -> np.ndarray:
    """map_overlap kernel: ``stack`` (t, nb + ng + 1, y, x) -> the same shape, bands first.

    (Keeping the block shape lets ``map_overlap`` trim the halo; the caller drops the rest.)
    """
    out = np.zeros(stack.shape, np.float32)
    if stack.size == 0:
        return out
    phase = ((int(iy.flat[0]) + phase0[0]) % 2, (int(ix.flat[0]) + phase0[1]) % 2)
    for t in range(stack.shape[0]):
        s = stack[t]
        out[t, :nb] = sharpen_block(s[:nb], s[nb : nb + ng], s[nb + ng] > 0.5, phase=phase, **kw)
    return out


def sharpen_20m(
    ds: xr.Dataset,
    bands: Sequence[str] = SHARPEN_BANDS,
    guides: Sequence[str] = GUIDE_BANDS,
    *,
    window: int = DEFAULT_WINDOW,
    eps: float = DEFAULT_EPS,
    residual: bool = True,
    mask: str | None = "clear",
    sigma: float = EXTRA_SIGMA_PX,
) -> xr.Dataset:
    """Sharpen Sentinel-2's 20 m bands to 10 m with its 10 m bands, per time step, lazily.

    Parameters
    ----------
    ds
        A cube on a 10 m grid (dims ``time, y, x``) holding ``bands`` and ``guides``; Sentinel-2
        only, or mixed with a ``sensor`` time coordinate (only ``"sentinel-2"`` steps change).
    bands
        The 20 m bands to sharpen (default nir, swir16, swir22).
    guides
        The 10 m bands to regress on (default blue, green, red).
    window
        Side of the regression window in 10 m pixels (odd; default :data:`DEFAULT_WINDOW`).
    eps
        Ridge term on the guides' local covariance (default :data:`DEFAULT_EPS`).
    residual
        Add back the 20 m residual (``band - degrade(prediction)``).
    mask
        Name of a boolean variable of pixels allowed into the regression (default ``"clear"``,
        used when present); ``None`` uses every finite pixel. Pixels outside it are unchanged.
    sigma
        Extra blur of the 20 m pixel response over the 10 m one, in 10 m pixels.

    Returns
    -------
    xarray.Dataset
        ``ds`` with ``bands`` replaced by float32 sharpened bands (dask-backed when ``ds`` is),
        coordinates, CRS and attributes kept; each sharpened band's attrs record the settings.

    Notes
    -----
    20 m cells are taken to sit on multiples of 20 m in the CRS (true of the MGRS grids), and
    the 20 m bands to have been loaded with bilinear resampling.
    """
    if window < 1 or window % 2 == 0:
        raise HarmonizeError(f"window must be a positive odd number of pixels, not {window}")
    missing = [b for b in (*bands, *guides) if b not in ds]
    if missing:
        raise UnknownBandError(f"sharpen_20m needs {missing} in the dataset; load them too")
    solver = {"window": window, "eps": eps, "residual": residual, "sigma": sigma}  # of sharpen_block
    if "time" not in ds.dims:
        return sharpen_20m(ds.expand_dims("time"), bands, guides, mask=mask, **solver).isel(time=0)
    bands, guides = list(bands), list(guides)
    if "sensor" in ds.coords:
        pos = np.flatnonzero(np.asarray(ds["sensor"].values).astype(str) == "sentinel-2")
    else:
        pos = np.arange(ds.sizes["time"])
    if pos.size == 0:
        return ds
    sub = ds.isel(time=pos)
    arrays = [sub[v].transpose("time", "y", "x").data for v in (*bands, *guides)]
    m = sub[mask].transpose("time", "y", "x").data if mask is not None and mask in ds else None
    kernel = dict(nb=len(bands), ng=len(guides), phase0=grid_phase(ds), **solver)
    if any(isinstance(a, da.Array) for a in arrays):
        depth = halo(window, sigma)
        out = _sharpen_lazy(_lazy_stack(arrays, m, depth), depth, kernel)
    else:
        out = _sharpen_in_memory(arrays, m, kernel)
    settings = {"window": window, "eps": eps, "residual": residual, "guides": guides, "sigma": sigma}
    return _merge_sharpened(ds, sub, out, pos, bands, settings)


def _sharpen_in_memory(arrays: list[Any], mask: Any, kernel: dict[str, Any]) -> np.ndarray:
    """:func:`_block_kernel` over the whole in-memory scene; the sharpened bands first."""
    stack = np.stack(
        [np.asarray(a, np.float64) for a in arrays]
        + [np.ones(arrays[0].shape) if mask is None else np.asarray(mask, np.float64)],
        axis=1,
    )
    zero = np.zeros((1, 1, 1, 1), np.int64)
    return _block_kernel(stack, zero, zero, **kernel)


def _lazy_stack(arrays: list[Any], mask: Any, depth: int) -> da.Array:
    """Bands, guides and the mask as one float64 ``(t, nb + ng + 1, y, x)`` dask array, one time
    step and all bands per chunk, every chunk at least ``depth`` wide (where the scene allows)."""
    ref = next(a for a in arrays if isinstance(a, da.Array))
    chunks = (1, ref.chunks[1], ref.chunks[2])
    arrays = [da.asarray(a).astype(np.float64).rechunk(chunks) for a in arrays]
    m = da.ones_like(arrays[0]) if mask is None else da.asarray(mask).astype(np.float64).rechunk(chunks)
    stack = da.stack([*arrays, m], axis=1).rechunk({1: -1})
    ny, nx = stack.shape[2:]
    # every chunk must hold the halo
    if min(stack.chunks[2]) < depth or min(stack.chunks[3]) < depth:
        cy = max(depth, max(stack.chunks[2]))
        cx = max(depth, max(stack.chunks[3]))
        stack = stack.rechunk({2: min(ny, max(cy, 2 * depth)), 3: min(nx, max(cx, 2 * depth))})
    return stack


def _sharpen_lazy(stack: da.Array, depth: int, kernel: dict[str, Any]) -> da.Array:
    """:func:`_block_kernel` over a :func:`_lazy_stack` with a ``depth`` halo; the sharpened
    bands ``(t, nb, y, x)``. Each block learns its position (for the 20 m cell phase) from
    overlapped row and column indices."""
    ny, nx = stack.shape[2:]
    if ny <= depth or nx <= depth:  # smaller than the halo: one block, no overlap to share
        zero = np.zeros((1, 1, 1, 1), np.int64)
        stack = stack.rechunk({2: -1, 3: -1})
        return stack.map_blocks(_block_kernel, zero, zero, dtype=np.float32, **kernel)[:, : kernel["nb"]]
    iy = da.arange(ny, chunks=stack.chunks[2]).astype(np.int64)[None, None, :, None]
    ix = da.arange(nx, chunks=stack.chunks[3]).astype(np.int64)[None, None, None, :]
    iy = da.broadcast_to(iy, (1, 1, ny, 1), chunks=((1,), (1,), stack.chunks[2], (1,)))
    ix = da.broadcast_to(ix, (1, 1, 1, nx), chunks=((1,), (1,), (1,), stack.chunks[3]))
    out = da.map_overlap(
        _block_kernel,
        stack,
        iy,
        ix,
        depth=[
            {0: 0, 1: 0, 2: depth, 3: depth},
            {0: 0, 1: 0, 2: depth, 3: 0},
            {0: 0, 1: 0, 2: 0, 3: depth},
        ],
        boundary="none",
        trim=True,
        align_arrays=False,
        dtype=np.float32,
        meta=np.empty((0, 0, 0, 0), np.float32),
        **kernel,
    )
    return out[:, : kernel["nb"]]


def _merge_sharpened(
    ds: xr.Dataset,
    sub: xr.Dataset,
    out: Any,
    pos: np.ndarray,
    bands: list[str],
    settings: dict[str, Any],
) -> xr.Dataset:
    """``ds`` with the sharpened ``out`` (the time steps ``pos``, as ``sub``) in place of ``bands``,
    the other steps unchanged (as float32), each band's attrs recording ``settings``."""
    result = ds.copy()
    order = np.concatenate([pos, np.setdiff1d(np.arange(ds.sizes["time"]), pos)])
    inverse = np.argsort(order)
    for k, b in enumerate(bands):
        sharp = xr.DataArray(
            out[:, k], dims=("time", "y", "x"), coords=sub[b].transpose("time", "y", "x").coords
        )
        rest = ds[b].isel(time=np.setdiff1d(np.arange(ds.sizes["time"]), pos)).transpose("time", "y", "x")
        full = xr.concat([sharp, rest.astype(np.float32)], dim="time", coords="minimal", compat="override")
        full = full.isel(time=inverse).transpose(*ds[b].dims)
        attrs = dict(ds[b].attrs)
        attrs["harmonize_sharpen"] = str(settings)
        result[b] = full.assign_attrs(attrs)
    return result
