"""Per-pixel time-series features for the classifier: period composites and phenology.

Every source (Sentinel-2, harmonized Landsat, raw Landsat ...) is reduced once to per-period
*sums and counts* of its clear observations (:func:`period_sums`); sums of several sources add
up, so the composites of any combination of sources (:func:`composite_features`) cost no
further read of the cubes. A composite is the mean of the clear observations in its period;
periods with none are filled along time (linear between neighbours, nearest at the ends). From
the composite NDVI come phenology metrics (:func:`harmonize.phenology.season_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.bands import REFLECTANCE_BANDS
from harmonize.errors import HarmonizeError
from harmonize.phenology import season_metrics

__all__ = [
    "period_edges",
    "period_sums",
    "add_sums",
    "fill_sums",
    "composite_features",
    "ndvi_observations",
    "PHENOLOGY_FEATURES",
]

#: Names of the phenology features, in :func:`season_metrics`' order.
PHENOLOGY_FEATURES = ("sos", "pos", "eos", "peak_ndvi", "base_ndvi", "amplitude")


def period_edges(start: object, end: object, freq: str = "MS") -> pd.DatetimeIndex:
    """Edges of the composite periods covering ``start`` .. ``end`` (``len = periods + 1``).

    Parameters
    ----------
    start, end
        First and last time to cover (anything :class:`pandas.Timestamp` reads).
    freq
        A pandas frequency: ``"MS"`` (calendar months), ``"SMS"``, ``"10D"`` ...
    """
    t0, t1 = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize() + pd.Timedelta(days=1)
    edges = pd.date_range(t0, t1, freq=freq)
    if len(edges) == 0 or edges[0] > t0:
        edges = pd.DatetimeIndex([t0]).append(edges)
    if edges[-1] < t1:
        edges = edges.append(pd.DatetimeIndex([t1]))
    return edges


def period_sums(
    cube: xr.Dataset, edges: pd.DatetimeIndex, bands: Sequence[str] = REFLECTANCE_BANDS
) -> xr.Dataset:
    """Sums and counts of the clear observations of ``cube`` in each period (lazy).

    Parameters
    ----------
    cube
        ``(time, y, x)`` reflectance with the ``bands`` and optionally a boolean ``clear``.
    edges
        Period edges (:func:`period_edges`); times outside them are ignored.
    bands
        The bands to composite.

    Returns
    -------
    xarray.Dataset
        ``<band>`` sums and ``count`` (clear observations) on ``(period, y, x)``, float32/int16.
    """
    missing = [b for b in bands if b not in cube.data_vars]
    if missing:
        raise HarmonizeError(f"the cube lacks bands {missing} for the classifier's composites")
    times = pd.DatetimeIndex(cube["time"].values)
    which = np.searchsorted(edges.values, times.values, side="right") - 1
    sums: dict[str, list[xr.DataArray]] = {b: [] for b in bands}
    counts: list[xr.DataArray] = []
    for p in range(len(edges) - 1):
        sub = cube.isel(time=np.flatnonzero(which == p))
        valid = _valid(sub, bands)
        for b in bands:
            sums[b].append(sub[b].where(valid).sum("time", skipna=True).astype(np.float32))
        counts.append(valid.sum("time").astype(np.int16))
    out = {b: xr.concat(v, dim="period", coords="minimal", compat="override") for b, v in sums.items()}
    out["count"] = xr.concat(counts, dim="period", coords="minimal", compat="override")
    ds = xr.Dataset(out).assign_coords(period=edges[:-1].values)
    return ds.drop_vars([c for c in ds.coords if c not in ("period", "y", "x", "spatial_ref")])


def ndvi_observations(cube: xr.Dataset) -> xr.Dataset:
    """NDVI of every clear observation of ``cube`` (NaN elsewhere), lazy, as ``ndvi``.

    Parameters
    ----------
    cube
        ``(time, y, x)`` with ``red``, ``nir`` and optionally a boolean ``clear``.

    Returns
    -------
    xarray.Dataset
        ``ndvi`` in ``[-1, 1]``, what :func:`period_sums` takes with ``bands=("ndvi",)``.
    """
    missing = [b for b in ("red", "nir") if b not in cube.data_vars]
    if missing:
        raise HarmonizeError(f"the cube lacks bands {missing} for the classifier's NDVI")
    red, nir = cube["red"].astype(np.float32), cube["nir"].astype(np.float32)
    ndvi = ((nir - red) / (nir + red)).clip(-1, 1)
    if "clear" in cube.data_vars:
        ndvi = ndvi.where(cube["clear"].astype(bool))
    return ndvi.astype(np.float32).to_dataset(name="ndvi")


def _valid(cube: xr.Dataset, bands: Sequence[str]) -> xr.DataArray:
    """Clear and finite in every band."""
    valid = cube[bands[0]].notnull()
    for b in bands[1:]:
        valid = valid & cube[b].notnull()
    if "clear" in cube.data_vars:
        valid = valid & cube["clear"].astype(bool)
    return valid


def add_sums(*parts: xr.Dataset) -> xr.Dataset:
    """The period sums of several sources together (each from :func:`period_sums`, same edges)."""
    if not parts:
        raise HarmonizeError("add_sums needs at least one source")
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def fill_sums(primary: xr.Dataset, *fillers: xr.Dataset) -> xr.Dataset:
    """The period sums of ``primary``, and where a period has no clear observation of it, those
    of the first of ``fillers`` that has one (each from :func:`period_sums`, same edges).

    Unlike :func:`add_sums`, a filler never mixes into a period that ``primary`` observed: a
    coarser or differently calibrated source then only fills gaps (e.g. Landsat filling the
    months clouds took from Sentinel-2) instead of blending its values into every composite.
    """
    total = primary
    for f in fillers:
        empty = total["count"] == 0
        total = xr.Dataset(
            {v: xr.where(empty, f[v], total[v]).astype(total[v].dtype) for v in total.data_vars}
        )
    return total


def composite_features(sums: xr.Dataset, *, phenology: bool = True) -> xr.DataArray:
    """Features ``(feature, y, x)``: per-period mean reflectance and NDVI, and phenology.

    Parameters
    ----------
    sums
        :func:`period_sums` (or :func:`add_sums` of several), computed or lazy.
    phenology
        Append :data:`PHENOLOGY_FEATURES` of the composite NDVI (days as fractions of a year).

    Returns
    -------
    xarray.DataArray
        float32, named features (``<band>_<yyyy-mm-dd>``, ``ndvi_<...>``, phenology), NaN only
        where a pixel has no clear observation in any period.
    """
    bands = [v for v in sums.data_vars if v != "count"]
    count = sums["count"].astype(np.float32)
    means = {b: (sums[b] / count.where(count > 0)).astype(np.float32) for b in bands}
    if "red" in means and "nir" in means:
        means["ndvi"] = ((means["nir"] - means["red"]) / (means["nir"] + means["red"])).clip(-1, 1)
    filled = {k: _fill_time(np.asarray(v.transpose("period", "y", "x").values)) for k, v in means.items()}
    labels = [pd.Timestamp(t).strftime("%Y-%m-%d") for t in sums["period"].values]
    layers, names = [], []
    for k, v in filled.items():
        layers.append(v)
        names += [f"{k}_{d}" for d in labels]
    if phenology and "ndvi" in filled:
        doy = _start_doy(sums["period"].values)
        metrics = season_metrics(np.moveaxis(filled["ndvi"], 0, -1), doy)
        metrics[..., :3] /= 365.0
        layers.append(np.moveaxis(metrics, -1, 0))
        names += list(PHENOLOGY_FEATURES)
    data = np.concatenate(layers, axis=0).astype(np.float32)
    coords = {"feature": names, "y": sums["y"].values, "x": sums["x"].values}
    out = xr.DataArray(data, dims=("feature", "y", "x"), coords=coords, name="features")
    if "spatial_ref" in sums.coords:
        out = out.assign_coords(spatial_ref=sums["spatial_ref"])
    return out


def _fill_time(a: np.ndarray) -> np.ndarray:
    """Periods (axis 0) without observations: linear between neighbours, the nearest at the ends."""
    n = a.shape[0]
    ok = np.isfinite(a)
    idx = np.arange(n).reshape((n,) + (1,) * (a.ndim - 1))
    prev = np.maximum.accumulate(np.where(ok, idx, -1), axis=0)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(ok, idx, n), 0), axis=0), 0)
    vp = np.take_along_axis(a, np.clip(prev, 0, n - 1), 0)
    vn = np.take_along_axis(a, np.clip(nxt, 0, n - 1), 0)
    both = (prev >= 0) & (nxt < n)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = (idx - prev) / np.maximum(nxt - prev, 1)
    between = vp + w * (vn - vp)
    return np.where(ok, a, np.where(both, between, np.where(prev >= 0, vp, vn)))


def _start_doy(periods: np.ndarray) -> np.ndarray:
    """Day of year of each period's start (increasing past 365 across a new year)."""
    t = pd.DatetimeIndex(periods)
    return ((t - pd.Timestamp(t[0].year, 1, 1)) / pd.Timedelta(days=1)).values.astype(np.float64) + 1
