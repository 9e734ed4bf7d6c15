"""The registration of one image against another: a masked, sub-pixel, bandpass-tolerant shift.

:func:`estimate_shift_pair` (see :mod:`harmonize.coregister` for the method):

1. both images are restricted to the pixels both see clear; each is blurred (normalised
   convolution, so masked pixels do not leak) to the coarser sensor's point-spread function;
2. the integer part comes from a masked normalised cross-correlation over the plausible
   window (each candidate shift compares only pixels both images see, so the mask's own edges
   cannot pull it to zero);
3. the sub-pixel part comes from a masked Gauss-Newton (Lucas-Kanade) least-squares fit of
   ``moving(p) = a + b * reference(p + s)``, which also absorbs the bandpass gain and offset
   between the sensors, iterated to convergence with spline interpolation. The fit is robust:
   each iteration reweights the pixels by Huber weights of their residuals, so pixels that do
   not match (a cloud the mask missed, a field that changed between the dates) count little;
4. the precision of the shift follows from the fit: the Gauss-Newton covariance of ``s``
   (residual variance times the inverse normal matrix), inflated by the number of pixels the
   blur makes one independent sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from harmonize.errors import HarmonizeError

__all__ = ["PairShift", "estimate_shift_pair"]


@dataclass(frozen=True)
class PairShift:
    """The registration of one moving image against one reference image.

    Attributes
    ----------
    row, col
        Shift in pixels such that ``moving(p) ~ reference(p + (row, col))``.
    quality
        Correlation coefficient between the moving image and the fitted, shifted reference over
        the common pixels (1 is a perfect match; below about 0.5 the estimate is unreliable).
    common
        Number of pixels both images see clear.
    iterations
        Gauss-Newton iterations used for the sub-pixel refinement.
    converged
        Whether the refinement converged inside the search window.
    sigma
        One-sigma precision of the shift in pixels (radial: the square root of the trace of its
        covariance), from the robust fit's residuals; NaN where it could not be computed.
    """

    row: float
    col: float
    quality: float
    common: int
    iterations: int
    converged: bool
    sigma: float = float("nan")


def _masked_blur(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by normalised convolution: masked pixels neither count nor leak.

    Pixels with no support nearby are filled with the mean of the unmasked pixels, so the result
    is finite everywhere (spline interpolation downstream needs that).
    """
    w = mask.astype("float64")
    v = np.where(mask, img, 0.0).astype("float64")
    fill = float(v.sum() / max(w.sum(), 1.0))
    if sigma > 0:
        num = ndimage.gaussian_filter(v, sigma, mode="nearest")
        den = ndimage.gaussian_filter(w, sigma, mode="nearest")
    else:
        num, den = v, w
    out = np.full(img.shape, fill, dtype="float64")
    ok = den > 1e-3
    out[ok] = num[ok] / den[ok]
    return out


def _huber(residual: np.ndarray, k: float = 1.345) -> np.ndarray:
    """Huber weights of residuals (scale: the median absolute deviation)."""
    scale = 1.4826 * float(np.median(np.abs(residual - np.median(residual)))) + 1e-12
    a = np.abs(residual) / (k * scale)
    return np.where(a <= 1.0, 1.0, 1.0 / np.maximum(a, 1e-12))


def _bspline3(t: float) -> np.ndarray:
    """The cubic B-spline's weights of the four coefficients around a point ``t`` (in [0, 1))
    past the second of them."""
    u = 1.0 - t
    return np.array([u * u * u, 3 * t**3 - 6 * t * t + 4, -3 * t**3 + 3 * t * t + 3 * t + 1, t * t * t]) / 6.0


