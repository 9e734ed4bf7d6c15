"""Land-surface phenology from a gap-filled NDVI series: start, peak and end of season.

One season per call: pass the series of one growing season (e.g. ``ndvi.sel(time="2023")``).
Start of season (SOS) is where the curve rises through ``threshold`` of its amplitude above the
minimum before the peak; end of season (EOS) where it falls through ``threshold`` of its amplitude
above the minimum after the peak. Crossings are located to sub-step precision by linear
interpolation between samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.errors import TimeSeriesError
from harmonize.gapfill import to_days

__all__ = ["phenology", "season_metrics"]


def season_metrics(values: np.ndarray, doy: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Season metrics of many series at once.

    Parameters
    ----------
    values
        ``(..., n_times)`` NDVI; NaN allowed (ignored).
    doy
        ``(n_times,)`` day of year (fractional, increasing; may exceed 365 across a new year).
    threshold
        Fraction of the seasonal amplitude that defines SOS/EOS.

    Returns
    -------
    numpy.ndarray
        ``(..., 6)`` float32: sos, pos (peak day), eos, peak value, base value (mean of the two
        minima), amplitude (peak - base). NaN where a metric is undefined.
    """
    lead = values.shape[:-1]
    v = values.reshape(-1, values.shape[-1]).astype(np.float64)
    n, T = v.shape
    out = np.full((n, 6), np.nan)
    finite = np.isfinite(v)
    has = finite.sum(axis=1) >= 3
    if not has.any() or T < 3:
        return out.reshape(*lead, 6).astype(np.float32)
    idx = np.arange(T)
    vv = np.where(finite, v, -np.inf)
    ipk = np.argmax(vv, axis=1)
    peak = v[np.arange(n), ipk]
    left = np.where(finite & (idx[None, :] <= ipk[:, None]), v, np.inf).min(axis=1)
    right = np.where(finite & (idx[None, :] >= ipk[:, None]), v, np.inf).min(axis=1)
    thr_up = left + threshold * (peak - left)
    thr_dn = right + threshold * (peak - right)

    # SOS: last upward crossing of thr_up before the peak (segment i -> i+1 with v[i] < thr <= v[i+1]).
    a, b = v[:, :-1], v[:, 1:]
    seg = idx[:-1][None, :]
    with np.errstate(invalid="ignore"):
        up = (a < thr_up[:, None]) & (b >= thr_up[:, None]) & (seg < ipk[:, None])
        dn = (a > thr_dn[:, None]) & (b <= thr_dn[:, None]) & (seg >= ipk[:, None])
    i_up = np.where(up.any(axis=1), T - 2 - np.argmax(up[:, ::-1], axis=1), -1)
    i_dn = np.where(dn.any(axis=1), np.argmax(dn, axis=1), -1)

    def cross(i: np.ndarray, thr: np.ndarray) -> np.ndarray:
        ok = i >= 0
        ic = np.clip(i, 0, T - 2)
        va, vb = v[np.arange(n), ic], v[np.arange(n), ic + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(vb != va, (thr - va) / (vb - va), 0.0)
        day = doy[ic] + f * (doy[ic + 1] - doy[ic])
        return np.where(ok, day, np.nan)

    amp_ok = has & (peak - np.minimum(left, right) > 0)
    out[:, 0] = np.where(amp_ok, cross(i_up, thr_up), np.nan)
    out[:, 1] = np.where(has, doy[ipk], np.nan)
    out[:, 2] = np.where(amp_ok, cross(i_dn, thr_dn), np.nan)
    out[:, 3] = np.where(has, peak, np.nan)
    base = 0.5 * (left + right)
    out[:, 4] = np.where(has, base, np.nan)
    out[:, 5] = np.where(has, peak - base, np.nan)
    return out.reshape(*lead, 6).astype(np.float32)


_NAMES = ("sos", "pos", "eos", "peak_ndvi", "base_ndvi", "amplitude")


def phenology(ndvi_filled: xr.DataArray, *, threshold: float = 0.5) -> xr.Dataset:
    """Start, peak and end of season per pixel from a gap-filled NDVI series.

    Parameters
    ----------
    ndvi_filled
        NDVI ``(time, y, x)`` on a regular axis covering one season (e.g. :func:`gap_fill`
        output, ``.sel(time="2023")``).
    threshold
        Fraction of the seasonal amplitude crossed at SOS and EOS (0.5 = half-maximum).

    Returns
    -------
    xarray.Dataset
        float32 ``(y, x)`` variables ``sos``, ``pos``, ``eos`` (day of year of the series' first
        year, fractional; can exceed 365 if the season crosses the new year), ``los`` (length of
        season, days), ``peak_ndvi``, ``base_ndvi``, ``amplitude``; NaN where the curve has
        fewer than 3 values or does not cross the threshold. Lazy on dask input.
    """
    if "time" not in ndvi_filled.dims:
        raise TimeSeriesError("phenology needs a 'time' dimension.")
    if not 0 < threshold < 1:
        raise TimeSeriesError("threshold must be between 0 and 1 (fraction of the amplitude).")
    da = ndvi_filled.sortby("time")
    times = pd.DatetimeIndex(da["time"].values)
    jan1 = np.datetime64(f"{times[0].year}-01-01", "ns")
    doy = to_days(times.values, jan1) + 1.0
    da = da.drop_vars([c for c, v in da.coords.items() if "time" in v.dims])
    if da.chunks is not None:
        da = da.chunk({"time": -1})
    metrics = xr.apply_ufunc(
        season_metrics,
        da,
        input_core_dims=[["time"]],
        output_core_dims=[["metric"]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"metric": 6}},
        kwargs={"doy": doy, "threshold": threshold},
    )
    ds = xr.Dataset({name: metrics.isel(metric=i, drop=True) for i, name in enumerate(_NAMES)})
    ds["los"] = ds["eos"] - ds["sos"]
    for name, unit in (
        ("sos", "day of year"),
        ("pos", "day of year"),
        ("eos", "day of year"),
        ("los", "days"),
    ):
        ds[name].attrs["units"] = unit
    ds.attrs = {"phenology_threshold": threshold, "doy_year": int(times[0].year)}
    return ds
