"""Sub-pixel co-registration of Landsat scenes onto the Sentinel-2 grid.

The two sensors are misregistered by up to about a Landsat pixel. For every Landsat scene in a
cube this module measures that misregistration against the nearest clear Sentinel-2 scene and
removes it by reloading the scene on a shifted grid (one resampling from the native pixels).

Convention: a shift ``(dx, dy)`` in metres is the *correction* to ADD to the Landsat scene's
geotransform origin, the same convention as ``load_cube(..., shifts=...)``. If a scene loaded
with origin ``(x0, y0)`` really shows the ground at ``(x0 + dx, y0 + dy)``, its shift is
``(dx, dy)``.

Estimation, per Landsat scene (see :func:`estimate_shift_pair`):

1. both scenes are restricted to the pixels both see clear; the 10 m reference is blurred to
   the Landsat point-spread function (normalised convolution, so masked pixels do not leak);
2. the integer part comes from a masked normalised cross-correlation over the plausible
   window (each candidate shift compares only pixels both scenes see, so the mask's own edges
   cannot pull it to zero);
3. the sub-pixel part comes from a masked Gauss-Newton (Lucas-Kanade) least-squares fit of
   ``landsat(p) = a + b * reference(p + s)``, which also absorbs the bandpass gain and offset
   between the sensors, iterated to convergence with spline interpolation.

Scenes with too little common clear area keep their current shift and are flagged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from harmonize.errors import HarmonizeError, UnknownBandError

__all__ = [
    "PairShift",
    "estimate_shift_pair",
    "estimate_shifts",
    "coregister",
    "shift_cube",
    "SHIFT_COLUMNS",
]

log = logging.getLogger(__name__)

#: Bands matched by default (when the cube has them).
DEFAULT_BANDS: tuple[str, ...] = ("red", "nir")

#: Columns of the table :func:`estimate_shifts` returns (indexed by Landsat ``time``).
SHIFT_COLUMNS: tuple[str, ...] = (
    "item_id",
    "platform",
    "reference_time",
    "reference_item_id",
    "n_references",
    "days",
    "common_clear",
    "dx",
    "dy",
    "residual_dx",
    "residual_dy",
    "spread",
    "quality",
    "flagged",
    "reason",
)


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
    """

    row: float
    col: float
    quality: float
    common: int
    iterations: int
    converged: bool


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
) -> tuple[np.ndarray, float, int, bool]:
    """Masked Gauss-Newton fit of ``moving(p) = a + b * reference(p + s)`` for ``s``."""
    coeffs = ndimage.spline_filter(reference, order=3, mode="nearest")
    rows, cols = np.nonzero(mask)
    if rows.size > max_pixels:  # plenty for two parameters; bounds the cost on large frames
        step = int(np.ceil(rows.size / max_pixels))
        rows, cols = rows[::step], cols[::step]
    y = moving[rows, cols]
    s = np.asarray(start, dtype="float64")
    converged = False
    it = 0
    while it < max_iter:
        it += 1
        coords = np.vstack([rows + s[0], cols + s[1]])
        r = ndimage.map_coordinates(coeffs, coords, order=3, mode="nearest", prefilter=False)
        # Derivatives of the spline at the sample points, by central differences of the spline.
        h = 0.25
        gr = (
            ndimage.map_coordinates(coeffs, coords + [[h], [0]], order=3, mode="nearest", prefilter=False)
            - ndimage.map_coordinates(coeffs, coords - [[h], [0]], order=3, mode="nearest", prefilter=False)
        ) / (2 * h)
        gc = (
            ndimage.map_coordinates(coeffs, coords + [[0], [h]], order=3, mode="nearest", prefilter=False)
            - ndimage.map_coordinates(coeffs, coords - [[0], [h]], order=3, mode="nearest", prefilter=False)
        ) / (2 * h)
        design = np.column_stack([np.ones_like(r), r, gr, gc])
        sol, *_ = np.linalg.lstsq(design, y, rcond=None)
        _, b, c, d = sol
        if abs(b) < 1e-9:
            break
        step = np.array([c / b, d / b])
        s = s + step
        if np.any(np.abs(s - np.asarray(start)) > window):
            break
        if np.hypot(*step) < tol:
            converged = True
            break
    coords = np.vstack([rows + s[0], cols + s[1]])
    r = ndimage.map_coordinates(coeffs, coords, order=3, mode="nearest", prefilter=False)
    quality = float(np.corrcoef(r, y)[0, 1]) if r.size > 2 and r.std() > 0 and y.std() > 0 else 0.0
    return s, quality, it, converged


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
    s, quality, it, converged = _lk_refine(
        mov, ref, fit_mask, (coarse[0], coarse[1]), max_iter=max_iter, tol=tol, window=2.5
    )
    if not converged or np.any(np.abs(s) > max_shift):
        converged = False
    return PairShift(float(s[0]), float(s[1]), quality, n_common, it, converged)


