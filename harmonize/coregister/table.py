"""The shift table: every Landsat scene of a cube registered against the nearest clear references.

:func:`estimate_shifts` returns one row per moving (Landsat) time step: the total correction
``dx``/``dy`` in metres to add to the scene's geotransform origin, with the evidence behind it.
Its steps: check the inputs and pick the bands (:func:`_check_inputs`), restrict both cubes to a
central window (:func:`_central_window`), read scenes a batch at a time (:class:`_SceneReader`),
register each scene against its references (:class:`_Registration`) on a few threads, and
build the table in time order. Give the table to ``load_cube(items, shifts=table)`` to load the
scenes once, corrected.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.coregister.pair import PairShift, estimate_shift_pair
from harmonize.errors import HarmonizeError, UnknownBandError

__all__ = ["DEFAULT_BANDS", "SHIFT_COLUMNS", "estimate_shifts", "pixel_size"]

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
    "sigma",
    "flagged",
    "reason",
)

Scene = tuple[dict[str, np.ndarray], np.ndarray]  # band -> values (float64), clear mask


def pixel_size(cube: xr.Dataset) -> tuple[float, float]:
    """Signed pixel size (x, y) in CRS units (y is negative for north-up grids)."""
    try:
        aff = cube.odc.geobox.affine
        return float(aff.a), float(aff.e)
    except Exception:  # noqa: BLE001 - fall back to the coordinates themselves
        x, y = cube["x"].values, cube["y"].values
        return float(x[1] - x[0]), float(y[1] - y[0])


def _time_coord(cube: xr.Dataset, name: str, default: Any) -> np.ndarray:
    if name in cube.coords:
        return np.asarray(cube.coords[name].values)
    return np.full(cube.sizes["time"], default, dtype=object)


def _check_inputs(
    cube: xr.Dataset, ref_cube: xr.Dataset, band: str | Sequence[str] | None, clear: str
) -> tuple[str, ...]:
    """The bands to match; raises a named error for missing variables or sensor labels."""
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
    return bands


def _positions(
    cube: xr.Dataset, ref_cube: xr.Dataset, moving: str, reference: str
) -> tuple[np.ndarray, np.ndarray]:
    mov_idx = np.flatnonzero(np.asarray(cube["sensor"].values).astype(str) == moving)
    ref_idx = np.flatnonzero(np.asarray(ref_cube["sensor"].values).astype(str) == reference)
    if mov_idx.size == 0:
        raise HarmonizeError(f"The cube has no {moving!r} scene to co-register.")
    if ref_idx.size == 0:
        raise HarmonizeError(
            f"No {reference!r} scene to co-register against; include Sentinel-2 items "
            "or pass reference=<a Sentinel-2 cube on the same GeoBox>."
        )
    return mov_idx, ref_idx


def _central_window(
    cube: xr.Dataset, ref_cube: xr.Dataset, max_size: int | None
) -> tuple[xr.Dataset, xr.Dataset]:
    """Both cubes cut to the central ``max_size`` square (a misregistration is one translation)."""
    if max_size is None:
        return cube, ref_cube
    window = {
        d: slice(max(0, (cube.sizes[d] - max_size) // 2), max(0, (cube.sizes[d] - max_size) // 2) + max_size)
        for d in ("y", "x")
    }
    return cube.isel(window), ref_cube.isel(window)


class _SceneReader:
    """Reads the scenes registration needs, a batch per computation; each reference once.

    One selection of many dates per cube, computed on its own: GDAL and Zarr reads then run side
    by side instead of one scene at a time inside the registering threads (queued behind their
    solvers), and computing many one-date selections together would merge (and tokenize) their
    graphs, which costs more than the reads.
    """

    def __init__(
        self, cube: xr.Dataset, ref_cube: xr.Dataset, ref_idx: np.ndarray, bands: tuple[str, ...], clear: str
    ):
        self.cube, self.ref_cube, self.ref_idx = cube, ref_cube, ref_idx
        self.names = [*bands, clear]
        self.bands, self.clear = bands, clear
        self._refs: dict[int, Scene] = {}
        self._moving: dict[int, Scene] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def _unpack(self, one: xr.Dataset) -> Scene:
        return {b: one[b].values.astype("float64") for b in self.bands}, one[self.clear].values.astype(bool)

    def prefetch(self, moving: Sequence[int], references: Sequence[int]) -> None:
        """Read the moving time positions and the reference positions (indices into ref_idx) not read yet."""
        refs = sorted(set(references) - self._refs.keys())
        if moving:
            data = self.cube[self.names].isel(time=list(moving)).compute()
            self._moving.update((i, self._unpack(data.isel(time=k))) for k, i in enumerate(moving))
        if refs:
            data = self.ref_cube[self.names].isel(time=self.ref_idx[refs]).compute()
            self._refs.update((j, self._unpack(data.isel(time=k))) for k, j in enumerate(refs))

    def keep(self, references: set[int]) -> None:
        """Forget the references read so far that are not in ``references`` (bounds memory)."""
        for j in set(self._refs) - references:
            self._refs.pop(j, None)

    def moving(self, i: int) -> Scene:
        """Moving scene ``i`` (handed over once: the prefetched copy is released)."""
        if i in self._moving:
            return self._moving.pop(i)
        return self._unpack(self.cube[self.names].isel(time=i).compute())

    def reference(self, j: int) -> Scene:
        """Reference ``j``, read once and shared by the worker threads."""
        with self._guard:
            lock = self._locks.setdefault(j, threading.Lock())
        with lock:
            if j not in self._refs:
                self._refs[j] = self._unpack(
                    self.ref_cube[self.names].isel(time=int(self.ref_idx[j])).compute()
                )
            return self._refs[j]


@dataclass(frozen=True)
class _Settings:
    """The thresholds of :func:`estimate_shifts`, in pixels where the solver wants pixels."""

    reference_sensor: str
    max_days: float
    min_clear: float
    psf_px: float
    moving_px: float
    max_shift_px: float
    max_references: int
    enough: float
    min_pixels: int
    composite: bool
    max_sigma_px: float


def _weighted_median(v: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(v)
    c = np.cumsum(w[o])
    return float(v[o][np.searchsorted(c, 0.5 * c[-1])])


def _combine(ests: list[tuple[int, PairShift]]) -> tuple[np.ndarray, float, float, int, float]:
    """Weighted mean of per-reference (and per-band) shifts (weights: common pixels and fit
    quality), after dropping estimates more than a pixel from the weighted median.

    Returns the shift, the spread of the kept estimates (px), their quality, the reference that
    weighed most and the shift's precision (px): the kept estimates' mean formal precision
    combined with their spread (bands of one scene are not independent, so no averaging down).
    """
    s = np.array([[e.row, e.col] for _, e in ests])
    w = np.array([e.common * max(e.quality, 0.0) ** 2 for _, e in ests], dtype="float64") + 1e-12
    med = np.array([_weighted_median(s[:, k], w) for k in range(2)])
    keep = np.hypot(*(s - med).T) <= 1.0
    s, w = s[keep], w[keep]
    q = np.array([e.quality for _, e in ests])[keep]
    mean = (s * w[:, None]).sum(0) / w.sum()
    spread = float(np.sqrt((w * ((s - mean) ** 2).sum(1)).sum() / w.sum()))
    best = [j for (j, _), k in zip(ests, keep, strict=True) if k][int(np.argmax(w))]
    formal = np.array([e.sigma for _, e in ests])[keep]
    formal = float(np.sqrt(np.nanmean(formal**2))) if np.isfinite(formal).any() else np.nan
    return mean, spread, float((q * w).sum() / w.sum()), best, float(np.hypot(formal, spread))


class _Registration:
    """Registers one moving scene at a time against its references (thread-safe: no shared writes)."""

    def __init__(
        self,
        cube: xr.Dataset,
        ref_cube: xr.Dataset,
        ref_idx: np.ndarray,
        reader: _SceneReader,
        settings: _Settings,
    ) -> None:
        self.reader, self.settings = reader, settings
        self.px, self.py = pixel_size(cube)
        self.res = float(np.hypot(self.px, self.py) / np.sqrt(2))
        self.n_frame = cube.sizes["y"] * cube.sizes["x"]
        self.bands = reader.bands
        first, clear = reader.bands[0], reader.clear
        frame = ref_cube.isel(time=ref_idx)
        # One small reduction for every reference's own clear fraction: ranks references cheaply.
        own = (frame[clear].astype(bool) & np.isfinite(frame[first])).sum(("y", "x")) / self.n_frame
        self.ref_clear = np.asarray(own.values, dtype="float64")
        self.ref_times = ref_cube["time"].values[ref_idx]
        self.ref_item_ids = _time_coord(ref_cube, "item_id", "")[ref_idx]
        self.times = cube["time"].values
        self.item_ids = _time_coord(cube, "item_id", "")
        self.platforms = _time_coord(cube, "platform", "")
        self.cur_x = _time_coord(cube, "shift_x", 0.0)
        self.cur_y = _time_coord(cube, "shift_y", 0.0)

    def days(self, i: int) -> np.ndarray:
        """Days between moving scene ``i`` and every reference."""
        return np.abs((self.ref_times - self.times[i]) / np.timedelta64(1, "D")).astype("float64")

    def references_of(self, i: int) -> list[int]:
        """The references of scene ``i``: nearest in time first, within max_days, clear enough."""
        st, days = self.settings, self.days(i)
        order = [j for j in np.argsort(days, kind="stable") if days[j] <= st.max_days]
        return [j for j in order if self.ref_clear[j] * self.n_frame >= st.min_pixels][: st.max_references]

    def _unmeasured_row(self, i: int) -> dict[str, Any]:
        st = self.settings
        return {
            "time": self.times[i],
            "item_id": str(self.item_ids[i]),
            "platform": str(self.platforms[i]),
            "reference_time": pd.NaT,
            "reference_item_id": "",
            "n_references": 0,
            "days": np.nan,
            "common_clear": 0.0,
            "dx": float(self.cur_x[i]),
            "dy": float(self.cur_y[i]),
            "residual_dx": 0.0,
            "residual_dy": 0.0,
            "spread": np.nan,
            "quality": np.nan,
            "sigma": np.nan,
            "flagged": True,
            "reason": f"no clear {st.reference_sensor} scene within {st.max_days:g} days",
        }

    def _pair(
        self, mov: np.ndarray, mov_clear: np.ndarray, ref: np.ndarray, ref_clear: np.ndarray
    ) -> PairShift:
        st = self.settings
        return estimate_shift_pair(
            mov,
            ref,
            mov_clear,
            ref_clear,
            reference_sigma=st.psf_px,
            moving_sigma=st.moving_px,
            max_shift=st.max_shift_px,
            min_pixels=st.min_pixels,
        )

    def _composite(self, order: list[int], mov_ok: np.ndarray) -> tuple[Scene, list[int]]:
        """A clear-sky reference for one moving scene from many dates: each pixel from the
        nearest-in-time reference that sees it clear, adding dates until they cover ``enough``
        of the moving scene's clear pixels (a best-available-pixel composite)."""
        bands = self.bands
        filled: np.ndarray | None = None
        values: dict[str, np.ndarray] = {}
        used: list[int] = []
        need = self.settings.enough * max(int(mov_ok.sum()), 1)
        for j in order:
            ref_bands, ref_clear = self.reader.reference(j)
            ok = ref_clear & np.logical_and.reduce([np.isfinite(ref_bands[b]) for b in bands])
            if filled is None:
                filled = np.zeros(ok.shape, dtype=bool)
                values = {b: np.full(ok.shape, np.nan, dtype="float64") for b in bands}
            ok &= ~filled
            if not ok.any():
                continue
            for b in bands:
                values[b][ok] = ref_bands[b][ok]
            filled |= ok
            used.append(j)
            if (filled & mov_ok).sum() >= need:
                break
        if filled is None:
            filled = np.zeros(mov_ok.shape, dtype=bool)
        return (values, filled), used

    def _measure_composite(
        self, i: int, order: list[int]
    ) -> tuple[list[tuple[int, PairShift]], np.ndarray, str | None, list[int]]:
        """Per-band estimates of scene ``i`` against its composite reference."""
        movs, mov_clear = self.reader.moving(i)
        mov_ok = mov_clear & np.logical_and.reduce([np.isfinite(movs[b]) for b in self.bands])
        (comp, comp_ok), used = self._composite(order, mov_ok)
        seen = mov_ok & comp_ok
        ests: list[tuple[int, PairShift]] = []
        reason = None
        if not used or seen.sum() < self.settings.min_pixels:
            return ests, seen, f"{int(seen.sum())} pixels clear in the scene and the reference", used
        for b in self.bands:
            est, failure = self._try_pair(movs[b], mov_ok, comp[b], comp_ok)
            if est is None:
                reason = failure
                continue
            ests.append((used[0], est))
        return ests, seen, reason, used

    def _try_pair(
        self, mov: np.ndarray, mov_ok: np.ndarray, ref: np.ndarray, ref_ok: np.ndarray
    ) -> tuple[PairShift | None, str | None]:
        """One converged pair estimate, or ``None`` and why it failed."""
        try:
            est = self._pair(mov, mov_ok, ref, ref_ok)
        except HarmonizeError as err:
            return None, str(err)
        if not est.converged:
            return None, "sub-pixel refinement did not converge"
        return est, None

    def _measure(
        self, i: int, order: list[int]
    ) -> tuple[list[tuple[int, PairShift]], np.ndarray, str | None]:
        """Per-band, per-reference estimates of scene ``i``, the area they cover, the last failure."""
        movs, mov_clear = self.reader.moving(i)
        seen = np.zeros(mov_clear.shape, dtype=bool)
        ests: list[tuple[int, PairShift]] = []
        reason = None
        mov_area = int((mov_clear & np.isfinite(movs[self.bands[0]])).sum())
        for j in order:
            ref_bands, ref_clear = self.reader.reference(j)
            for b in self.bands:
                mov, ref = movs[b], ref_bands[b]
                common = mov_clear & np.isfinite(mov) & ref_clear & np.isfinite(ref)
                if common.sum() < self.settings.min_pixels:
                    continue
                est, failure = self._try_pair(mov, mov_clear, ref, ref_clear)
                if est is None:
                    reason = failure
                    continue
                ests.append((j, est))
                seen |= common
            if seen.sum() >= self.settings.enough * mov_area:
                break  # the scene's clear area is covered: more references add little
        return ests, seen, reason

    def _record(
        self,
        row: dict[str, Any],
        i: int,
        ests: list[tuple[int, PairShift]],
        seen: np.ndarray,
        used: list[int] | None = None,
    ) -> None:
        """Fill ``row`` from the combined estimates; flag it if they cover too little of the frame
        or are too imprecise."""
        shift, spread, quality, best, sigma = _combine(ests)
        # moving(p) = reference(p + s): the scene shows the ground s pixels further on, so the
        # origin correction is s times the signed pixel size.
        rdx, rdy = shift[1] * self.px, shift[0] * self.py
        frac = float(seen.sum()) / self.n_frame
        used = used or list(dict.fromkeys(j for j, _ in ests))
        days = self.days(i)
        row.update(
            reference_time=self.ref_times[best],
            reference_item_id=",".join(str(self.ref_item_ids[j]) for j in used),
            n_references=len(used),
            days=float(max(days[j] for j in used)),
            common_clear=frac,
            spread=spread * self.res,
            quality=quality,
            sigma=sigma * self.res,
        )
        if frac < self.settings.min_clear:
            row["reason"] = f"common clear area {frac:.0%} < {self.settings.min_clear:.0%}"
            return
        if not sigma <= self.settings.max_sigma_px:
            limit = self.settings.max_sigma_px * self.res
            row["reason"] = f"shift precision {sigma * self.res:.1f} m worse than {limit:g} m"
            return
        cx, cy = float(self.cur_x[i]), float(self.cur_y[i])
        row.update(residual_dx=rdx, residual_dy=rdy, dx=cx + rdx, dy=cy + rdy, flagged=False, reason="")

    def register(self, i: int) -> dict[str, Any]:
        """The table row of moving time position ``i``."""
        row = self._unmeasured_row(i)
        order = self.references_of(i)
        if order:
            used = None
            if self.settings.composite:
                ests, seen, reason, used = self._measure_composite(i, order)
            else:
                ests, seen, reason = self._measure(i, order)
            if reason is not None:
                row["reason"] = reason
            if ests:
                self._record(row, i, ests, seen, used)
        if row["flagged"]:
            log.info("scene %s at %s not co-registered: %s", row["item_id"], row["time"], row["reason"])
        return row


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows).set_index("time")[list(SHIFT_COLUMNS)]


