"""Gap-filling of irregular, cloud-gapped time series onto a regular time axis.

Four per-pixel methods, all vectorised over pixels with numpy (one kernel call fills a whole
dask block ``(y, x, time)``; time must be one chunk):

``linear``
    Linear interpolation in time between the nearest clear observations before and after.
``whittaker``
    Whittaker smoother (Eilers 2003) on a daily grid: minimise ``|W (y - z)|^2 + lmbda |D2 z|^2``
    with weight 0 on days without observation. The pentadiagonal system differs per pixel only on
    its diagonal, so it is solved for all pixels at once by a banded Cholesky factorisation.
``harmonic``
    Least-squares harmonic regression ``a0 + sum_k b_k cos(2 pi k t / P) + c_k sin(...)`` per pixel
    (weighted normal equations, batched solve).
``rbf``
    FORCE-style ensemble of Gaussian kernel smoothers (sigmas 8, 16, 32 days, truncated to 95 %
    of their mass), each estimate weighted by the data availability under its kernel (the share
    of its weight over all acquisitions that falls on clear ones), so where clouds leave a narrow
    kernel empty the wider ones bridge the gap.

Every method but ``linear`` honours observation weights (``gap_fill(weights=...)``): a per-pixel
or per-sensor confidence, e.g. lower for Landsat where the 10 m scene is heterogeneous at 30 m
(:func:`harmonize.timeseries.observation_weights`). ``linear`` only drops weight-0 observations.

Whatever the method, an output step is left NaN when the clear observations before and after it
are more than ``max_gap`` apart, or, before the first / after the last observation, when it lies
more than ``max_gap / 2`` from it.

The numpy kernels (:func:`fill_pixels`, :func:`interpolate_linear`, :func:`whittaker_gcv`) and
the time helpers (:func:`to_days`, :func:`as_days`) are public for code that works on plain
arrays, such as :func:`harmonize.timeseries.disagreement`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import xarray as xr
from scipy import sparse
from scipy.stats import norm

from harmonize.errors import TimeSeriesError

__all__ = [
    "gap_fill",
    "regular_time_axis",
    "METHODS",
    "TimeSeriesError",
    "fill_pixels",
    "FillParams",
    "select_lmbda",
    "whittaker_gcv",
    "GCV_LMBDAS",
    "interpolate_linear",
    "to_days",
    "as_days",
]

log = logging.getLogger(__name__)

Method = Literal["linear", "whittaker", "harmonic", "rbf"]
METHODS: tuple[str, ...] = ("linear", "whittaker", "harmonic", "rbf")
#: Candidate Whittaker lambdas of ``lmbda="gcv"`` (half decades; passbands ~8 to ~60 days).
GCV_LMBDAS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
#: Pixels sampled to choose it (:func:`select_lmbda` and ``gap_fill(lmbda="gcv")`` alike).
GCV_SAMPLE = 4096

DAY_NS = 86_400 * 10**9
# Pixels processed per vectorised batch inside one dask block: bounds the float64 temporaries
# (a handful of arrays of batch x series length) to about 32 MB each, whatever the block size.
_BATCH_MAX = 8192
_BATCH_ELEMENTS = 4_000_000




@dataclass(frozen=True)
class FillParams:
    """The settings of one fill, as :func:`gap_fill` checks and passes them to :func:`fill_pixels`.

    Attributes
    ----------
    method
        One of :data:`METHODS`.
    max_gap
        Longest bridged span between observations, in days.
    lmbda
        Whittaker smoothing parameter.
    n_harmonics, period
        Harmonic regression modes and base period in days.
    sigmas, rbf_cutoff
        RBF kernel widths in days and the kernel mass kept.
    """

    method: str
    max_gap: float
    lmbda: float
    n_harmonics: int
    period: float
    sigmas: tuple[float, ...]
    rbf_cutoff: float


# --------------------------------------------------------------------------------------------
# time axis helpers


def to_days(times: Any, origin: np.datetime64) -> np.ndarray:
    """Times as float days since ``origin``, the time unit of the numpy kernels.

    Parameters
    ----------
    times
        Anything ``numpy.asarray(..., dtype="datetime64[ns]")`` accepts.
    origin
        The time that becomes day 0.

    Returns
    -------
    numpy.ndarray
        float64 days (fractions of a day kept), same shape as ``times``.
    """
    t = np.asarray(times, dtype="datetime64[ns]")
    return (t - origin).astype("int64") / DAY_NS


def as_days(value: str | float | int | pd.Timedelta | np.timedelta64) -> float:
    """A duration as float days: a number is days already, a string or timedelta is converted.

    Parameters
    ----------
    value
        Days as a number, a pandas duration string (``"45D"``, ``"12h"``) or a timedelta.

    Returns
    -------
    float
        The duration in days.

    Raises
    ------
    TimeSeriesError
        When ``value`` cannot be read as a duration.
    """
    # np.timedelta64 subclasses np.signedinteger: test for it before taking numbers as days
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, np.timedelta64):
        return float(value)
    try:
        return pd.Timedelta(value) / pd.Timedelta("1D")
    except (ValueError, TypeError) as exc:
        raise TimeSeriesError(
            f"Cannot read {value!r} as a duration; give days as a number or a string like '45D'."
        ) from exc


#: The most steps an output time axis may have (a daily axis of 270 years).
MAX_AXIS_STEPS = 100_000


def check_axis_step(freq: Any, start: Any, end: Any) -> None:
    """Refuse an output step that is not positive or gives more than :data:`MAX_AXIS_STEPS` steps.

    Raises
    ------
    TimeSeriesError
        For ``freq="0D"`` or a negative step, or ``freq="1ns"`` over a season (which would
        allocate petabytes).
    """
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise TimeSeriesError(f"Cannot read freq={freq!r} as a time step; give e.g. '5D'.") from exc
    nanos = getattr(offset, "nanos", None)  # fixed steps (days, hours, ...); months have none
    if nanos is None:
        return
    if nanos <= 0:
        raise TimeSeriesError(f"freq={freq!r} is not a positive time step; give e.g. '5D'.")
    steps = (pd.Timestamp(end) - pd.Timestamp(start)).value / nanos
    if steps > MAX_AXIS_STEPS:
        raise TimeSeriesError(
            f"freq={freq!r} from {start} to {end} gives {steps:.3g} steps (at most {MAX_AXIS_STEPS}); "
            "give a coarser step such as '1D' or '5D'."
        )


def regular_time_axis(
    times: Any, *, freq: str = "5D", start: Any = None, end: Any = None
) -> pd.DatetimeIndex:
    """The regular output axis of :func:`gap_fill`.

    Parameters
    ----------
    times
        Observation times (anything ``numpy.datetime64`` accepts).
    freq
        pandas frequency string (``"5D"``, ``"1D"``, ``"MS"`` …).
    start, end
        Bounds of the axis; default the first and last observation day (floored to the day).

    Returns
    -------
    pandas.DatetimeIndex
    """
    t = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    if start is None:
        if len(t) == 0:
            raise TimeSeriesError("The series has no time steps; pass start and end explicitly.")
        start = t.min().floor("D")
    if end is None:
        if len(t) == 0:
            raise TimeSeriesError("The series has no time steps; pass start and end explicitly.")
        end = t.max().floor("D")
    check_axis_step(freq, start, end)
    try:
        axis = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=freq)
    except ValueError as exc:
        raise TimeSeriesError(f"Cannot build a time axis with freq={freq!r}: {exc}") from exc
    if len(axis) == 0:
        raise TimeSeriesError(
            f"The output time axis from {start} to {end} with freq={freq!r} is empty; "
            "check that start <= end."
        )
    return axis


# --------------------------------------------------------------------------------------------
# numpy kernels on (pixels, time)


def _bracketing(valid: np.ndarray, t_obs: np.ndarray, t_out: np.ndarray) -> tuple[np.ndarray, ...]:
    """Index of the last valid observation at or before, and first at or after, each output time.

    Returns ``ip, inn`` of shape ``(n, m)``, with -1 / ``T`` where there is none.
    """
    n, T = valid.shape
    idx = np.arange(T)
    prev_acc = np.maximum.accumulate(np.where(valid, idx, -1), axis=1)
    next_acc = np.minimum.accumulate(np.where(valid, idx, T)[:, ::-1], axis=1)[:, ::-1]
    kp = np.searchsorted(t_obs, t_out, side="right") - 1
    kn = np.searchsorted(t_obs, t_out, side="left")
    ip = np.where(kp >= 0, prev_acc[:, np.clip(kp, 0, T - 1)], -1)
    inn = np.where(kn < T, next_acc[:, np.clip(kn, 0, T - 1)], T)
    return ip, inn


def _gap_ok(
    ip: np.ndarray, inn: np.ndarray, t_obs: np.ndarray, t_out: np.ndarray, max_gap: float
) -> np.ndarray:
    T = t_obs.size
    has_p = ip >= 0
    has_n = inn < T
    tp = np.where(has_p, t_obs[np.clip(ip, 0, T - 1)], np.nan)
    tn = np.where(has_n, t_obs[np.clip(inn, 0, T - 1)], np.nan)
    with np.errstate(invalid="ignore"):
        inside = has_p & has_n & (tn - tp <= max_gap)
        before = ~has_p & has_n & (tn - t_out <= max_gap / 2)
        after = has_p & ~has_n & (t_out - tp <= max_gap / 2)
    return inside | before | after


def _linear(
    y: np.ndarray, t_obs: np.ndarray, t_out: np.ndarray, ip: np.ndarray, inn: np.ndarray
) -> np.ndarray:
    """Linear interpolation between the observations ``ip`` and ``inn`` of :func:`_bracketing`."""
    T = t_obs.size
    has_p = ip >= 0
    has_n = inn < T
    ipc = np.clip(ip, 0, T - 1)
    inc = np.clip(inn, 0, T - 1)
    yp = np.take_along_axis(y, ipc, axis=1)
    yn = np.take_along_axis(y, inc, axis=1)
    tp = t_obs[ipc]
    tn = t_obs[inc]
    span = tn - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(span > 0, (t_out - tp) / np.where(span > 0, span, 1.0), 0.0)
    out = yp + w * (yn - yp)
    # Before the first / after the last observation hold the nearest value (max_gap masks later).
    out = np.where(has_p & ~has_n, yp, out)
    out = np.where(~has_p & has_n, yn, out)
    return np.where(has_p | has_n, out, np.nan)


def interpolate_linear(
    values: np.ndarray, valid: np.ndarray, t_obs: np.ndarray, t_out: np.ndarray, *, max_gap: float
) -> np.ndarray:
    """Interpolate many series linearly in time, leaving NaN across gaps wider than ``max_gap``.

    The ``linear`` method of :func:`gap_fill` as a numpy kernel: each output time takes the
    line between the last valid observation at or before it and the first at or after it
    (the nearest one before the first / after the last observation), and is NaN where those
    lie more than ``max_gap`` days apart (``max_gap / 2`` from the nearest one at the ends).

    Parameters
    ----------
    values
        ``(n_series, n_obs)`` observations.
    valid
        ``(n_series, n_obs)`` bool: the observations that may be used.
    t_obs
        ``(n_obs,)`` observation times in days, sorted (:func:`to_days`).
    t_out
        ``(n_out,)`` output times in days, on the same origin.
    max_gap
        Longest span between valid observations that is bridged, in days.

    Returns
    -------
    numpy.ndarray
        float64 ``(n_series, n_out)``.
    """
    y = np.asarray(values, dtype=np.float64)
    ip, inn = _bracketing(valid, t_obs, t_out)
    interp = _linear(y, t_obs, t_out, ip, inn)
    return np.where(_gap_ok(ip, inn, t_obs, t_out, max_gap), interp, np.nan)


def _second_difference_bands(length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diagonal, first and second off-diagonals of ``D2' D2`` for a series of ``length``."""
    d2 = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(length - 2, length))
    p = (d2.T @ d2).todia()
    return p.diagonal(0), p.diagonal(1), p.diagonal(2)