def _combine(ests: list[tuple[int, PairShift]]) -> tuple[np.ndarray, float, float, int]:
    """Weighted mean of per-reference shifts (weights: common pixels), after dropping estimates
    more than a pixel from the weighted median; returns shift, spread (px), quality, best ref."""
    s = np.array([[e.row, e.col] for _, e in ests])
    w = np.array([e.common * max(e.quality, 0.0) ** 2 for _, e in ests], dtype="float64") + 1e-12
    med = np.array([_weighted_median(s[:, k], w) for k in range(2)])
    keep = np.hypot(*(s - med).T) <= 1.0
    s, w = s[keep], w[keep]
    q = np.array([e.quality for _, e in ests])[keep]
    mean = (s * w[:, None]).sum(0) / w.sum()
    spread = float(np.sqrt((w * ((s - mean) ** 2).sum(1)).sum() / w.sum()))
    best = [j for (j, _), k in zip(ests, keep, strict=True) if k][int(np.argmax(w))]
    return mean, spread, float((q * w).sum() / w.sum()), best


def _weighted_median(v: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(v)
    c = np.cumsum(w[o])
    return float(v[o][np.searchsorted(c, 0.5 * c[-1])])


def _time_coord(cube: xr.Dataset, name: str, default: Any) -> np.ndarray:
    if name in cube.coords:
        return np.asarray(cube.coords[name].values)
    return np.full(cube.sizes["time"], default, dtype=object)


def _pixel_size(cube: xr.Dataset) -> tuple[float, float]:
    """Signed pixel size (x, y) in CRS units (y is negative for north-up grids)."""
    try:
        aff = cube.odc.geobox.affine
        return float(aff.a), float(aff.e)
    except Exception:  # noqa: BLE001 - fall back to the coordinates themselves
        x, y = cube["x"].values, cube["y"].values
        return float(x[1] - x[0]), float(y[1] - y[0])


def estimate_shifts(
    cube: xr.Dataset,
    reference: xr.Dataset | None = None,
    *,
    reference_sensor: str = "sentinel-2",
    moving_sensor: str = "landsat",
    band: str | Sequence[str] | None = None,
    clear: str = "clear",
    max_days: float = 10.0,
    min_clear: float = 0.3,
    psf_sigma: float = 15.0,
    moving_sigma: float = 5.0,
    max_shift: float = 60.0,
    max_references: int = 4,
    enough: float = 0.9,
    min_pixels: int = 500,
    max_size: int | None = 2048,
    threads: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Measure each Landsat scene's misregistration against the nearest clear Sentinel-2 scenes.

    Parameters
    ----------
    cube
        A cube from :func:`harmonize.cube.load_cube` with both sensors (a ``sensor`` coordinate
        on ``time``), the ``band`` variable and a boolean ``clear`` variable.
    reference
        Optional separate reference cube on the same GeoBox; by default the ``reference_sensor``
        scenes of ``cube`` itself.
    reference_sensor, moving_sensor
        Values of the ``sensor`` coordinate for the reference and the scenes to register.
    band
        A sharp band both sensors share, or several: each band and reference pair gives one
        estimate and all are averaged. Default: whichever of ``red`` and ``nir`` (the bands
        that carry field edges over land) the cubes have.
    clear
        Name of the clear-sky mask variable.
    max_days
        Largest time difference between a Landsat scene and a reference.
    min_clear
        Least fraction of the frame that the Landsat scene and at least one matched reference
        see clear together; below it the scene keeps its current shift and is flagged.
    psf_sigma
        Gaussian sigma (metres) that blurs the 10 m reference to Landsat's 30 m point-spread.
    moving_sigma
        Gaussian sigma (metres) applied to the Landsat scene (smooths resampling artefacts).
    max_shift
        Largest plausible misregistration in metres; estimates beyond it are flagged.
    max_references
        At most this many reference scenes (nearest in time first) are matched; their estimates
        are averaged, weighted by common clear pixels and fit quality, so partly cloudy
        references together cover what one alone would not.
    enough
        Stop adding references once they cover this fraction of the Landsat scene's clear area.
    min_pixels
        Least number of common clear pixels for one scene pair to count.
    max_size
        Measure on at most the central ``max_size`` x ``max_size`` pixels of the frame, which
        bounds memory on large cubes (a misregistration is one translation per scene); ``None``
        uses the whole frame. ``common_clear`` refers to that window.
    threads
        Scenes registered at once (default: the machine's cores); the table does not depend on it.
    progress
        Show a tqdm bar over Landsat scenes.

    Returns
    -------
    pandas.DataFrame
        One row per Landsat time (index ``time``) with :data:`SHIFT_COLUMNS`: ``dx``, ``dy``
        the total correction in metres to ADD to the scene's origin (the cube's current
        ``shift_x``/``shift_y`` plus the measured residual ``residual_dx``/``residual_dy``),
        ``quality`` (correlation coefficient of the fits, 1 is perfect), ``spread`` (metres,
        disagreement between references), ``common_clear`` (fraction of the frame clear in the
        Landsat scene and in some matched reference), ``reference_time`` (the reference that
        weighed most), ``reference_item_id`` (all used, comma-separated), ``n_references``,
        ``days`` (the farthest used) and ``flagged``/``reason``.

    Raises
    ------
    UnknownBandError
        If ``band`` or ``clear`` is missing from a cube.
    HarmonizeError
        If the cube has no ``sensor`` coordinate or no scene of either sensor.
    """
    ref_cube = cube if reference is None else reference
    if band is None:
        band = [b for b in DEFAULT_BANDS if b in cube.data_vars and b in ref_cube.data_vars] or ["red"]
    bands = (band,) if isinstance(band, str) else tuple(band)
    for c in (cube, ref_cube):
        missing = [v for v in (*bands, clear) if v not in c.data_vars]
        if missing:
            raise UnknownBandError(
                f"Co-registration needs variables {missing}; load the cube with bands {list(bands)} "
                "and its clear mask."
            )
        if "sensor" not in c.coords:
            raise HarmonizeError(
                "The cube has no 'sensor' coordinate on time; load it with harmonize.cube.load_cube."
            )
    sensors = np.asarray(cube["sensor"].values).astype(str)
    mov_idx = np.flatnonzero(sensors == moving_sensor)
    ref_sensors = np.asarray(ref_cube["sensor"].values).astype(str)
    ref_idx = np.flatnonzero(ref_sensors == reference_sensor)
    if mov_idx.size == 0:
        raise HarmonizeError(f"The cube has no {moving_sensor!r} scene to co-register.")
    if ref_idx.size == 0:
        raise HarmonizeError(
            f"No {reference_sensor!r} scene to co-register against; include Sentinel-2 items "
            "or pass reference=<a Sentinel-2 cube on the same GeoBox>."
        )
    px, py = _pixel_size(cube)
    res = float(np.hypot(px, py) / np.sqrt(2))
    if max_size is not None:
        window = {
            d: slice(
                max(0, (cube.sizes[d] - max_size) // 2), max(0, (cube.sizes[d] - max_size) // 2) + max_size
            )
            for d in ("y", "x")
        }
        cube = cube.isel(window)
        ref_cube = ref_cube.isel(window)
    n_frame = cube.sizes["y"] * cube.sizes["x"]

    def frame_clear(c: xr.Dataset) -> xr.DataArray:
        return (c[clear].astype(bool) & np.isfinite(c[bands[0]])).sum(("y", "x")) / n_frame

    # One small reduction for every scene's own clear fraction: ranks references cheaply.
    ref_clear = np.asarray(frame_clear(ref_cube.isel(time=ref_idx)).values, dtype="float64")
    ref_times = ref_cube["time"].values[ref_idx]
    times = cube["time"].values
    item_ids = _time_coord(cube, "item_id", "")
    ref_item_ids = _time_coord(ref_cube, "item_id", "")
    platforms = _time_coord(cube, "platform", "")
    cur_x = _time_coord(cube, "shift_x", 0.0)
    cur_y = _time_coord(cube, "shift_y", 0.0)

    cache: dict[int, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    moving: dict[int, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    locks: dict[int, threading.Lock] = {}
    guard = threading.Lock()

    def unpack(one: xr.Dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {b: one[b].values.astype("float64") for b in bands}, one[clear].values.astype(bool)

    def scene(c: xr.Dataset, i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return unpack(c[[*bands, clear]].isel(time=i).compute())

    def references_of(i: int) -> list[int]:
        days = np.abs((ref_times - times[i]) / np.timedelta64(1, "D")).astype("float64")
        order = [j for j in np.argsort(days, kind="stable") if days[j] <= max_days]
        return [j for j in order if ref_clear[j] * n_frame >= min_pixels][:max_references]

    def prefetch(batch: Sequence[int]) -> None:
        """Read a batch of scenes, and the references they need, one computation per cube:
        GDAL and Zarr reads then run side by side, instead of one scene at a time inside the
        registering threads, queued behind their solvers."""
        mov = [int(i) for i in batch if references_of(i)]
        refs = sorted({j for i in mov for j in references_of(i)} - cache.keys())
        # One selection of many dates per cube, computed on its own: computing many one-date
        # selections together merges (and tokenizes) their graphs, which costs more than the reads.
        if mov:
            mov_data = cube[[*bands, clear]].isel(time=mov).compute()
            moving.update((i, unpack(mov_data.isel(time=k))) for k, i in enumerate(mov))
        if refs:
            ref_data = ref_cube[[*bands, clear]].isel(time=ref_idx[refs]).compute()
            cache.update((j, unpack(ref_data.isel(time=k))) for k, j in enumerate(refs))

    def reference_scene(j: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        # Shared by the worker threads: each reference is read once.
        with guard:
            lock = locks.setdefault(j, threading.Lock())
        with lock:
            if j not in cache:
                cache[j] = scene(ref_cube, int(ref_idx[j]))
            return cache[j]

    def register(i: int) -> dict[str, Any]:
        t = times[i]
        days = np.abs((ref_times - t) / np.timedelta64(1, "D")).astype("float64")
        order = references_of(i)
        row: dict[str, Any] = {
            "time": t,
            "item_id": str(item_ids[i]),
            "platform": str(platforms[i]),
            "reference_time": pd.NaT,
            "reference_item_id": "",
            "n_references": 0,
            "days": np.nan,
            "common_clear": 0.0,
            "dx": float(cur_x[i]),
            "dy": float(cur_y[i]),
            "residual_dx": 0.0,
            "residual_dy": 0.0,
            "spread": np.nan,
            "quality": np.nan,
            "flagged": True,
            "reason": f"no clear {reference_sensor} scene within {max_days:g} days",
        }
        if order:
            movs, mov_clear = moving.pop(i) if i in moving else scene(cube, i)
            seen = np.zeros(mov_clear.shape, dtype=bool)
            ests: list[tuple[int, PairShift]] = []
            mov_area = int((mov_clear & np.isfinite(movs[bands[0]])).sum())
            for j in order:
                ref_bands, ref_clear_mask = reference_scene(j)
                for b in bands:
                    mov, ref = movs[b], ref_bands[b]
                    common = mov_clear & np.isfinite(mov) & ref_clear_mask & np.isfinite(ref)
                    if common.sum() < min_pixels:
                        continue
                    try:
                        est = estimate_shift_pair(
                            mov,
                            ref,
                            mov_clear,
                            ref_clear_mask,
                            reference_sigma=psf_sigma / res,
                            moving_sigma=moving_sigma / res,
                            max_shift=max_shift / res,
                            min_pixels=min_pixels,
                        )
                    except HarmonizeError as err:
                        row["reason"] = str(err)
                        continue
                    if not est.converged:
                        row["reason"] = "sub-pixel refinement did not converge"
                        continue
                    ests.append((j, est))
                    seen |= common
                if seen.sum() >= enough * mov_area:
                    break  # the scene's clear area is covered: more references add little
            if ests:
                shift, spread, quality, best = _combine(ests)
                # moving(p) = reference(p + s): the scene shows the ground s pixels further on,
                # so the origin correction is s times the signed pixel size.
                rdx, rdy = shift[1] * px, shift[0] * py
                frac = float(seen.sum()) / n_frame
                used = list(dict.fromkeys(j for j, _ in ests))
                row.update(
                    reference_time=ref_times[best],
                    reference_item_id=",".join(str(ref_item_ids[ref_idx[j]]) for j in used),
                    n_references=len(used),
                    days=float(max(days[j] for j in used)),
                    common_clear=frac,
                    spread=spread * res,
                    quality=quality,
                )
                if frac < min_clear:
                    row["reason"] = f"common clear area {frac:.0%} < {min_clear:.0%}"
                else:
                    row.update(
                        residual_dx=rdx,
                        residual_dy=rdy,
                        dx=float(cur_x[i]) + rdx,
                        dy=float(cur_y[i]) + rdy,
                        flagged=False,
                        reason="",
                    )
        if row["flagged"]:
            log.info("scene %s at %s not co-registered: %s", row["item_id"], t, row["reason"])
        return row

    # Scenes are independent: register them on a few threads (the filters and solvers release
    # the GIL), in order, so the table is the same as a sequential run's.
    n_threads = max(1, min(threads if threads is not None else (os.cpu_count() or 1), len(mov_idx)))
    batch = max(8, 4 * n_threads)  # scenes in memory at a time, besides the references
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mov_idx), desc="co-registering", unit="scene")
    rows = []
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for k in range(0, len(mov_idx), batch):
            part = mov_idx[k : k + batch]
            prefetch(part)
            for row in pool.map(register, part):
                rows.append(row)
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    table = pd.DataFrame(rows).set_index("time")
    return table[list(SHIFT_COLUMNS)]


def _shift_block(block: np.ndarray, shift: tuple[float, float], order: int) -> np.ndarray:
    """Resample one (y, x) block so that ``out(p) = block(p - shift)``, NaN-aware."""
    ok = np.isfinite(block)
    filled = np.where(ok, block, 0.0)
    out = ndimage.shift(filled, shift, order=order, mode="nearest")
    w = ndimage.shift(ok.astype("float32"), shift, order=1, mode="constant", cval=0)
    return np.where(w > 0.999, out, np.nan).astype(block.dtype)


def shift_cube(cube: xr.Dataset, shifts: pd.DataFrame, *, order: int = 1) -> xr.Dataset:
    """Apply measured shifts by resampling the loaded cube (no reload from the archive).

    This resamples twice (native -> 10 m at load, then here); prefer :func:`coregister`,
    which reloads from the native pixels, whenever the cube carries its STAC items.

    Parameters
    ----------
    cube
        The cube the shifts were measured on.
    shifts
        Output of :func:`estimate_shifts`; its ``residual_dx``/``residual_dy`` are applied to
        unflagged scenes.
    order
        Spline order of the resampling (1 bilinear, 3 cubic).

    Returns
    -------
    xarray.Dataset
        The cube with shifted float variables (boolean masks shifted by nearest neighbour),
        lazy if the input is, and updated ``shift_*`` coordinates.
    """
    import dask.array as dsa

    px, py = _pixel_size(cube)
    times = cube["time"].values
    todo = {
        int(np.flatnonzero(times == t)[0]): (r.residual_dy / py, r.residual_dx / px)
        for t, r in shifts.iterrows()
        if not r.flagged and (r.residual_dx != 0 or r.residual_dy != 0)
    }
    depth = int(np.ceil(max([abs(v) for s in todo.values() for v in s], default=0))) + 2
    out = {}
    for name, var in cube.data_vars.items():
        if set(var.dims) != {"time", "y", "x"} or not todo:
            out[name] = var
            continue
        var = var.transpose("time", "y", "x")
        is_bool = var.dtype == bool
        data = var.data if isinstance(var.data, dsa.Array) else dsa.from_array(var.values, chunks=(1, -1, -1))
        slices = []
        for k in range(var.sizes["time"]):
            sl = data[k]
            if k in todo:
                src = sl.astype("float32") if is_bool else sl
                res = src.map_overlap(
                    _shift_block,
                    depth=depth,
                    boundary="nearest",
                    shift=todo[k],
                    order=0 if is_bool else order,
                    dtype=src.dtype,
                )
                sl = (res == 1) if is_bool else res
            slices.append(sl)
        out[name] = var.copy(data=dsa.stack(slices))
    res_ds = cube.copy()
    for name, var in out.items():
        res_ds[name] = var
    return _with_shift_coords(res_ds, shifts)


def _with_shift_coords(ds: xr.Dataset, shifts: pd.DataFrame) -> xr.Dataset:
    times = pd.DatetimeIndex(ds["time"].values)
    tab = shifts.reindex(times)
    moving = tab["flagged"].notna().to_numpy()
    sx = np.where(
        moving, tab["dx"].to_numpy(dtype="float64", na_value=np.nan), _time_coord(ds, "shift_x", 0.0)
    )
    sy = np.where(
        moving, tab["dy"].to_numpy(dtype="float64", na_value=np.nan), _time_coord(ds, "shift_y", 0.0)
    )
    flagged = tab["flagged"].to_numpy(dtype=object, na_value=False).astype(bool)
    quality = tab["quality"].to_numpy(dtype="float64", na_value=np.nan)
    return ds.assign_coords(
        shift_x=("time", sx.astype("float64")),
        shift_y=("time", sy.astype("float64")),
        shift_flagged=("time", flagged),
        shift_quality=("time", quality),
    )


def coregister(
    cube: xr.Dataset,
    reference: xr.Dataset | None = None,
    *,
    shifts: pd.DataFrame | None = None,
    reload: bool = True,
    **kw: Any,
) -> xr.Dataset:
    """Measure and remove the Landsat/Sentinel-2 misregistration of a cube.

    Parameters
    ----------
    cube
        A cube from :func:`harmonize.cube.load_cube` with both sensors.
    reference
        Optional separate Sentinel-2 reference cube on the same GeoBox (see
        :func:`estimate_shifts`).
    shifts
        A table from :func:`estimate_shifts` to apply instead of estimating one.
    reload
        Reload the Landsat scenes from their native pixels on shifted grids with the cube's own
        load options (:func:`harmonize.cube.reload_cube`; one resampling; needs the STAC items
        and options in ``cube.attrs``). ``False`` resamples the loaded cube instead
        (:func:`shift_cube`).
    **kw
        Passed to :func:`estimate_shifts`.

    Returns
    -------
    xarray.Dataset
        The corrected cube, lazy, with ``shift_x``, ``shift_y`` (metres, the corrections
        applied), ``shift_flagged`` and ``shift_quality`` coordinates on ``time``; the table is
        also in ``attrs["harmonize_shifts"]`` as records.
    """
    table = estimate_shifts(cube, reference, **kw) if shifts is None else shifts
    if not reload or "stac_items" not in cube.attrs:
        if reload:
            log.warning("cube carries no STAC items; resampling the loaded cube instead of reloading")
        out = shift_cube(cube, table)
    else:
        from harmonize.cube import reload_cube

        item_shifts = dict((cube.attrs.get("harmonize_load") or {}).get("shifts") or {})
        for _, r in table.iterrows():
            for item_id in _split_ids(r.item_id):
                item_shifts[item_id] = (float(r.dx), float(r.dy))
        out = reload_cube(
            cube,
            geobox=cube.odc.geobox,  # the caller may have cropped the cube since loading
            shifts={k: (float(v[0]), float(v[1])) for k, v in item_shifts.items()},
        )
        if out.sizes["time"] != cube.sizes["time"]:  # the caller subset the cube in time
            out = out.sel(time=cube["time"].values)
        keep = [v for v in cube.data_vars if v in out.data_vars]
        out = out[keep] if keep else out
        out = _with_shift_coords(out, table)
    out.attrs["harmonize_shifts"] = _records(table)
    return out


def _split_ids(value: str) -> list[str]:
    """Item ids of one time step (several items may be grouped into one solar day)."""
    return [v for v in str(value).replace(";", ",").split(",") if v] or [str(value)]


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    recs = table.reset_index().to_dict("records")
    for r in recs:
        for k, v in r.items():
            if isinstance(v, pd.Timestamp | np.datetime64):
                r[k] = None if pd.isna(v) else pd.Timestamp(v).isoformat()
            elif isinstance(v, np.generic):
                r[k] = v.item()
    return recs
