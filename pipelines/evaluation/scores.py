"""Measure harmonize against the simulator's truth.

The simulated archive keeps the noise-free, cloud-free Sentinel-2-spectral reflectance of every
acquisition date (``World.truth``), so each claim the product makes can be checked against the
answer rather than against another estimate:

- :func:`harmonization_table`: Landsat made Sentinel-2-like by each method (resampling alone,
  + HLS bandpass, + fitted linear bandpass, the UNet) on the held-out test blocks of the pair
  index, scored against truth (PSNR, SSIM, SAM, NRMSE per band, NDVI r);
- :func:`gapfill_table`: gap-filled NDVI RMSE against true NDVI for Sentinel-2 alone, Sentinel-2
  + harmonized Landsat and Sentinel-2 + raw Landsat, for each gap-filling method;
- :func:`clear_observation_gain` and :func:`same_day_ndvi_agreement`: what Landsat adds.

These live with the pipelines, not in the library: the library never knows it runs on a
simulation (DESIGN.md), while these functions need the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.bandpass import LinearAdjustment, fit_linear_adjustment, hls_adjust
from harmonize.bands import REFLECTANCE_BANDS
from harmonize.gapfill import gap_fill
from harmonize.indices import ndvi
from harmonize.metrics import evaluate

log = logging.getLogger(__name__)

__all__ = [
    "truth_on_grid",
    "sensor_part",
    "test_windows",
    "train_block_mask",
    "interior_mask",
    "land_mask",
    "harmonization_table",
    "ndvi_observations",
    "gapfill_table",
    "observation_error_table",
    "clear_observation_gain",
    "same_day_ndvi_agreement",
]

GAPFILL_METHODS: tuple[str, ...] = ("linear", "whittaker", "harmonic", "rbf")


def _day(t: Any) -> np.datetime64:
    return np.datetime64(pd.Timestamp(t).normalize().to_datetime64(), "ns")


def truth_on_grid(truth: xr.Dataset, like: xr.Dataset | xr.DataArray) -> xr.Dataset:
    """The truth on ``like``'s pixel centres (NaN where it does not reach), time as days."""
    out = truth.reindex(y=like["y"].values, x=like["x"].values, method="nearest", tolerance=1.0)
    return out.assign_coords(time=[_day(t) for t in out["time"].values])


def sensor_part(cube: xr.Dataset, sensor: str) -> xr.Dataset:
    """The time steps of one sensor."""
    return cube.isel(time=np.flatnonzero(np.asarray(cube["sensor"].values) == sensor))


def _patch_size(index: pd.DataFrame, default: int = 256) -> int:
    cfg = index.attrs.get("config") or {}
    return int(cfg.get("patch_size", default))


