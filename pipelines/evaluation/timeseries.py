"""NDVI time series against truth: what gap filling recovers, and what Landsat adds to Sentinel-2.

- :func:`ndvi_observations`: clear-sky NDVI of Sentinel-2 alone, + harmonized Landsat and + raw
  Landsat, on every :func:`subsample_pixels`-th pixel, computed once;
- :func:`gapfill_table`: gap-filled NDVI RMSE against true NDVI per combination and method;
  :func:`ndvi_rmse_against_truth` the same figure for one filled series;
- :func:`observation_error_table`: the error of single clear observations, the floor under
  every filled series;
- :func:`clear_observation_gain` and :func:`same_day_ndvi_agreement`: what Landsat adds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from harmonize.errors import CRSMismatchError
from harmonize.gapfill import TimeSeriesError, gap_fill
from harmonize.indices import ndvi
from pipelines.evaluation.truth import calendar_day, interior_mask, land_mask, truth_on_grid

__all__ = [
    "COMBINATIONS",
    "FUSED",
    "FUSED_RAW",
    "GAPFILL_METHODS",
    "S2_PLAIN",
    "S2_SHARP",
    "subsample_pixels",
    "ndvi_observations",
    "gapfill_table",
    "ndvi_rmse_against_truth",
    "observation_error_table",
    "clear_observation_gain",
    "same_day_ndvi_agreement",
]

GAPFILL_METHODS: tuple[str, ...] = ("linear", "whittaker", "harmonic", "rbf")


def subsample_pixels(obj: xr.Dataset | xr.DataArray, step: int) -> Any:
    """Every ``step``-th pixel in y and x, starting half a step in (all of them for ``step <= 1``).

    Parameters
    ----------
    obj
        A cube or array with ``y`` and ``x`` dimensions.
    step
        Keep one pixel in ``step`` along each axis.

    Returns
    -------
    xarray.Dataset or xarray.DataArray
        ``obj`` on the subsampled grid: the pixels :func:`ndvi_observations` keeps.
    """
    return obj.isel(y=slice(step // 2, None, step), x=slice(step // 2, None, step)) if step > 1 else obj


def _clear_ndvi_by_day(cube: xr.Dataset, pixel_step: int) -> xr.DataArray:
    """Lazy NDVI of the clear observations on the subsampled grid, times as days."""
    cube = subsample_pixels(cube, pixel_step)
    nd = ndvi(cube.where(cube["clear"])) if "clear" in cube else ndvi(cube)
    keep = [c for c in ("sensor",) if c in nd.coords]
    nd = nd.drop_vars([c for c, v in nd.coords.items() if "time" in v.dims and c != "time" and c not in keep])
    return nd.assign_coords(time=[calendar_day(t) for t in nd["time"].values])


#: The combinations :func:`ndvi_observations` returns, in report order.
S2_PLAIN, S2_SHARP = "S2 only", "S2 only, sharpened nir"
FUSED, FUSED_RAW = "S2 + harmonized Landsat", "S2 + raw Landsat"
COMBINATIONS: tuple[str, ...] = (S2_PLAIN, S2_SHARP, FUSED, FUSED_RAW)


def _sensor_steps(obs: xr.DataArray, sensor: str) -> xr.DataArray:
    """The steps of ``obs`` whose ``sensor`` label is ``sensor``."""
    return obs.isel(time=np.flatnonzero(np.asarray(obs["sensor"].values).astype(str) == sensor))


def _product_by_day(product: xr.DataArray, pixel_step: int) -> xr.DataArray:
    """Stored NDVI observations on the subsampled grid, times as days (as :func:`_clear_ndvi_by_day`)."""
    nd = subsample_pixels(product, pixel_step)
    nd = nd.drop_vars([c for c, v in nd.coords.items() if "time" in v.dims and c not in ("time", "sensor")])
    return nd.assign_coords(time=[calendar_day(t) for t in nd["time"].values])


def ndvi_observations(
    s2: xr.Dataset,
    landsat_raw: xr.Dataset,
    landsat_harmonized: xr.Dataset | None,
    *,
    pixel_step: int = 4,
    config: Any = None,
    product: xr.DataArray | None = None,
) -> dict[str, xr.DataArray]:
    """Clear-sky NDVI observations of each sensor combination, computed once, in memory.

    Every ``pixel_step``-th pixel in y and x is kept (:func:`subsample_pixels`): time series
    are per pixel, so a regular subsample estimates the same errors at a fraction of the reads.

    Sentinel-2 alone comes twice, as a user could have it: plain (its 20 m nir as delivered)
    and with its nir sharpened to 10 m (:func:`harmonize.timeseries.sharpen_nir`). The fused
    combinations use the Sentinel-2 that ``config`` (the time-series stage's settings) asks for
    are prepared as the stage fills them (:func:`harmonize.timeseries.fill_inputs`: the other
    sensor's offset from Sentinel-2 corrected, a ``weight`` coordinate ``(time, y, x)``), with
    the heterogeneity measured on the full-resolution Sentinel-2 observations, then
    subsampled like the observations. Every combination carries the ``lmbda_split``
    coordinate ``(y, x)`` when the settings choose Whittaker's lambda apart for edges
    (``lmbda_by_edges``), from its own Sentinel-2's heterogeneity. :func:`gapfill_table` uses
    both.

    Parameters
    ----------
    s2, landsat_raw, landsat_harmonized
        Sentinel-2's part of the cube, Landsat's, and the harmonized Landsat (with ``clear``;
        unused with ``product``). Leave out Landsat dates the product leaves out (not
        co-registered) beforehand.
    pixel_step
        Spatial subsampling.
    config
        A :class:`harmonize.timeseries.TimeSeriesConfig` (default: its defaults).
    product
        The time-series stage's stored observations (NDVI with a ``sensor`` coordinate, made
        with ``config``): the fused combination is then read from it rather than computed
        again (and so is the sharpened Sentinel-2 when ``config`` sharpens).

    Returns
    -------
    dict of str to xarray.DataArray
        Keys :data:`COMBINATIONS`; each masked to clear observations and sorted in time with a
        ``sensor`` coordinate, as :func:`harmonize.timeseries.fuse` would give.
    """
    from harmonize.timeseries import S2, TimeSeriesConfig, heterogeneity, sharpen_nir

    cfg = config or TimeSeriesConfig()
    split_on = cfg.lmbda_by_edges and cfg.method == "whittaker" and cfg.lmbda == "gcv"
    s2 = s2[[v for v in ("blue", "green", "red", "nir", "clear") if v in s2.data_vars]]
    lazy: dict[str, Any] = {S2_PLAIN: _clear_ndvi_by_day(s2, pixel_step)}
    lazy[FUSED_RAW] = _clear_ndvi_by_day(landsat_raw, pixel_step)
    if product is not None:
        full = _sensor_steps(product, S2)
        lazy[FUSED] = _product_by_day(product, pixel_step)
        if cfg.sharpen_s2_nir:
            lazy[S2_SHARP] = _product_by_day(full, pixel_step)
        else:
            lazy[S2_SHARP] = _clear_ndvi_by_day(sharpen_nir(s2), pixel_step)
    else:
        s2_sharp = sharpen_nir(s2)
        lazy[S2_SHARP] = _clear_ndvi_by_day(s2_sharp, pixel_step)
        lazy[FUSED] = _clear_ndvi_by_day(landsat_harmonized, pixel_step)
        s2_fused = s2_sharp if cfg.sharpen_s2_nir else s2
        full = ndvi(s2_fused.where(s2_fused["clear"])) if "clear" in s2_fused else ndvi(s2_fused)
    if cfg.weights or split_on:
        lazy["het"] = subsample_pixels(heterogeneity(full, window=cfg.weight_window), pixel_step)
    if split_on and cfg.sharpen_s2_nir:  # plain Sentinel-2's own edges
        plain = ndvi(s2.where(s2["clear"])) if "clear" in s2 else ndvi(s2)
        lazy["het_plain"] = subsample_pixels(heterogeneity(plain, window=cfg.weight_window), pixel_step)
    # One compute for all, so the Sentinel-2 chunks are read once.
    done = dict(zip(lazy, dask.compute(*lazy.values()), strict=True))
    het, het_plain = done.get("het"), done.get("het_plain", done.get("het"))
    s2_obs = done[S2_SHARP] if cfg.sharpen_s2_nir else done[S2_PLAIN]
    fused = done[FUSED] if product is not None else _concat(s2_obs, done[FUSED])
    return {
        S2_PLAIN: _prepared(done[S2_PLAIN], het_plain, cfg),
        S2_SHARP: _prepared(done[S2_SHARP], het if cfg.sharpen_s2_nir else None, cfg),
        FUSED: _prepared(fused, het, cfg),
        FUSED_RAW: _prepared(_concat(s2_obs, done[FUSED_RAW]), het, cfg),
    }


def _concat(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """Two sensors' observations on one time axis, sorted."""
    return xr.concat([a, b], dim="time", coords="minimal", compat="override").sortby("time")


def _prepared(obs: xr.DataArray, het: xr.DataArray | None, cfg: Any) -> xr.DataArray:
    """``obs`` as the time-series stage fills it (:func:`harmonize.timeseries.fill_inputs`: other
    sensors' offsets corrected), with its ``weight`` and ``lmbda_split`` as coordinates; as it
    is without ``het`` (measured at full resolution; a subsample's would be another scale)."""
    from harmonize.timeseries import fill_inputs

    if het is None:
        return obs
    values, weights, split = fill_inputs(obs, cfg, het=het)
    values = values.compute()
    if weights is not None:
        values = values.assign_coords(weight=(obs.dims, np.asarray(weights.values)))
    if split is not None:
        values = values.assign_coords(lmbda_split=(split.dims, np.asarray(split.values)))
    return values


def _static_masks(
    truth: xr.Dataset, like: xr.DataArray, interior_margin: int | None
) -> tuple[np.ndarray | None, np.ndarray]:
    """The interior (``None`` without a margin) and land masks on ``like``'s grid, as arrays."""
    # Only the static maps are needed: loading the whole truth (every band, every date) was
    # the tables' slowest step.
    static = truth[[v for v in ("landcover", "field_id") if v in truth.data_vars]].load()
    interior = None if interior_margin is None else interior_mask(static, like, margin=interior_margin).values
    return interior, land_mask(static, like).values


def _fill_each(
    observations: Mapping[str, xr.DataArray],
    weights: Mapping[str, Any] | None,
    **gap_fill_kwargs: Any,
) -> dict[str, xr.DataArray]:
    """Every combination gap-filled with the same settings, in memory, without per-time coords."""
    ests = {}
    for combo, obs in observations.items():
        w = (weights or {}).get(combo)
        if w is None and "weight" in obs.coords:
            w = obs["weight"]
        split = obs["lmbda_split"] if "lmbda_split" in obs.coords else None
        obs = obs.drop_vars([c for c in ("weight", "lmbda_split") if c in obs.coords])
        filled = gap_fill(obs, weights=w, lmbda_split=split, **gap_fill_kwargs)
        drop = [c for c, v in filled.coords.items() if "time" in v.dims and c != "time"]
        ests[combo] = filled.drop_vars(drop).compute()
    return ests


def _rmse(diff: np.ndarray, where: np.ndarray | None) -> float:
    """RMSE of ``diff`` where ``where`` holds (NaN where it is empty or missing)."""
    return float(np.sqrt(np.mean(diff[where] ** 2))) if where is not None and where.any() else float("nan")


def _score_filled(
    method: str,
    ests: Mapping[str, xr.DataArray],
    truth_ndvi: xr.DataArray,
    interior: np.ndarray | None,
    land: np.ndarray,
) -> list[dict[str, Any]]:
    """One method's rows of :func:`gapfill_table`, on the pixel-dates every combination filled."""
    t_axis = next(iter(ests.values()))["time"].values
    tru = truth_ndvi.interp(time=t_axis).values
    common = np.isfinite(tru)
    for e in ests.values():
        common &= np.isfinite(e.values)
    inner = common & interior[None] if interior is not None else None
    on_land = common & land[None]
    total = np.isfinite(tru).sum()
    rows = []
    for combo, e in ests.items():
        diff = e.values - tru
        filled_here = np.isfinite(e.values) & np.isfinite(tru)
        rows.append(
            {
                "method": method,
                "inputs": combo,
                "NDVI RMSE": _rmse(diff, common),
                "NDVI MAE": float(np.mean(np.abs(diff[common]))) if common.any() else float("nan"),
                "NDVI RMSE interior": _rmse(diff, inner),
                "NDVI RMSE land": _rmse(diff, on_land),
                "coverage": float(filled_here.sum() / total) if total else 0.0,
                "pixel-dates": int(common.sum()),
            }
        )
    return rows


def gapfill_table(
    observations: Mapping[str, xr.DataArray],
    truth: xr.Dataset,
    *,
    methods: Sequence[str] = GAPFILL_METHODS,
    freq: str = "5D",
    max_gap: str = "45D",
    interior_margin: int | None = 3,
    weights: Mapping[str, Any] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, xr.DataArray]]]:
    """Gap-filled NDVI RMSE against true NDVI, per sensor combination and method.

    Every method is scored on the same pixel-dates (those every combination filled), so RMSEs
    compare like with like; ``coverage`` says how much of the truth each combination filled.

    Parameters
    ----------
    observations
        NDVI observations per combination (:func:`ndvi_observations`); the first one sets the
        output time axis (its first to last day).
    truth
        The simulator's truth.
    methods, freq, max_gap
        Gap-filling methods to score, the output time step and the longest gap bridged.
    interior_margin
        Also score parcel interiors only (:func:`interior_mask`), as ``NDVI RMSE interior``;
        ``None`` to skip.
    weights
        Observation weights per combination (``gap_fill(weights=...)``: a DataArray on that
        combination's observations or a mapping sensor -> weight); a combination not named here
        uses its observations' ``weight`` coordinate if they carry one (:func:`ndvi_observations`),
        else none. Weights change the fit, never which pixel-dates are scored.
    options
        ``gap_fill`` keyword arguments per method, e.g. ``{"whittaker": {"lmbda": 300}}``, over
        the defaults of :class:`harmonize.timeseries.TimeSeriesConfig` (what the time-series
        stage runs: ``lmbda="gcv"``).

    Returns
    -------
    (pandas.DataFrame, dict)
        One row per (method, inputs): ``NDVI RMSE``, ``NDVI MAE``, ``NDVI RMSE interior``,
        ``NDVI RMSE land`` (every pixel but water, :func:`land_mask`), ``coverage`` and
        ``pixel-dates``; and the filled series, ``{method: {inputs: filled}}``.
    """
    from harmonize.timeseries import TimeSeriesConfig

    # The method parameters the time-series stage uses by default, so the table scores the product.
    defaults = {
        k: v
        for k, v in TimeSeriesConfig().gap_fill_kwargs().items()
        if k not in ("method", "freq", "max_gap", "start", "end")
    }
    first = next(iter(observations.values()))
    truth_ndvi = ndvi(truth_on_grid(truth, first)).astype("float32").compute()
    interior, land = _static_masks(truth, first, interior_margin or None)
    span = {
        "start": pd.Timestamp(first["time"].values.min()).normalize(),
        "end": pd.Timestamp(first["time"].values.max()).normalize(),
    }
    rows: list[dict[str, Any]] = []
    filled_all: dict[str, dict[str, xr.DataArray]] = {}
    for method in methods:
        kw = {**defaults, **(options or {}).get(method, {})}
        ests = _fill_each(observations, weights, method=method, freq=freq, max_gap=max_gap, **span, **kw)
        filled_all[method] = ests
        rows += _score_filled(method, ests, truth_ndvi, interior, land)
    return pd.DataFrame(rows), filled_all