def _register_all(
    mov_idx: np.ndarray,
    reg: _Registration,
    reader: _SceneReader,
    threads: int | None,
    progress: bool,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows of every moving scene, in order, registered on a few threads a batch at a time
    (each batch's rows handed to ``on_rows`` as soon as they are measured).

    Scenes are independent (the filters and solvers release the GIL), and the rows come back in
    order, so the table is the same as a sequential run's.
    """
    n_threads = max(1, min(threads if threads is not None else (os.cpu_count() or 1), len(mov_idx)))
    batch = max(8, 4 * n_threads)  # scenes in memory at a time, besides the references
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mov_idx), desc="co-registering", unit="scene")
    rows = []
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for k in range(0, len(mov_idx), batch):
            part = [int(i) for i in mov_idx[k : k + batch]]
            moving = [i for i in part if reg.references_of(i)]
            reader.prefetch(moving, sorted({j for i in moving for j in reg.references_of(i)}))
            for row in pool.map(reg.register, part):
                rows.append(row)
                if bar is not None:
                    bar.update()
            if on_rows is not None:
                on_rows(_table(rows[-len(part) :]))
            # Release the references no later scene uses (scenes come in time order).
            reader.keep({j for i in mov_idx[k + batch :] for j in reg.references_of(int(i))})
    if bar is not None:
        bar.close()
    return rows


def estimate_shifts(
    cube: xr.Dataset,
    reference: xr.Dataset | None = None,
    *,
    reference_sensor: str = "sentinel-2",
    moving_sensor: str = "landsat",
    band: str | Sequence[str] | None = None,
    clear: str = "clear",
    max_days: float = 60.0,
    min_clear: float = 0.02,
    psf_sigma: float = 15.0,
    moving_sigma: float = 5.0,
    max_shift: float = 60.0,
    max_references: int = 16,
    enough: float = 0.98,
    min_pixels: int = 500,
    composite: bool = True,
    max_sigma: float = 3.0,
    max_size: int | None = 2048,
    threads: int | None = None,
    progress: bool = False,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
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
        Largest time difference between a Landsat scene and a reference date.
    min_clear
        Least fraction of the frame that the Landsat scene and its reference (the composite, or
        at least one matched scene) see clear together; below it the scene keeps its current
        shift and is flagged.
    psf_sigma
        Gaussian sigma (metres) that blurs the 10 m reference to Landsat's 30 m point-spread.
    moving_sigma
        Gaussian sigma (metres) applied to the Landsat scene (smooths resampling artefacts).
    max_shift
        Largest plausible misregistration in metres; estimates beyond it are flagged.
    max_references
        At most this many reference dates (nearest in time first) go into a scene's composite
        (or, with ``composite=False``, are matched one by one, their estimates averaged,
        weighted by common clear pixels and fit quality).
    enough
        Stop adding reference dates once they cover this fraction of the Landsat scene's clear
        area.
    min_pixels
        Least number of common clear pixels for one scene pair to count.
    composite
        Register each scene against a clear-sky composite of the reference dates (each pixel
        from the nearest date that sees it clear), so that a scene whose few clear pixels no
        single reference date sees clear is still measured with all of them. ``False`` matches
        the reference dates one by one.
    max_sigma
        Flag a scene whose shift is less precise than this (metres, one-sigma radial, the
        ``sigma`` column).
    max_size
        Measure on at most the central ``max_size`` x ``max_size`` pixels of the frame, which
        bounds memory on large cubes (a misregistration is one translation per scene); ``None``
        uses the whole frame. ``common_clear`` refers to that window.
    threads
        Scenes registered at once (default: the machine's cores); the table does not depend on it.
    progress
        Show a tqdm bar over Landsat scenes.
    on_rows
        Called with the table of each batch of scenes (a few at a time, in time order) as soon
        as they are measured, so a caller can use their shifts while later scenes are measured.

    Returns
    -------
    pandas.DataFrame
        One row per Landsat time (index ``time``) with :data:`SHIFT_COLUMNS`: ``dx``, ``dy``
        the total correction in metres to ADD to the scene's origin (the cube's current
        ``shift_x``/``shift_y`` plus the measured residual ``residual_dx``/``residual_dy``),
        ``quality`` (correlation coefficient of the fits, 1 is perfect), ``sigma`` (metres, the
        shift's one-sigma radial precision from the robust fits and their spread), ``spread``
        (metres, disagreement between bands and references), ``common_clear`` (fraction of the
        frame clear in the Landsat scene and in some matched reference), ``reference_time``
        (the reference that weighed most), ``reference_item_id`` (all used, comma-separated),
        ``n_references``,
        ``days`` (the farthest used) and ``flagged``/``reason``.
        Give it to ``load_cube(items, shifts=table)`` to load the scenes once, corrected, from
        their native pixels (or to :func:`harmonize.coregister.shift_cube` for a cube without
        its items).

    Raises
    ------
    UnknownBandError
        If ``band`` or ``clear`` is missing from a cube.
    HarmonizeError
        If the cube has no ``sensor`` coordinate or no scene of either sensor.
    """
    ref_cube = cube if reference is None else reference
    bands = _check_inputs(cube, ref_cube, band, clear)
    mov_idx, ref_idx = _positions(cube, ref_cube, moving_sensor, reference_sensor)
    cube, ref_cube = _central_window(cube, ref_cube, max_size)
    px, py = pixel_size(cube)
    res = float(np.hypot(px, py) / np.sqrt(2))
    settings = _Settings(
        reference_sensor=reference_sensor,
        max_days=max_days,
        min_clear=min_clear,
        psf_px=psf_sigma / res,
        moving_px=moving_sigma / res,
        max_shift_px=max_shift / res,
        max_references=max_references,
        enough=enough,
        min_pixels=min_pixels,
        composite=composite,
        max_sigma_px=max_sigma / res,
    )
    reader = _SceneReader(cube, ref_cube, ref_idx, bands, clear)
    registration = _Registration(cube, ref_cube, ref_idx, reader, settings)
    return _table(_register_all(mov_idx, registration, reader, threads, progress, on_rows))