def test_windows(index: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Rows of the pair index in ``split``."""
    return index[index["split"] == split].reset_index(drop=True)


def train_block_mask(index: pd.DataFrame, shape: tuple[int, int], patch: int | None = None) -> np.ndarray:
    """Boolean ``(y, x)`` mask of the pixels covered by training windows."""
    patch = patch or _patch_size(index)
    mask = np.zeros(shape, bool)
    for r in index[index["split"] == "train"].itertuples():
        mask[int(r.y0) : int(r.y0) + patch, int(r.x0) : int(r.x0) + patch] = True
    return mask


def _stack_windows(
    arrays: Mapping[str, xr.Dataset],
    truth: xr.Dataset,
    windows: pd.DataFrame,
    patch: int,
    landsat_clear: xr.DataArray,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    import dask

    # every window of every array lazily first, then one computation: each computation plans
    # the cubes' whole graphs, which cost far more than reading the windows
    lazy: dict[str, list[Any]] = {k: [] for k in arrays}
    truths, valids = [], []
    for r in windows.itertuples():
        ys, xs = slice(int(r.y0), int(r.y0) + patch), slice(int(r.x0), int(r.x0) + patch)
        lt = np.datetime64(pd.Timestamp(r.landsat_time).to_datetime64(), "ns")
        t_truth = truth.sel(time=_day(r.s2_time))[list(REFLECTANCE_BANDS)].isel(y=ys, x=xs)
        truths.append([t_truth[b].data for b in REFLECTANCE_BANDS])
        valids.append(landsat_clear.sel(time=lt).isel(y=ys, x=xs).data)
        for name, ds in arrays.items():
            sel = ds.sel(time=lt).isel(y=ys, x=xs)
            lazy[name].append([sel[b].data for b in REFLECTANCE_BANDS])
    names = list(lazy)
    truths, valids, *per_name = dask.compute(truths, valids, *[lazy[k] for k in names])
    preds = {
        k: np.stack([np.stack([np.asarray(b, np.float32) for b in w]) for w in v])
        for k, v in zip(names, per_name, strict=True)
    }
    truth_arr = np.stack([np.stack([np.asarray(b) for b in w]) for w in truths])
    return preds, truth_arr, np.stack([np.asarray(v, bool) for v in valids])


def harmonization_table(
    cube: xr.Dataset,
    index: pd.DataFrame,
    truth: xr.Dataset,
    predictions: Mapping[str, xr.Dataset],
    *,
    split: str = "test",
    fitted: LinearAdjustment | None = None,
    max_windows: int | None = 64,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score each way of making Landsat Sentinel-2-like against truth on held-out windows.

    Parameters
    ----------
    cube
        The co-registered cube with both sensors (Landsat already on the 10 m grid).
    index
        The pair index (:func:`harmonize.pairs.build_pair_index`), with a ``split`` column.
    truth
        The simulator's truth (``World.truth``).
    predictions
        Extra methods to score, e.g. ``{"unet tiny": harmonized_cube}``, each on the cube's grid
        with the Landsat times.
    split
        Which split's windows to score (default the held-out ``"test"`` blocks).
    fitted
        A fitted linear adjustment; by default fitted here on the training blocks only.
    max_windows
        Cap on windows scored (evenly spaced), to bound memory and time.

    Returns
    -------
    (pandas.DataFrame, dict)
        One row per method: overall PSNR, SSIM, SAM, NRMSE, NDVI r and per-band PSNR; and the
        details (window count, the fitted coefficients).
    """
    windows = test_windows(index, split)
    if windows.empty:
        raise ValueError(f"the pair index has no {split!r} windows to score")
    if max_windows and len(windows) > max_windows:
        windows = windows.iloc[np.linspace(0, len(windows) - 1, max_windows).round().astype(int)]
    patch = _patch_size(index)
    landsat = sensor_part(cube, "landsat")
    if fitted is None:
        train_mask = xr.DataArray(train_block_mask(index, (cube.sizes["y"], cube.sizes["x"]), patch), dims=("y", "x"))
        masked = cube.assign(clear=cube["clear"] & train_mask)
        fitted = fit_linear_adjustment(masked, max_days=0)
    resampling = (cube.attrs.get("harmonize_load") or {}).get("resampling", "bilinear")
    if isinstance(resampling, dict):
        resampling = next(iter(resampling.values()), "bilinear")
    methods: dict[str, xr.Dataset] = {
        f"Landsat resampled ({resampling})": landsat,
        "+ HLS bandpass": hls_adjust(landsat, to="sentinel-2"),
        "+ fitted linear bandpass": fitted.apply(landsat),
        **predictions,
    }
    tr = truth_on_grid(truth, cube)
    preds, truths, valid = _stack_windows(methods, tr, windows, patch, landsat["clear"])
    rows = {}
    for name, p in preds.items():
        m = evaluate(p, truths, valid)
        rows[name] = {
            "PSNR": m["psnr"],
            "SSIM": m["ssim"],
            "SAM (deg)": m["sam"],
            "NRMSE": m["nrmse"],
            "NDVI r": m["ndvi_r"],
            **{f"PSNR {b}": m[f"psnr_{b}"] for b in REFLECTANCE_BANDS},
            **{f"SSIM {b}": m[f"ssim_{b}"] for b in REFLECTANCE_BANDS},
            **{f"NRMSE {b}": m[f"nrmse_{b}"] for b in REFLECTANCE_BANDS},
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    details = {
        "windows": int(len(windows)),
        "pixels": int(valid.sum()),
        "split": split,
        "fitted_linear": fitted.to_dict(),
    }
    return table, details


def interior_mask(truth: xr.Dataset, like: xr.Dataset | xr.DataArray, *, margin: int = 3) -> xr.DataArray:
    """Pixels of ``like``'s grid inside one land parcel: no field or land-cover edge within
    ``margin`` 10 m pixels, and not water, road or building.

    NDVI at a sharp edge mixes 10 m red with 20 m (Sentinel-2) or 30 m (Landsat) NIR, and NDVI
    of water divides noise by a small sum: errors there measure resolution, not gap filling.
    Scoring interiors separately shows what the time axis itself gains.
    """
    from scipy import ndimage

    lc = truth["landcover"].values.astype(np.int32)
    fid = truth["field_id"].values.astype(np.int64) if "field_id" in truth else np.zeros_like(lc)
    label = lc * 1_000_000 + fid
    size = 2 * margin + 1
    same = ndimage.minimum_filter(label, size=size, mode="nearest") == ndimage.maximum_filter(
        label, size=size, mode="nearest"
    )
    meanings = str(truth["landcover"].attrs.get("flag_meanings", "")).split()
    values = list(truth["landcover"].attrs.get("flag_values", []))
    excluded = [v for v, m in zip(values, meanings) if m in ("water", "road", "building")]
    ok = same & ~np.isin(lc, excluded)
    mask = xr.DataArray(ok, dims=("y", "x"), coords={"y": truth["y"].values, "x": truth["x"].values})
    return mask.reindex(y=like["y"].values, x=like["x"].values, method="nearest", tolerance=1.0, fill_value=False)


def land_mask(truth: xr.Dataset, like: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """Pixels of ``like``'s grid that are not water in the truth's land cover.

    NDVI of water is a ratio of two small reflectances: a small error in either swings it far,
    so water pixels (a few percent of the scene) can carry a large share of the squared error.
    """
    lc = truth["landcover"].values
    meanings = str(truth["landcover"].attrs.get("flag_meanings", "")).split()
    values = list(truth["landcover"].attrs.get("flag_values", []))
    water = [v for v, m in zip(values, meanings) if m == "water"]
    mask = xr.DataArray(~np.isin(lc, water), dims=("y", "x"), coords={"y": truth["y"].values, "x": truth["x"].values})
    return mask.reindex(y=like["y"].values, x=like["x"].values, method="nearest", tolerance=1.0, fill_value=False)


def _subsample(obj: xr.Dataset | xr.DataArray, step: int) -> Any:
    return obj.isel(y=slice(step // 2, None, step), x=slice(step // 2, None, step)) if step > 1 else obj


def ndvi_observations(
    s2: xr.Dataset,
    landsat_raw: xr.Dataset,
    landsat_harmonized: xr.Dataset,
    *,
    pixel_step: int = 4,
    weights: bool = True,
    weight_window: int = 3,
    weight_scale: float = 0.02,
    sharpen_s2_nir: bool | None = None,
) -> dict[str, xr.DataArray]:
    """Clear-sky NDVI observations of each sensor combination, computed once, in memory.

    Keys: ``"S2 only"``, ``"S2 + harmonized Landsat"``, ``"S2 + raw Landsat"``; each masked to
    clear observations and sorted in time with a ``sensor`` coordinate, as
    :func:`harmonize.timeseries.fuse` would give. Every ``pixel_step``-th pixel in y and x is
    kept: time series are per pixel, so a regular subsample estimates the same errors at a
    fraction of the reads.

    With ``weights`` (the default, as the time-series stage does), the fused combinations carry
    a ``weight`` coordinate ``(time, y, x)``: :func:`harmonize.timeseries.observation_weights`
    with the heterogeneity measured on the full-resolution Sentinel-2 observations, then
    subsampled like the observations. :func:`gapfill_table` uses it.

    With ``sharpen_s2_nir`` (default: :class:`harmonize.timeseries.TimeSeriesConfig`'s, as
    the time-series stage does), Sentinel-2's nir is sharpened to 10 m at full resolution
    (:func:`harmonize.timeseries.sharpen_nir`) before NDVI and the subsample.
    """
    import dask

    from harmonize.timeseries import TimeSeriesConfig, heterogeneity, observation_weights, sharpen_nir

    if sharpen_s2_nir is None:
        sharpen_s2_nir = TimeSeriesConfig().sharpen_s2_nir
    if sharpen_s2_nir:
        s2 = sharpen_nir(s2[[v for v in ("blue", "green", "red", "nir", "clear") if v in s2.data_vars]])

    def obs(cube: xr.Dataset) -> xr.DataArray:
        cube = _subsample(cube, pixel_step)
        nd = ndvi(cube.where(cube["clear"])) if "clear" in cube else ndvi(cube)
        keep = [c for c in ("sensor",) if c in nd.coords]
        nd = nd.drop_vars([c for c, v in nd.coords.items() if "time" in v.dims and c != "time" and c not in keep])
        return nd.assign_coords(time=[_day(t) for t in nd["time"].values])

    lazy = [obs(s2), obs(landsat_raw), obs(landsat_harmonized)]
    if weights:
        full = ndvi(s2.where(s2["clear"])) if "clear" in s2 else ndvi(s2)
        lazy.append(_subsample(heterogeneity(full, window=weight_window), pixel_step))
    # One compute for all, so the Sentinel-2 chunks are read once.
    s2_obs, raw_obs, harm_obs, *het = dask.compute(*lazy)

    def both(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
        out = xr.concat([a, b], dim="time", coords="minimal", compat="override").sortby("time")
        if het:
            w = observation_weights(out, scale=weight_scale, window=weight_window, het=het[0])
            out = out.assign_coords(weight=(out.dims, w.values))
        return out

    return {
        "S2 only": s2_obs,
        "S2 + harmonized Landsat": both(s2_obs, harm_obs),
        "S2 + raw Landsat": both(s2_obs, raw_obs),
    }


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
    tr = truth_on_grid(truth, first)
    truth_ndvi = ndvi(tr).astype("float32").compute()
    # Only the static maps are needed: loading the whole truth (every band, every date) was
    # the table's slowest step.
    static = truth[[v for v in ("landcover", "field_id") if v in truth.data_vars]]
    static = static.load()
    interior = interior_mask(static, first, margin=interior_margin).values if interior_margin else None
    land = land_mask(static, first).values
    start = pd.Timestamp(first["time"].values.min()).normalize()
    end = pd.Timestamp(first["time"].values.max()).normalize()
    rows: list[dict[str, Any]] = []
    filled_all: dict[str, dict[str, xr.DataArray]] = {}
    for method in methods:
        ests = {}
        for combo, obs in observations.items():
            kw = {**defaults, **(options or {}).get(method, {})}
            w = (weights or {}).get(combo)
            if w is None and "weight" in obs.coords:
                w = obs["weight"]
                obs = obs.drop_vars("weight")
            elif "weight" in obs.coords:
                obs = obs.drop_vars("weight")
            filled = gap_fill(
                obs, method=method, freq=freq, max_gap=max_gap, start=start, end=end, weights=w, **kw
            )
            drop = [c for c, v in filled.coords.items() if "time" in v.dims and c != "time"]
            ests[combo] = filled.drop_vars(drop).compute()
        filled_all[method] = ests
        t_axis = next(iter(ests.values()))["time"].values
        tru = truth_ndvi.interp(time=t_axis).values
        common = np.isfinite(tru)
        for e in ests.values():
            common &= np.isfinite(e.values)
        inner = common & interior[None] if interior is not None else None
        on_land = common & land[None]
        total = np.isfinite(tru).sum()
        for combo, e in ests.items():
            diff = e.values - tru
            filled_here = np.isfinite(e.values) & np.isfinite(tru)
            rows.append(
                {
                    "method": method,
                    "inputs": combo,
                    "NDVI RMSE": float(np.sqrt(np.mean(diff[common] ** 2))) if common.any() else float("nan"),
                    "NDVI MAE": float(np.mean(np.abs(diff[common]))) if common.any() else float("nan"),
                    "NDVI RMSE interior": (
                        float(np.sqrt(np.mean(diff[inner] ** 2))) if inner is not None and inner.any() else float("nan")
                    ),
                    "NDVI RMSE land": float(np.sqrt(np.mean(diff[on_land] ** 2))) if on_land.any() else float("nan"),
                    "coverage": float(filled_here.sum() / total) if total else 0.0,
                    "pixel-dates": int(common.sum()),
                }
            )
    return pd.DataFrame(rows), filled_all


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
    rows: dict[str, xr.DataArray] = {"Sentinel-2": s2}
    for combo, obs in observations.items():
        if combo == "S2 only" or "sensor" not in obs.coords:
            continue
        other = np.asarray([str(v) != "sentinel-2" for v in obs["sensor"].values])
        rows[combo.removeprefix("S2 + ")] = obs.isel(time=np.flatnonzero(other))
    static = truth[[v for v in ("landcover", "field_id") if v in truth.data_vars]].load()
    interior = interior_mask(static, s2, margin=interior_margin).values
    land = land_mask(static, s2).values
    # read once for every sensor (interp of the lazy truth would read it again per row)
    truth_ndvi = ndvi(truth_on_grid(truth, s2)).astype("float32").compute()
    out = []
    for name, obs in rows.items():
        obs = obs.drop_vars([c for c in obs.coords if c not in obs.dims])
        tru = truth_ndvi.interp(time=obs["time"].values).values
        diff = np.asarray(obs.values) - tru
        ok = np.isfinite(diff)

        def rmse(mask: np.ndarray) -> float:
            d = diff[ok & mask[None]]
            return float(np.sqrt(np.mean(d**2))) if d.size else float("nan")

        everywhere = np.ones(land.shape, bool)
        out.append(
            {
                "observations": name,
                "NDVI RMSE": rmse(everywhere),
                "bias": float(diff[ok].mean()) if ok.any() else float("nan"),
                "NDVI RMSE land": rmse(land),
                "NDVI RMSE interior": rmse(interior),
                "pixel-dates": int(ok.sum()),
            }
        )
    return pd.DataFrame(out).set_index("observations")


def clear_observation_gain(s2: xr.Dataset, landsat: xr.Dataset) -> dict[str, float]:
    """Clear observations per pixel per year: Sentinel-2 alone versus fused with Landsat."""
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
    """
    s2_days = {_day(t): i for i, t in enumerate(s2["time"].values)}
    raw, harm, ref = [], [], []
    h_times = {_day(t): i for i, t in enumerate(landsat_harmonized["time"].values)}
    for j, t in enumerate(landsat_raw["time"].values):
        d = _day(t)
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