def ndvi_rmse_against_truth(filled: xr.DataArray, truth_ndvi: xr.DataArray) -> dict[str, float]:
    """Accuracy of a gap-filled NDVI series against the true NDVI.

    ``filled`` is interpolated linearly in time onto the truth's dates that lie inside its time
    span; both must be on the same ``(y, x)`` grid. Pixels/dates where either is NaN are left out.

    Parameters
    ----------
    filled
        Gap-filled NDVI ``(time, y, x)`` (e.g. :func:`harmonize.gapfill.gap_fill` output).
    truth_ndvi
        True NDVI ``(time, y, x)`` from the simulator (any dates).

    Returns
    -------
    dict
        ``rmse``, ``mae``, ``bias`` (filled - truth), ``n`` (pixel-dates compared) and
        ``coverage`` (fraction of the truth's pixel-dates inside the span that were filled).

    Raises
    ------
    CRSMismatchError
        When the two are on grids of different shapes.
    TimeSeriesError
        When no date of the truth lies inside the filled series' span.
    """
    if filled.sizes.get("y") != truth_ndvi.sizes.get("y") or filled.sizes.get("x") != truth_ndvi.sizes.get(
        "x"
    ):
        raise CRSMismatchError(
            f"The filled series {dict(filled.sizes)} and the truth {dict(truth_ndvi.sizes)} are on "
            "different grids; resample the truth onto the cube's grid first."
        )
    t0, t1 = filled["time"].values.min(), filled["time"].values.max()
    truth = truth_ndvi.sel(time=(truth_ndvi["time"] >= t0) & (truth_ndvi["time"] <= t1))
    if truth.sizes["time"] == 0:
        raise TimeSeriesError("The truth has no date inside the filled series' time span.")
    drop = [c for c, v in filled.coords.items() if "time" in v.dims and c != "time"]
    est = filled.drop_vars(drop).interp(time=truth["time"].values)
    est = est.assign_coords(y=truth["y"].values, x=truth["x"].values)
    diff = (est - truth).astype(np.float64)
    both = diff.notnull()
    sums = dask.compute(both.sum(), (diff**2).sum(), abs(diff).sum(), diff.sum(), truth.notnull().sum())
    n, sq, ab, sm, tot = (float(v) for v in sums)
    if n == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "bias": float("nan"), "n": 0, "coverage": 0.0}
    return {
        "rmse": float(np.sqrt(sq / n)),
        "mae": ab / n,
        "bias": sm / n,
        "n": int(n),
        "coverage": n / tot if tot else 0.0,
    }