def _pentadiagonal_factor(
    diag: np.ndarray, off1: np.ndarray, off2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Banded Cholesky ``A = C C'`` of many symmetric positive-definite pentadiagonal systems.

    ``diag`` is ``(L, n)``, one system per column (rows contiguous, so each step of the loop
    over ``L`` is a vector operation over ``n``); ``off1`` (``L-1``) and ``off2`` (``L-2``) are
    shared by all systems. Returns ``C[i, i]``, ``C[i, i-1]``, ``C[i, i-2]`` as ``(L, n)``
    arrays; ``diag`` is overwritten (it becomes ``C[i, i]``).
    """
    L, n = diag.shape
    l0 = diag  # becomes C[i, i]
    l1 = np.zeros((L, n))  # C[i, i-1]
    l2 = np.zeros((L, n))  # C[i, i-2]
    for i in range(L):
        if i >= 2:
            np.divide(off2[i - 2], l0[i - 2], out=l2[i])
            l0[i] -= l2[i] * l2[i]
        if i >= 1:
            if i >= 2:
                np.multiply(l2[i], l1[i - 1], out=l1[i])
                np.subtract(off1[i - 1], l1[i], out=l1[i])
                l1[i] /= l0[i - 1]
            else:
                np.divide(off1[0], l0[0], out=l1[1])
            l0[i] -= l1[i] * l1[i]
        np.sqrt(l0[i], out=l0[i])
    return l0, l1, l2


def _pentadiagonal_factored_solve(
    l0: np.ndarray, l1: np.ndarray, l2: np.ndarray, rhs: np.ndarray
) -> np.ndarray:
    """Solve ``C C' x = rhs`` with the factor of :func:`_pentadiagonal_factor` (``rhs`` overwritten)."""
    L = l0.shape[0]
    x = rhs
    for i in range(L):
        if i >= 1:
            x[i] -= l1[i] * x[i - 1]
        if i >= 2:
            x[i] -= l2[i] * x[i - 2]
        x[i] /= l0[i]
    for i in range(L - 1, -1, -1):
        if i + 1 < L:
            x[i] -= l1[i + 1] * x[i + 1]
        if i + 2 < L:
            x[i] -= l2[i + 2] * x[i + 2]
        x[i] /= l0[i]
    return x


def _pentadiagonal_cholesky_solve(
    diag: np.ndarray, off1: np.ndarray, off2: np.ndarray, rhs: np.ndarray
) -> np.ndarray:
    """Solve ``A x = rhs`` for many pentadiagonal SPD systems at once (``diag``, ``rhs`` ``(L, n)``,
    both overwritten); the solution is returned as ``(L, n)``."""
    return _pentadiagonal_factored_solve(*_pentadiagonal_factor(diag, off1, off2), rhs)


def _inverse_diagonal(l0: np.ndarray, l1: np.ndarray, l2: np.ndarray) -> np.ndarray:
    """Diagonal of ``A^-1`` from the banded Cholesky factor of ``A`` (Takahashi's recursion).

    With ``A = L D L'`` (unit lower ``L``), ``S = A^-1`` satisfies, from the last row back,
    ``S[i, j] = -sum_k L[k, i] S[k, j]`` (``j > i``) and ``S[i, i] = 1 / D[i] - sum_k L[k, i]
    S[k, i]``; for a pentadiagonal ``A`` only ``S[i, i]``, ``S[i, i+1]``, ``S[i, i+2]`` are
    needed. ``O(L n)``, vectorised over the ``n`` columns like the solve.
    """
    L, n = l0.shape
    s0 = np.zeros((L + 2, n))
    s1 = np.zeros((L + 2, n))
    a = np.zeros(n)
    b = np.zeros(n)
    for i in range(L - 1, -1, -1):
        if i + 1 < L:
            np.divide(l1[i + 1], l0[i], out=a)
        else:
            a[:] = 0.0
        if i + 2 < L:
            np.divide(l2[i + 2], l0[i], out=b)
        else:
            b[:] = 0.0
        s_i1 = -(a * s0[i + 1] + b * s1[i + 1])  # S[i, i+1]
        s_i2 = -(a * s1[i + 1] + b * s0[i + 2])  # S[i, i+2]
        s1[i] = s_i1
        s0[i] = 1.0 / (l0[i] * l0[i]) - (a * s_i1 + b * s_i2)
    return s0[:L]


def _daily_sums(
    y: np.ndarray, wts: np.ndarray, t_obs: np.ndarray, t0: float, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Summed weight ``w`` and weighted sum ``b`` of the observations of each day, ``(L, n)``."""
    day = np.rint(t_obs - t0).astype(int)  # sorted, as t_obs is
    # (L, n) layout: one column per pixel. Observations of one day add up (fused sensors): a
    # segment sum over the sorted days, O(T n) rather than a one-hot product.
    days, first = np.unique(day, return_index=True)
    w = np.zeros((length, y.shape[0]))
    b = np.zeros((length, y.shape[0]))
    wy = np.where(wts > 0, wts * y, 0.0)
    if days.size == day.size:  # no same-day pair: a plain scatter
        w[days] = wts.T
        b[days] = wy.T
    else:
        w[days] = np.add.reduceat(wts, first, axis=1).T
        b[days] = np.add.reduceat(wy, first, axis=1).T
    return w, b


def whittaker_gcv(
    values: np.ndarray,
    t_obs: np.ndarray,
    lmbdas: Sequence[float],
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generalized cross-validation terms of the Whittaker smoother for several ``lmbda``.

    Parameters
    ----------
    values
        ``(n_pixels, n_times)`` observations, NaN where missing.
    t_obs
        Observation times in days, sorted.
    lmbdas
        Candidate smoothing parameters.
    weights
        Observation weights broadcastable to ``values`` (as :func:`gap_fill`).

    Returns
    -------
    rss, trace, m : numpy.ndarray
        ``(n_pixels, n_lmbdas)`` weighted residual sum of squares over observed days and trace
        of the hat matrix (effective degrees of freedom), and ``(n_pixels,)`` the effective
        number of observations, ``(sum w)^2 / sum w^2`` (Kish; the count for equal weights).
        Per pixel ``GCV = m rss / (m - trace)^2``; :func:`select_lmbda` pools them.
    """
    y = np.asarray(values, dtype=np.float64)
    wts = np.isfinite(y).astype(np.float64)
    if weights is not None:
        wb = np.broadcast_to(np.asarray(weights, dtype=np.float64), y.shape)
        wts = np.where(np.isfinite(wb) & (wb > 0), wb, 0.0) * wts
    t0 = np.floor(t_obs.min())
    length = max(int(np.ceil(t_obs.max()) - t0) + 1, 3)
    w, b = _daily_sums(y, wts, t_obs, t0, length)
    seen = w > 0
    ybar = np.divide(b, w, out=np.zeros_like(b), where=seen)
    # Kish's effective number of observations, (sum w)^2 / sum w^2: the count for equal
    # weights, but an observation weighted near zero (a blurred Landsat pixel at a field edge)
    # adds near nothing. Counting it whole let every down-weighted observation lower the GCV
    # of a rougher fit, so fused series were smoothed far less than Sentinel-2 alone.
    sw, sw2 = wts.sum(axis=1), (wts * wts).sum(axis=1)
    m = np.divide(sw * sw, sw2, out=np.zeros_like(sw), where=sw2 > 0)
    p0, p1, p2 = _second_difference_bands(length)
    rss = np.empty((y.shape[0], len(lmbdas)))
    trace = np.empty_like(rss)
    for k, lam in enumerate(lmbdas):
        factor = _pentadiagonal_factor(w + lam * p0[:, None], lam * p1, lam * p2)
        z = _pentadiagonal_factored_solve(*factor, b.copy())
        rss[:, k] = (w * (ybar - z) ** 2).sum(axis=0)
        trace[:, k] = (w * _inverse_diagonal(*factor)).sum(axis=0)
    return rss, trace, m


def _gcv_sample(
    obj: xr.DataArray,
    wts: xr.DataArray | None,
    sample: int,
    max_chunks: int = 4,
    groups: xr.DataArray | None = None,
) -> tuple[Any, ...]:
    """Up to ``sample`` pixels of ``obj`` (time sorted) and their weights as ``(time, pixels)``
    arrays, lazy if the input is, and the observation days.

    In memory the pixels lie on a regular grid over the whole extent. A dask-backed input is
    sampled on a regular grid inside at most ``max_chunks`` of its spatial chunks, spread over
    the extent: a strided pass over every chunk would make the lambda depend on every input
    chunk, so that a lazy fill could start no block before the whole input had been read, and
    would have to hold it all in memory meanwhile. With ``groups`` (``(space)`` labels), their
    values at the sampled pixels come fourth.
    """
    space = [d for d in obj.dims if d != "time"]
    t = np.asarray(obj["time"].values, dtype="datetime64[ns]")
    if wts is not None:
        wts = xr.broadcast(wts, obj.drop_vars(list(obj.coords)))[0].transpose(*obj.dims)
    if obj.chunks is None or not space:
        regions = [{}]
    else:
        spans = [np.cumsum((0, *obj.chunksizes[d])) for d in space]
        blocks = list(np.ndindex(*[len(sp) - 1 for sp in spans]))
        pick = np.unique(np.linspace(0, len(blocks) - 1, min(max_chunks, len(blocks))).round().astype(int))
        regions = [
            {d: slice(int(sp[k]), int(sp[k + 1])) for d, sp, k in zip(space, spans, blocks[i], strict=True)}
            for i in pick
        ]
    concat = np.concatenate if obj.chunks is None else dsa.concatenate
    if groups is not None:
        groups = groups.drop_vars(list(groups.coords)).transpose(*space)
        if obj.chunks is not None:
            groups = groups.chunk({d: obj.chunksizes[d] for d in space})
    values, weights, labels = [], [], []
    for region in regions:
        part = obj.isel(region)
        n_pix = int(np.prod([part.sizes[d] for d in space])) if space else 1
        per = max(1, sample // len(regions))
        step = max(1, int(np.ceil((n_pix / per) ** (1 / max(len(space), 1)))))
        grid = {d: slice(step // 2, None, step) for d in space}
        values.append(part.isel(grid).transpose("time", *space).data.reshape(t.size, -1))
        if wts is not None:
            w_part = wts.isel(region).isel(grid).data.reshape(t.size, -1)
            weights.append(w_part if obj.chunks is None else dsa.asarray(w_part))
        if groups is not None:
            g_part = groups.isel(region).isel(grid).data.reshape(-1)
            labels.append(g_part if obj.chunks is None else dsa.asarray(g_part))
    vals = concat(values, axis=1)
    w = concat(weights, axis=1) if weights else None
    if groups is None:
        return vals, w, to_days(t, t[0])
    return vals, w, to_days(t, t[0]), concat(labels, axis=0)


def _gcv_best(
    values: np.ndarray, weights: np.ndarray | None, t_obs: np.ndarray, lmbdas: Sequence[float]
) -> float:
    """The candidate of least pooled GCV for sampled ``(time, pixels...)`` values."""
    values = np.asarray(values, dtype=np.float64)
    y = values.reshape(values.shape[0], -1).T
    w = None if weights is None else np.asarray(weights, np.float64).reshape(values.shape[0], -1).T
    rss, trace, m = whittaker_gcv(y, t_obs, lmbdas, w)
    ok = m >= 4
    if not ok.any():
        log.warning("select_lmbda: no sampled pixel has 4 observed days; keeping lmbda=1000")
        return 1000.0
    gcv = _pooled_gcv(rss, trace, m, ok)
    best = _least(gcv, lmbdas)
    log.info("select_lmbda: GCV %s -> lmbda=%g", np.round(gcv, 8).tolist(), best)
    return best


def _pooled_gcv(rss: np.ndarray, trace: np.ndarray, m: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Pooled GCV per candidate, ``M * sum(rss) / (M - sum(trace))^2`` over the pixels ``sel``,
    +inf where the fit spends as many degrees of freedom as there are effective observations
    (``M <= sum(trace)``).

    ``M`` counts observations by Kish's effective number, which adds little for an observation
    of small weight, while the trace counts every observed day the fit can follow: with little
    smoothing, a pixel seen on few dates by a trusted sensor and on many by a down-weighted
    one (a cloudy season's field edge) has a trace above its effective count. The denominator
    then passes through zero and comes back positive, and the formula's value at the smallest
    lambdas is meaningless but small: on a cloudy world it chose lambda 1 for field edges.
    """
    big_m = m[sel].sum()
    resid = big_m - trace[sel].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        gcv = big_m * rss[sel].sum(axis=0) / resid**2
    return np.where(resid > 0, gcv, np.inf)


def _least(gcv: np.ndarray, lmbdas: Sequence[float]) -> float:
    """The candidate of least GCV; the largest candidate when none has a finite value."""
    finite = np.isfinite(gcv)
    if not finite.any():
        return float(max(lmbdas))
    return float(lmbdas[int(np.argmin(np.where(finite, gcv, np.inf)))])


#: Fewest sampled pixels (with 4 observed days) a group needs for a lambda of its own.
GCV_GROUP_MIN = 64


def _gcv_best_groups(
    values: np.ndarray,
    weights: np.ndarray | None,
    t_obs: np.ndarray,
    labels: np.ndarray,
    lmbdas: Sequence[float],
    n_groups: int,
) -> np.ndarray:
    """One GCV choice per group label ``0 .. n_groups-1`` of the sampled pixels (``(n_groups,)``).

    A group with fewer than :data:`GCV_GROUP_MIN` sampled pixels of 4 observed days takes the
    choice pooled over all sampled pixels.
    """
    values = np.asarray(values, dtype=np.float64)
    y = values.reshape(values.shape[0], -1).T
    w = None if weights is None else np.asarray(weights, np.float64).reshape(values.shape[0], -1).T
    lab = np.asarray(labels).reshape(-1)
    rss, trace, m = whittaker_gcv(y, t_obs, lmbdas, w)
    ok = m >= 4

    def best(sel: np.ndarray) -> float:
        return _least(_pooled_gcv(rss, trace, m, sel), lmbdas)

    if not ok.any():
        log.warning("select_lmbda: no sampled pixel has 4 observed days; keeping lmbda=1000")
        return np.full(n_groups, 1000.0)
    pooled = best(ok)
    out = np.full(n_groups, pooled)
    for g in range(n_groups):
        sel = ok & (lab == g)
        if sel.sum() >= GCV_GROUP_MIN:
            out[g] = best(sel)
    # Groups are ordered by noise (lmbda_split: True = the noisier pixels): a later group is never
    # smoothed less than an earlier one, a guard (GCV undersmooths errors that persist from date to
    # date). The lambda 1 a cloudy world once got for its edges came from _pooled_gcv's denominator
    # passing through zero; with that excluded the guard binds on neither world measured.
    out = np.maximum.accumulate(out)
    log.info("select_lmbda: per group %s (pooled %g)", out.tolist(), pooled)
    return out


def _lmbda_map(groups: xr.DataArray, lams: Any) -> xr.DataArray:
    """Per pixel the lambda of its group (lazy if ``groups`` or ``lams`` is)."""
    g = groups.drop_vars(list(groups.coords))
    if g.chunks is None and not dask.is_dask_collection(lams):
        return g.copy(data=np.asarray(lams)[np.asarray(g.values)])
    data = g.data if g.chunks is not None else dsa.from_array(g.values, chunks=-1)
    arr = dsa.map_blocks(_take_lmbda, data, lams, dtype=np.float64)
    return g.copy(data=arr)


def _take_lmbda(g: np.ndarray, lams: np.ndarray) -> np.ndarray:
    return np.asarray(lams, dtype=np.float64)[np.asarray(g)]


def _gcv_best_array(*args: Any) -> np.ndarray:
    """:func:`_gcv_best` as a 0-d array (a dask array's block must be an ndarray)."""
    return np.asarray(_gcv_best(*args), dtype=np.float64)


def select_lmbda(
    obj: xr.DataArray,
    *,
    weights: xr.DataArray | Mapping[str, float] | None = None,
    lmbdas: Sequence[float] = GCV_LMBDAS,
    sample: int = GCV_SAMPLE,
) -> float:
    """The Whittaker ``lmbda`` of least generalized cross-validation error for one input.

    The GCV of the joint smoother of a regular sample of pixels (one ``lmbda`` for all),
    ``M * sum(rss) / (M - sum(trace))^2`` with ``M`` the observed pixel-days, is minimised over
    ``lmbdas`` (:func:`whittaker_gcv`). Pooling lets fields, water and edges all count, and
    gives one smoother for the whole series (no seams between chunks).

    Parameters
    ----------
    obj
        Observations ``(time, y, x)`` as given to :func:`gap_fill`.
    weights
        As :func:`gap_fill`'s ``weights``.
    lmbdas
        Candidates (default :data:`GCV_LMBDAS`).
    sample
        At most this many pixels: on a regular grid over the whole extent for an in-memory
        input, inside at most 4 spatial chunks spread over the extent for a dask-backed one
        (so that only those chunks are read).

    Returns
    -------
    float
        The chosen ``lmbda``. This computes: it reads the sampled pixels (memory is that of the
        sample). ``gap_fill(lmbda="gcv")`` makes the same choice lazily, inside its graph.
    """
    if "time" not in obj.dims:
        raise TimeSeriesError(f"select_lmbda needs a 'time' dimension; the input has {tuple(obj.dims)}.")
    order = np.argsort(np.asarray(obj["time"].values, dtype="datetime64[ns]"), kind="stable")
    wts = _resolve_weights(obj, weights, order)
    values, w, t_obs = _gcv_sample(obj.isel(time=order), wts, sample)
    values, w = dask.compute(values, w)
    return _gcv_best(values, w, t_obs, lmbdas)


def _whittaker(
    y: np.ndarray, wts: np.ndarray, t_obs: np.ndarray, t_out: np.ndarray, lmbda: float | np.ndarray
) -> np.ndarray:
    """Whittaker fill of ``(n, T)`` series; ``lmbda`` one value or one per series (``(n,)``)."""
    # Daily grid covering observations and output; observations snap to their nearest day.
    t0 = np.floor(min(t_obs.min(), t_out.min()))
    t1 = np.ceil(max(t_obs.max(), t_out.max()))
    length = int(t1 - t0) + 1
    if length < 3:
        valid = wts > 0
        return _linear(y, t_obs, t_out, *_bracketing(valid, t_obs, t_out))
    w, b = _daily_sums(y, wts, t_obs, t0, length)  # (L, n): one column per pixel
    n_days = (w > 0).sum(axis=0)
    # Fewer than two observed days leaves the smoother singular: fit a constant instead
    # (mean of what is there; an unobserved pixel is masked later by the gap rule).
    few = n_days < 2
    if few.any():
        cnt = w[:, few].sum(0)
        mean = np.where(cnt > 0, b[:, few].sum(0) / np.where(cnt > 0, cnt, 1.0), 0.0)
        w[:, few] = 1.0
        b[:, few] = mean[None, :]
    p0, p1, p2 = _second_difference_bands(length)
    lam = np.asarray(lmbda, dtype=np.float64)
    if lam.ndim:  # one lambda per pixel: the off-diagonals differ per column too
        w += p0[:, None] * lam[None, :]
        off1, off2 = p1[:, None] * lam[None, :], p2[:, None] * lam[None, :]
    else:
        w += lam * p0[:, None]
        off1, off2 = lam * p1, lam * p2
    z = _pentadiagonal_cholesky_solve(w, off1, off2, b)
    # Sample the daily solution at the output times (linear between days).
    pos = np.clip(t_out - t0, 0, length - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, length - 2)
    frac = (pos - i0)[:, None]
    out = z[i0] * (1 - frac) + z[i0 + 1] * frac  # (m, n)
    return out.T


def _harmonic(
    y: np.ndarray, wts: np.ndarray, t_obs: np.ndarray, t_out: np.ndarray, n_harmonics: int, period: float
) -> np.ndarray:
    def design(t: np.ndarray) -> np.ndarray:
        cols = [np.ones_like(t)]
        for k in range(1, n_harmonics + 1):
            ang = 2 * np.pi * k * t / period
            cols += [np.cos(ang), np.sin(ang)]
        return np.stack(cols, axis=-1)

    x_obs = design(t_obs)  # (T, p)
    p = x_obs.shape[1]
    gram = (wts @ (x_obs[:, :, None] * x_obs[:, None, :]).reshape(t_obs.size, p * p)).reshape(-1, p, p)
    rhs = np.where(wts > 0, wts * y, 0.0) @ x_obs
    enough = (wts > 0).sum(axis=1) >= p
    # Tiny ridge keeps nearly collinear designs (observations bunched in time) solvable.
    scale = np.maximum(np.trace(gram, axis1=1, axis2=2) / p, 1.0)
    gram = gram + 1e-9 * scale[:, None, None] * np.eye(p)
    gram[~enough] = np.eye(p)
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    out = coef @ design(t_out).T
    out[~enough] = np.nan
    return out


def _rbf(
    y: np.ndarray,
    wts: np.ndarray,
    t_obs: np.ndarray,
    t_out: np.ndarray,
    sigmas: Sequence[float],
    cutoff: float,
) -> np.ndarray:
    half_width = norm.ppf(0.5 + cutoff / 2)
    dt = t_out[:, None] - t_obs[None, :]  # (m, T)
    v = wts
    y0 = np.where(wts > 0, wts * y, 0.0)
    num = np.zeros((y.shape[0], t_out.size))
    den = np.zeros_like(num)
    for s in sigmas:
        k = np.exp(-0.5 * (dt / s) ** 2) * (np.abs(dt) <= half_width * s)
        kw = v @ k.T  # kernel mass of the observations under it
        est = np.divide(y0 @ k.T, kw, out=np.zeros_like(kw), where=kw > 0)
        # Weight (as FORCE): the share of the kernel's weight over all acquisitions that falls
        # on clear ones (scaled by their observation weights), so a kernel whose window is
        # mostly cloudy, empty or down-weighted counts for little.
        total = k.sum(axis=1)
        avail = np.divide(kw, total[None, :], out=np.zeros_like(kw), where=total[None, :] > 0)
        num += avail * est
        den += avail
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def fill_pixels(
    values: np.ndarray,
    t_obs: np.ndarray,
    t_out: np.ndarray,
    params: FillParams,
    weights: np.ndarray | None = None,
    lmbda: np.ndarray | None = None,
) -> np.ndarray:
    """Fill many pixels' series observed at ``t_obs`` onto the output times ``t_out``.

    The numpy kernel behind :func:`gap_fill` (one call per batch of pixels of a block).

    Parameters
    ----------
    values
        ``(n_pixels, n_times)`` observations, NaN where missing.
    t_obs
        ``(n_times,)`` observation times in days, sorted (:func:`to_days`).
    t_out
        Output times in days, on the same origin.
    params
        Method and its settings.
    weights
        Broadcastable to ``values``: each observation's influence (NaN, negative and zero mean
        "not used").
    lmbda
        ``(n_pixels,)`` Whittaker lambdas, one per pixel, instead of ``params.lmbda``.

    Returns
    -------
    numpy.ndarray
        float32 ``(n_pixels, len(t_out))``, NaN where the gap rule of ``params.max_gap`` leaves
        a step unfilled.
    """
    y = values.astype(np.float64)
    wts = np.isfinite(y).astype(np.float64)
    if weights is not None:
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), y.shape)
        wts = np.where(np.isfinite(w) & (w > 0), w, 0.0) * wts
    valid = wts > 0
    ip, inn = _bracketing(valid, t_obs, t_out)
    ok = _gap_ok(ip, inn, t_obs, t_out, params.max_gap)
    if params.method == "linear":
        out = _linear(y, t_obs, t_out, ip, inn)
    elif params.method == "whittaker":
        out = _whittaker(y, wts, t_obs, t_out, params.lmbda if lmbda is None else lmbda)
    elif params.method == "harmonic":
        out = _harmonic(y, wts, t_obs, t_out, params.n_harmonics, params.period)
    else:
        out = _rbf(y, wts, t_obs, t_out, params.sigmas, params.rbf_cutoff)
    return np.where(ok, out, np.nan).astype(np.float32)


def _fill_block(
    block: np.ndarray,
    *extra: np.ndarray,
    t_obs: np.ndarray,
    t_out: np.ndarray,
    params: FillParams,
    weighted: bool = False,
) -> np.ndarray:
    # extra: the weights block if ``weighted``, then the lmbda chosen in the graph if any: 0-d
    # (one for all) or one per pixel of the block (chosen per group of pixels)
    weights = extra[0] if weighted else None
    lam_px = None
    if len(extra) > int(weighted):
        lam = np.asarray(extra[-1], dtype=np.float64)
        if lam.ndim == 0:
            params = dataclasses.replace(params, lmbda=float(lam))
        else:
            lam_px = np.broadcast_to(lam, block.shape[:-1]).reshape(-1)
    lead = block.shape[:-1]
    flat = block.reshape(-1, block.shape[-1])
    wflat = None
    if weights is not None:
        wflat = np.broadcast_to(weights, block.shape).reshape(flat.shape)
    out = np.empty((flat.shape[0], t_out.size), dtype=np.float32)
    length = max(t_obs.size, t_out.size)
    if params.method == "whittaker":  # the daily grid spans observations and output
        length = max(length, int(max(t_obs.max(), t_out.max()) - min(t_obs.min(), t_out.min())) + 1)
    batch = int(np.clip(_BATCH_ELEMENTS // max(length, 1), 256, _BATCH_MAX))
    for s in range(0, flat.shape[0], batch):
        w = None if wflat is None else wflat[s : s + batch]
        lam_b = None if lam_px is None else lam_px[s : s + batch]
        out[s : s + batch] = fill_pixels(flat[s : s + batch], t_obs, t_out, params, w, lam_b)
    return out.reshape(*lead, t_out.size)


# --------------------------------------------------------------------------------------------
# xarray front


def _time_whole(da: xr.DataArray) -> xr.DataArray:
    if da.chunks is None:
        return da
    if len(da.data.chunks[da.get_axis_num("time")]) <= 1:  # the data's own chunks, not coords'
        return da
    spatial = {d: "auto" for d in da.dims if d != "time"}
    return da.chunk({"time": -1, **spatial})


def _fill_dataarray(
    da: xr.DataArray,
    t_obs: np.ndarray,
    t_out: np.ndarray,
    axis: pd.DatetimeIndex,
    params: FillParams,
    weights: xr.DataArray | None = None,
    lmbda: Any = None,
) -> xr.DataArray:
    """Fill one variable; ``lmbda`` (a 0-d array, or a DataArray of one lambda per pixel on the
    variable's spatial dims) overrides ``params.lmbda`` in the graph."""
    dims = da.dims
    da = _time_whole(da.astype(np.float32))
    time_coords = [c for c, v in da.coords.items() if "time" in v.dims]
    da = da.drop_vars(time_coords)
    args = [da]
    core = [["time"]]
    if weights is not None:
        if da.chunks is not None and weights.chunks is None and weights.ndim > 1:
            weights = weights.chunk({d: da.chunksizes[d] for d in weights.dims})
        elif da.chunks is not None and weights.chunks is not None:
            weights = weights.chunk({d: da.chunksizes[d] for d in weights.dims})
        args.append(weights)
        core.append(["time"])
    if lmbda is not None:
        if isinstance(lmbda, xr.DataArray):
            space = [d for d in da.dims if d in lmbda.dims]
            lmbda = lmbda.drop_vars(list(lmbda.coords)).transpose(*space)
            if da.chunks is not None:
                lmbda = lmbda.chunk({d: da.chunksizes[d] for d in space})
            args.append(lmbda)
        else:
            args.append(xr.DataArray(lmbda))
        core.append([])
    out = xr.apply_ufunc(
        _fill_block,
        *args,
        input_core_dims=core,
        output_core_dims=[["_time_out"]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"_time_out": t_out.size}},
        kwargs={"t_obs": t_obs, "t_out": t_out, "params": params, "weighted": weights is not None},
        keep_attrs=True,
        join="exact",
    )
    out = out.rename({"_time_out": "time"}).assign_coords(time=axis).transpose(*dims)
    return out


def _sensor_weights(obj: xr.DataArray | xr.Dataset, mapping: Mapping[str, float]) -> np.ndarray:
    """One weight per time step from the ``sensor`` coordinate (``"a+b"`` takes the larger)."""
    if "sensor" not in obj.coords:
        raise TimeSeriesError(
            "weights given per sensor need a 'sensor' coordinate on time (as fuse() writes); "
            "pass a weights DataArray instead."
        )
    sensors = np.asarray(obj["sensor"].values).astype(object).astype(str)
    out = np.empty(sensors.size)
    for i, label in enumerate(sensors):
        parts = label.split("+")
        missing = [p for p in parts if p not in mapping]
        if missing:
            raise TimeSeriesError(
                f"No weight for sensor {missing[0]!r}; the mapping names {sorted(mapping)} "
                f"but the series holds {sorted(set(sensors))}."
            )
        out[i] = max(float(mapping[p]) for p in parts)
    if not np.all(np.isfinite(out)) or (out < 0).any():
        raise TimeSeriesError(f"Sensor weights must be finite and >= 0; got {dict(mapping)}.")
    return out


def _resolve_weights(
    obj: xr.DataArray | xr.Dataset, weights: xr.DataArray | Mapping[str, float] | None, order: np.ndarray
) -> xr.DataArray | None:
    """Weights as a ``(time[, y, x])`` DataArray aligned by position with ``obj.isel(time=order)``."""
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        return xr.DataArray(_sensor_weights(obj, weights)[order], dims=("time",))
    if not isinstance(weights, xr.DataArray):
        raise TimeSeriesError(
            "weights must be an xarray.DataArray or a mapping sensor -> weight, "
            f"not {type(weights).__name__}."
        )
    extra = [d for d in weights.dims if d not in obj.dims]
    if extra:
        raise TimeSeriesError(
            f"weights have dimensions {extra} the series lacks; give them dims among {tuple(obj.dims)}."
        )
    for d in weights.dims:
        if weights.sizes[d] != obj.sizes[d]:
            raise TimeSeriesError(
                f"weights have {weights.sizes[d]} steps along {d!r}, the series {obj.sizes[d]}; "
                "build them on the series' own axes."
            )
    weights = weights.drop_vars(list(weights.coords)).astype(np.float64)
    if "time" not in weights.dims:
        weights = weights.expand_dims(time=obj.sizes["time"])
    else:
        weights = weights.isel(time=order)
    keep = [d for d in obj.dims if d in weights.dims]
    return weights.transpose(*keep)


def gap_fill(
    obj: xr.DataArray | xr.Dataset,
    *,
    method: Method = "linear",
    freq: str = "5D",
    max_gap: str | float | pd.Timedelta = "45D",
    start: Any = None,
    end: Any = None,
    lmbda: float | Literal["gcv"] = 1000.0,
    n_harmonics: int = 3,
    period: float = 365.25,
    sigmas: Sequence[float] = (8.0, 16.0, 32.0),
    rbf_cutoff: float = 0.95,
    weights: xr.DataArray | Mapping[str, float] | None = None,
    lmbda_split: xr.DataArray | None = None,
) -> xr.DataArray | xr.Dataset:
    """Fill a cloud-gapped cube onto a regular time axis, pixel by pixel.

    Parameters
    ----------
    obj
        A DataArray (e.g. NDVI) or a Dataset of bands with a ``time`` dimension, NaN where there
        is no clear observation. A Dataset's boolean ``clear`` variable, if present, masks every
        band first and is then dropped. Same-day duplicates (fused sensors) are allowed.
    method
        ``"linear"``, ``"whittaker"``, ``"harmonic"`` or ``"rbf"`` (see the module docstring).
    freq
        Step of the output axis (pandas frequency, default ``"5D"``).
    max_gap
        Longest span between clear observations that is bridged (``"45D"`` or days as a
        number); beyond the first / last observation, half of it.
    start, end
        Output axis bounds (default: first and last observation day). All observations are used,
        also those outside ``[start, end]``.
    lmbda
        Whittaker smoothing parameter on a daily grid. The smoother passes periods longer than
        about ``2 pi lmbda**0.25`` days (about 35 d for 1000, 15 d for 30). ``"gcv"`` chooses it
        for this input by generalized cross-validation (:func:`select_lmbda`, each variable of
        a Dataset separately). On a dask-backed input the choice is a task of the graph, made
        from a regular sample of pixels when the result is computed, so nothing is read here.
        Whittaker results carry the value used as a 0-d coordinate, ``gap_fill_lmbda``
        (``gap_fill_lmbda_<variable>`` in a Dataset; lazy until computed), and in
        ``attrs["gap_fill_lmbda"]`` (``"gcv"`` while the choice is still lazy).
    n_harmonics, period
        Harmonic regression modes and the base period in days.
    sigmas, rbf_cutoff
        RBF kernel widths in days and the kernel mass kept (0.95 truncates at +-1.96 sigma).
    weights
        Relative confidence of each observation: a DataArray whose dims are among the input's
        ``(time, y, x)`` and whose sizes match (aligned by position, in the input's order
        before sorting), or a mapping ``{sensor: weight}`` read through the ``sensor``
        coordinate (a same-day combined label ``"a+b"`` takes the larger weight). NaN or values
        <= 0 mean "do not use". ``whittaker`` minimises ``sum w (y - z)^2 + lmbda |D2 z|^2``,
        ``harmonic`` solves weighted least squares, ``rbf`` uses weighted kernel sums (and
        weighted data availability); ``linear`` ignores the values and only drops observations
        of weight 0. Observations of weight 0 do not count for ``max_gap`` or ``n_obs``. Only
        relative values matter for ``harmonic`` and ``rbf``; for ``whittaker`` they scale
        against ``lmbda`` (weights of 1 are the unweighted smoother). Default: all 1.
    lmbda_split
        With ``method="whittaker"`` and ``lmbda="gcv"``: a boolean map on the input's spatial
        dims splitting the pixels into two groups (e.g. parcel interiors and edges, whose
        series need different smoothing: an edge pixel's error is larger and steadier), each
        given its own GCV choice (the pooled one where a group has too few sampled pixels);
        True marks the noisier group, which is never smoothed less than the other (GCV
        undersmooths errors that persist from date to date).
        The result's ``gap_fill_lmbda`` coordinate is then the lambda of each pixel
        (``(y, x)``, lazy until computed). Ignored otherwise.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Same type as ``obj``: float32 on the regular ``time`` axis, other coordinates (CRS
        included) kept, time-indexed coordinates (``sensor``, ``platform``) dropped. ``n_obs``
        (int32, ``(y, x)``), the number of clear observations per pixel, is a coordinate of a
        DataArray result and a data variable of a Dataset result (observations where every
        filled band is finite). Lazy when the input is dask-backed: time is rechunked into one
        chunk and each spatial block is filled independently.

    Raises
    ------
    TimeSeriesError
        Unknown method, no ``time`` dimension, empty axis, unreadable ``max_gap``.
    """
    params = _checked_params(
        obj,
        method=method,
        max_gap=max_gap,
        lmbda=lmbda,
        n_harmonics=n_harmonics,
        period=period,
        sigmas=sigmas,
        rbf_cutoff=rbf_cutoff,
    )
    order = np.argsort(np.asarray(obj["time"].values, dtype="datetime64[ns]"), kind="stable")
    wts = _resolve_weights(obj, weights, order)
    obj = obj.isel(time=order)
    axis = regular_time_axis(obj["time"].values, freq=freq, start=start, end=end)
    origin = np.datetime64(axis[0].to_datetime64(), "ns")
    gcv = isinstance(lmbda, str) and method == "whittaker"
    job = _FillJob(
        t_obs=to_days(obj["time"].values, origin),
        t_out=to_days(axis.values, origin),
        axis=axis,
        params=params,
        weights=wts,
        gcv=gcv,
        groups=_split_groups(obj, lmbda_split) if gcv and lmbda_split is not None else None,
        n_groups=2,
    )
    log.debug("gap_fill %s: %d observations -> %d steps", method, job.t_obs.size, job.t_out.size)
    attrs = {"gap_fill_method": method, "gap_fill_freq": freq, "gap_fill_max_gap_days": params.max_gap}
    if wts is not None:
        attrs["gap_fill_weighted"] = 1
    if isinstance(obj, xr.DataArray):
        n_obs = _n_obs(job, obj.notnull())
        out = _fill_variable(job, obj, attrs, lmbda_coord="gap_fill_lmbda")
        return out.assign_coords(n_obs=n_obs)
    return _fill_dataset(job, obj, attrs)


def _split_groups(obj: xr.DataArray | xr.Dataset, split: xr.DataArray) -> xr.DataArray:
    """``split`` as int labels 0 (False) / 1 (True), checked against ``obj``'s spatial dims."""
    if not isinstance(split, xr.DataArray) or split.dtype != bool:
        raise TimeSeriesError("lmbda_split must be a boolean xarray.DataArray on the series' (y, x).")
    space = [d for d in obj.dims if d != "time"]
    if sorted(split.dims) != sorted(space) or any(split.sizes[d] != obj.sizes[d] for d in space):
        raise TimeSeriesError(
            f"lmbda_split has dims {dict(split.sizes)}, the series {dict((d, obj.sizes[d]) for d in space)}; "
            "give one value per pixel of the series."
        )
    return split.astype(np.int8)


def _checked_params(
    obj: xr.DataArray | xr.Dataset,
    *,
    method: str,
    max_gap: str | float | pd.Timedelta,
    lmbda: float | str,
    n_harmonics: int,
    period: float,
    sigmas: Sequence[float],
    rbf_cutoff: float,
) -> FillParams:
    """:func:`gap_fill`'s settings checked and normalised (``lmbda="gcv"`` starts at 1000)."""
    if method not in METHODS:
        raise TimeSeriesError(f"Unknown gap-fill method {method!r}; choose one of {METHODS}.")
    if "time" not in obj.dims:
        raise TimeSeriesError(f"gap_fill needs a 'time' dimension; the input has {tuple(obj.dims)}.")
    if n_harmonics < 1:
        raise TimeSeriesError("n_harmonics must be at least 1.")
    if not sigmas or min(sigmas) <= 0:
        raise TimeSeriesError("sigmas must be positive kernel widths in days, e.g. (8, 16, 32).")
    gcv = isinstance(lmbda, str)
    if gcv and lmbda != "gcv":
        raise TimeSeriesError(f"lmbda must be a positive number or 'gcv', not {lmbda!r}.")
    if not gcv and not float(lmbda) > 0:
        raise TimeSeriesError(f"lmbda must be positive, got {lmbda}.")
    gap = as_days(max_gap)
    if not gap >= 0:
        raise TimeSeriesError(f"max_gap={max_gap!r} must be a duration of zero or more, e.g. '45D'.")
    return FillParams(
        method=method,
        max_gap=gap,
        lmbda=1000.0 if gcv else float(lmbda),
        n_harmonics=int(n_harmonics),
        period=float(period),
        sigmas=tuple(float(s) for s in sigmas),
        rbf_cutoff=float(rbf_cutoff),
    )


@dataclass(frozen=True, eq=False)
class _FillJob:
    """What every variable filled by one :func:`gap_fill` call shares."""

    t_obs: np.ndarray  # observation days, sorted
    t_out: np.ndarray  # output days
    axis: pd.DatetimeIndex  # the output axis
    params: FillParams
    weights: xr.DataArray | None  # aligned with the sorted observations
    gcv: bool  # choose the Whittaker lmbda per variable by GCV
    groups: xr.DataArray | None = None  # (space) labels 0..n-1: one GCV lambda per group
    n_groups: int = 0


def _tuned(job: _FillJob, da: xr.DataArray) -> tuple[FillParams, Any]:
    """Parameters for ``da``, and lmbda as a lazy 0-d array when GCV runs inside the graph; with
    groups, the lambdas per group (``(n_groups,)``, lazy or not) instead."""
    if not job.gcv:
        return job.params, None
    if job.groups is not None:
        values, w, t_days, lab = _gcv_sample(da, job.weights, GCV_SAMPLE, groups=job.groups)
        args = (values, w, t_days, lab, GCV_LMBDAS, job.n_groups)
        if not any(dask.is_dask_collection(v) for v in (values, w, lab)):
            return job.params, _gcv_best_groups(*args)
        chosen = dask.delayed(_gcv_best_groups, pure=True)(*args)
        return job.params, dsa.from_delayed(chosen, shape=(job.n_groups,), dtype=np.float64)
    values, w, t_days = _gcv_sample(da, job.weights, GCV_SAMPLE)
    if not any(dask.is_dask_collection(v) for v in (values, w)):  # in memory: choose now
        return dataclasses.replace(job.params, lmbda=_gcv_best(values, w, t_days, GCV_LMBDAS)), None
    chosen = dask.delayed(_gcv_best_array, pure=True)(values, w, t_days, GCV_LMBDAS)
    return job.params, dsa.from_delayed(chosen, shape=(), dtype=np.float64)


def _fill_variable(
    job: _FillJob, da: xr.DataArray, attrs: Mapping[str, Any], *, lmbda_coord: str
) -> xr.DataArray:
    """One variable filled, with ``attrs`` added; a Whittaker fill also records the lmbda used
    as the 0-d coordinate ``lmbda_coord`` (lazy or not) and in ``attrs["gap_fill_lmbda"]``."""
    p, lazy = _tuned(job, da)
    if job.groups is not None and lazy is not None:  # one lambda per group
        lam_px = _lmbda_map(job.groups, lazy)
        out = _fill_dataarray(da, job.t_obs, job.t_out, job.axis, p, job.weights, lam_px)
        out.attrs = {**out.attrs, **attrs, "gap_fill_lmbda": "gcv per group"}
        return out.assign_coords({lmbda_coord: lam_px.astype(np.float64)})
    out = _fill_dataarray(da, job.t_obs, job.t_out, job.axis, p, job.weights, lazy)
    out.attrs = {**out.attrs, **attrs}
    if job.params.method == "whittaker":
        value = lazy if lazy is not None else np.float64(p.lmbda)
        out = out.assign_coords({lmbda_coord: xr.DataArray(value)})
        out.attrs.update({"gap_fill_lmbda": "gcv" if lazy is not None else p.lmbda})
    return out


def _n_obs(job: _FillJob, valid: xr.DataArray) -> xr.DataArray:
    """Per pixel, the observations that count (valid, and of positive weight), int32."""
    if job.weights is not None:
        valid = valid.drop_vars([c for c, v in valid.coords.items() if "time" in v.dims])
        valid = valid & (job.weights > 0)
    n_obs = valid.sum("time").astype(np.int32)
    return n_obs.drop_vars([c for c, v in n_obs.coords.items() if "time" in v.dims], errors="ignore")


def _fill_dataset(job: _FillJob, ds: xr.Dataset, attrs: Mapping[str, Any]) -> xr.Dataset:
    """Every numeric time variable of ``ds`` filled (masked by ``clear`` first), ``n_obs`` counting
    the observations where all of them are finite, variables without time kept."""
    clear = ds["clear"] if "clear" in ds.data_vars else None
    names = [
        str(k)
        for k, v in ds.data_vars.items()
        if k != "clear" and "time" in v.dims and np.issubdtype(v.dtype, np.number)
    ]
    if not names:
        raise TimeSeriesError("The Dataset has no numeric variable with a 'time' dimension to fill.")
    filled = {}
    valid = None
    for name in names:
        var = ds[name] if clear is None else ds[name].where(clear)
        ok = var.notnull()
        valid = ok if valid is None else valid & ok
        # one coordinate per variable: each band has its own lmbda
        filled[name] = _fill_variable(job, var, {}, lmbda_coord=f"gap_fill_lmbda_{name}")
    assert valid is not None
    others = {k: v for k, v in ds.data_vars.items() if "time" not in v.dims}
    return xr.Dataset({**filled, "n_obs": _n_obs(job, valid), **others}, attrs={**ds.attrs, **attrs})