def _samples(coeffs: np.ndarray, rows: np.ndarray, cols: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """The spline and its row/column derivatives (central differences) at ``(rows, cols) + s``.

    The same values (to rounding) as ``ndimage.map_coordinates(coeffs, ..., order=3,
    mode="nearest", prefilter=False)`` at the five points, for ~2.5x less CPU: ``rows``/``cols`` are
    integers, so every point shares one fractional offset and one set of weights; the five
    stencils lie in one 5 x 5 neighbourhood, gathered once. Points whose neighbourhood leaves the
    array are interpolated by scipy.
    """
    h = 0.25
    s0, s1 = float(s[0]), float(s[1])
    points = [(s0, s1), (s0 + h, s1), (s0 - h, s1), (s0, s1 + h), (s0, s1 - h)]
    ny, nx = coeffs.shape
    br, bc = int(np.floor(s0 - h)) - 1, int(np.floor(s1 - h)) - 1  # the neighbourhood's corner
    r0, c0 = rows + br, cols + bc
    inside = (r0 >= 0) & (r0 + 4 < ny) & (c0 >= 0) & (c0 + 4 < nx)
    windows = np.lib.stride_tricks.sliding_window_view(coeffs, (5, 5))
    block = windows[r0[inside], c0[inside]].reshape(-1, 25)  # (points, 25)
    values = []
    for pr, pc in points:
        w = np.zeros((5, 5))
        fr, fc = np.floor(pr), np.floor(pc)
        i, j = int(fr) - 1 - br, int(fc) - 1 - bc
        w[i : i + 4, j : j + 4] = np.outer(_bspline3(pr - fr), _bspline3(pc - fc))
        v = np.empty(rows.shape, dtype="float64")
        v[inside] = np.einsum("pk,k->p", block, w.ravel())
        if not inside.all():
            out = [rows[~inside] + pr, cols[~inside] + pc]
            v[~inside] = ndimage.map_coordinates(coeffs, out, order=3, mode="nearest", prefilter=False)
        values.append(v)
    r, up, down, right, left = values
    return r, (up - down) / (2 * h), (right - left) / (2 * h)


def _lk_refine(
    moving: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    start: tuple[float, float],
    *,
    max_iter: int,
    tol: float,
    window: float,
    max_pixels: int = 30_000,
    pixels_per_sample: float = 1.0,
) -> tuple[np.ndarray, float, int, bool, float]:
    """Robust (Huber-reweighted) masked Gauss-Newton fit of ``moving(p) = a + b * reference(p + s)``.

    Returns the shift, the weighted correlation of the fit, the iterations, whether it converged
    and the shift's one-sigma radial precision in pixels.
    """
    coeffs = ndimage.spline_filter(reference, order=3, mode="nearest")
    rows, cols = np.nonzero(mask)
    stride = 1
    if rows.size > max_pixels:  # plenty for two parameters; bounds the cost on large frames
        stride = int(np.ceil(rows.size / max_pixels))
        rows, cols = rows[::stride], cols[::stride]
    y = moving[rows, cols]
    s = np.asarray(start, dtype="float64")
    w = np.ones_like(y)
    converged = False
    it = 0
    while it < max_iter:
        it += 1
        r, gr, gc = _samples(coeffs, rows, cols, s)
        design = np.column_stack([np.ones_like(r), r, gr, gc])
        sw = np.sqrt(w)
        sol, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
        a, b, c, d = sol
        if abs(b) < 1e-9:
            break
        w = _huber(y - design[:, :2] @ sol[:2])
        step = np.array([c / b, d / b])
        s = s + step
        if np.any(np.abs(s - np.asarray(start)) > window):
            break
        if np.hypot(*step) < tol:
            converged = True
            break
    r, gr, gc = _samples(coeffs, rows, cols, s)
    quality, sigma = 0.0, float("nan")
    if r.size > 4 and r.std() > 0 and y.std() > 0:
        quality = float(np.corrcoef(r, y)[0, 1])
        design = np.column_stack([np.ones_like(r), r, gr, gc])
        sol, *_ = np.linalg.lstsq(design * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)
        resid = y - design @ sol
        var = float((w * resid**2).sum() / max(w.sum() - 4, 1.0))
        jac = np.column_stack([np.ones_like(r), r, sol[1] * gr, sol[1] * gc]) * np.sqrt(w)[:, None]
        try:
            cov = var * np.linalg.inv(jac.T @ jac)[2:, 2:]
            # Neighbouring pixels of blurred images are not independent samples.
            sigma = float(np.sqrt(max(np.trace(cov), 0.0) * max(pixels_per_sample / stride, 1.0)))
        except np.linalg.LinAlgError:
            pass
    return s, quality, it, converged, sigma


def _integer_search(
    moving: np.ndarray,
    reference: np.ndarray,
    m_ok: np.ndarray,
    r_ok: np.ndarray,
    radius: int,
    *,
    step: int = 2,
    max_pixels: int = 20_000,
) -> np.ndarray:
    """Shift ``d`` on a lattice of ``step`` pixels within ``radius`` maximising the masked
    correlation coefficient of ``moving(p)`` and ``reference(p + d)``.

    Both images are blurred to Landsat's resolution, so a 2-pixel lattice and a sparse sample of
    pixels find the right basin; the Gauss-Newton refinement does the rest.
    """
    rows, cols = np.nonzero(m_ok)
    if rows.size > max_pixels:
        pick = np.linspace(0, rows.size - 1, max_pixels).astype(int)
        rows, cols = rows[pick], cols[pick]
    a_all = moving[rows, cols]
    ny, nx = moving.shape
    lattice = range(-(radius // step) * step, radius + 1, step)
    best, best_d = -np.inf, np.zeros(2)
    for dr in lattice:
        rr = rows + dr
        in_r = (rr >= 0) & (rr < ny)
        for dc in lattice:
            cc = cols + dc
            ok = in_r & (cc >= 0) & (cc < nx)
            ok[ok] = r_ok[rr[ok], cc[ok]]
            if ok.sum() < 100:
                continue
            a = a_all[ok]
            b = reference[rr[ok], cc[ok]]
            a = a - a.mean()
            b = b - b.mean()
            den = np.sqrt((a * a).sum() * (b * b).sum())
            ncc = (a * b).sum() / den if den > 0 else -np.inf
            if ncc > best:
                best, best_d = ncc, np.array([dr, dc], dtype="float64")
    return best_d


def estimate_shift_pair(
    moving: np.ndarray,
    reference: np.ndarray,
    moving_mask: np.ndarray | None = None,
    reference_mask: np.ndarray | None = None,
    *,
    reference_sigma: float = 1.5,
    moving_sigma: float = 0.5,
    max_shift: float = 6.0,
    min_pixels: int = 500,
    max_iter: int = 30,
    tol: float = 1e-3,
) -> PairShift:
    """Sub-pixel shift between two 2-D images, restricted to the pixels both see.

    Parameters
    ----------
    moving, reference
        2-D float arrays on the same grid; NaN is no data.
    moving_mask, reference_mask
        Boolean "usable" masks (clear sky); combined with finiteness.
    reference_sigma, moving_sigma
        Gaussian blur (pixels) applied to each image before matching; blur the sharper image
        to the blurrier one's point-spread function.
    max_shift
        Largest plausible shift in pixels; the search does not go beyond it.
    min_pixels
        Fewer common pixels than this raise :class:`~harmonize.errors.HarmonizeError`.
    max_iter, tol
        Gauss-Newton iteration limit and convergence threshold (pixels).

    Returns
    -------
    PairShift
        ``moving(p) ~ a + b * reference(p + (row, col))``.
    """
    moving = np.asarray(moving, dtype="float64")
    reference = np.asarray(reference, dtype="float64")
    if moving.shape != reference.shape or moving.ndim != 2:
        raise HarmonizeError(
            f"Images to register must be 2-D and the same shape, got {moving.shape} and "
            f"{reference.shape}; load both onto one GeoBox first."
        )
    m_ok = np.isfinite(moving) & (True if moving_mask is None else np.asarray(moving_mask, bool))
    r_ok = np.isfinite(reference) & (True if reference_mask is None else np.asarray(reference_mask, bool))
    common = m_ok & r_ok
    n_common = int(common.sum())
    if n_common < min_pixels:
        raise HarmonizeError(
            f"Only {n_common} pixels are clear in both scenes (need {min_pixels}); "
            "pick a clearer reference scene."
        )
    mov = _masked_blur(moving, m_ok, moving_sigma)
    ref = _masked_blur(reference, r_ok, reference_sigma)

    # Integer part: masked NCC over the plausible window, which the shared edges of the
    # common mask cannot fool (each shift only compares pixels both images see).
    coarse = _integer_search(mov, ref, m_ok, r_ok, int(np.ceil(max_shift)))

    # Sub-pixel part on pixels that stay valid in the reference over the whole search window.
    margin = 4  # the refinement moves at most 2.5 pixels from the lattice point
    r_inner = ndimage.binary_erosion(r_ok, iterations=margin, border_value=0)
    r_inner = ndimage.shift(r_inner.astype("uint8"), -np.round(coarse), order=0, cval=0).astype(bool)
    m_inner = ndimage.binary_erosion(m_ok, iterations=1, border_value=0)
    fit_mask = m_inner & r_inner
    if int(fit_mask.sum()) < min_pixels:
        fit_mask = common
    blur = max(reference_sigma, moving_sigma, 0.5)
    s, quality, it, converged, sigma = _lk_refine(
        mov,
        ref,
        fit_mask,
        (coarse[0], coarse[1]),
        max_iter=max_iter,
        tol=tol,
        window=2.5,
        pixels_per_sample=4 * np.pi * blur**2,
    )
    if not converged or np.any(np.abs(s) > max_shift):
        converged = False
    return PairShift(float(s[0]), float(s[1]), quality, n_common, it, converged, sigma)