def _other_sensor_observations(observations: Mapping[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    """Sentinel-2's observations, then each fused combination's other sensor's, by name."""
    rows: dict[str, xr.DataArray] = {"Sentinel-2": observations["S2 only"]}
    if S2_SHARP in observations:
        rows["Sentinel-2, sharpened nir"] = observations[S2_SHARP]
    for combo, obs in observations.items():
        if not combo.startswith("S2 + ") or "sensor" not in obs.coords:
            continue
        other = np.asarray([str(v) != "sentinel-2" for v in obs["sensor"].values])
        rows[combo.removeprefix("S2 + ")] = obs.isel(time=np.flatnonzero(other))
    return rows


def observation_error_table(
    observations: Mapping[str, xr.DataArray],
    truth: xr.Dataset,
    *,
    interior_margin: int = 3,
) -> pd.DataFrame:
    """NDVI error of single clear observations against truth on their own day, per sensor.

    This is the floor under every gap-filled series: filling in time can average noise away
    and bridge clouds, but a pixel a sensor sees wrongly on every date (a 20 m band across a
    field edge, a shore) stays wrong whatever the method.

    Parameters
    ----------
    observations
        As :func:`ndvi_observations` gives: ``"S2 only"`` and the fused combinations; each
        sensor's observations are taken once, Sentinel-2's from ``"S2 only"``.
    truth
        The simulator's truth.
    interior_margin
        As :func:`interior_mask`.

    Returns
    -------
    pandas.DataFrame
        Index ``observations``: ``Sentinel-2``, then one row per fused combination's other
        sensor (e.g. ``harmonized Landsat``); columns ``NDVI RMSE`` and ``bias`` over all
        pixels, ``NDVI RMSE land``, ``NDVI RMSE interior`` and ``pixel-dates``.
    """
    s2 = observations["S2 only"]
    interior, land = _static_masks(truth, s2, interior_margin)
    # read once for every sensor (interp of the lazy truth would read it again per row)
    truth_ndvi = ndvi(truth_on_grid(truth, s2)).astype("float32").compute()
    out = []
    for name, obs in _other_sensor_observations(observations).items():
        obs = obs.drop_vars([c for c in obs.coords if c not in obs.dims])
        tru = truth_ndvi.interp(time=obs["time"].values).values
        diff = np.asarray(obs.values) - tru
        ok = np.isfinite(diff)
        out.append(
            {
                "observations": name,
                "NDVI RMSE": _rmse(diff, ok),
                "bias": float(diff[ok].mean()) if ok.any() else float("nan"),
                "NDVI RMSE land": _rmse(diff, ok & land[None]),
                "NDVI RMSE interior": _rmse(diff, ok & interior[None]),
                "pixel-dates": int(ok.sum()),
            }
        )
    return pd.DataFrame(out).set_index("observations")


def clear_observation_gain(s2: xr.Dataset, landsat: xr.Dataset) -> dict[str, float]:
    """Clear observations per pixel per year: Sentinel-2 alone versus fused with Landsat.

    Parameters
    ----------
    s2, landsat
        Each sensor's part of the cube, with ``clear``.

    Returns
    -------
    dict
        ``s2_only``, ``landsat``, ``fused`` (per pixel per year) and ``gain_percent``.
    """
    days = (pd.Timestamp(s2["time"].values.max()) - pd.Timestamp(s2["time"].values.min())).days + 1
    per_year = 365.25 / max(days, 1)

    def per_pixel(c: xr.Dataset) -> float:
        return float(c["clear"].sum("time").mean().compute()) * per_year

    s2_n = per_pixel(s2)
    l_n = per_pixel(landsat)
    return {
        "s2_only": s2_n,
        "landsat": l_n,
        "fused": s2_n + l_n,
        "gain_percent": 100.0 * l_n / s2_n if s2_n else float("nan"),
    }


def same_day_ndvi_agreement(
    s2: xr.Dataset, landsat_raw: xr.Dataset, landsat_harmonized: xr.Dataset
) -> dict[str, float]:
    """Pearson r of NDVI between same-day Landsat and Sentinel-2, before and after harmonization.

    Only pixels clear in both scenes of a same-day pair count.

    Parameters
    ----------
    s2, landsat_raw, landsat_harmonized
        Sentinel-2's part of the cube, Landsat's, and the harmonized Landsat.

    Returns
    -------
    dict
        ``pairs``, ``pixels``, ``r_before``, ``r_after`` and ``gain_percent_abs`` (absent when
        fewer than 10 pixels are clear in both).
    """
    s2_days = {calendar_day(t): i for i, t in enumerate(s2["time"].values)}
    raw, harm, ref = [], [], []
    h_times = {calendar_day(t): i for i, t in enumerate(landsat_harmonized["time"].values)}
    for j, t in enumerate(landsat_raw["time"].values):
        d = calendar_day(t)
        if d not in s2_days or d not in h_times:
            continue
        s = s2.isel(time=s2_days[d])
        lr = landsat_raw.isel(time=j)
        lh = landsat_harmonized.isel(time=h_times[d])
        both = (s["clear"] & lr["clear"]).values
        n_s, n_r, n_h = (np.asarray(ndvi(x).values) for x in (s, lr, lh))
        ok = both & np.isfinite(n_s) & np.isfinite(n_r) & np.isfinite(n_h)
        raw.append(n_r[ok])
        harm.append(n_h[ok])
        ref.append(n_s[ok])
    if not ref or sum(len(r) for r in ref) < 10:
        return {"pairs": len(ref), "pixels": 0, "r_before": float("nan"), "r_after": float("nan")}
    ref_a, raw_a, harm_a = (np.concatenate(v) for v in (ref, raw, harm))
    r_before = float(np.corrcoef(raw_a, ref_a)[0, 1])
    r_after = float(np.corrcoef(harm_a, ref_a)[0, 1])
    return {
        "pairs": len(ref),
        "pixels": int(ref_a.size),
        "r_before": r_before,
        "r_after": r_after,
        "gain_percent_abs": 100.0 * (r_after - r_before),
    }
