"""Harmonization against truth: each way of making Landsat Sentinel-2-like, scored on held-out windows.

:func:`harmonization_table` scores Landsat resampled alone, + HLS bandpass, + a fitted linear
bandpass and any model outputs against the truth on the pair index's held-out test blocks
(PSNR, SSIM, SAM, NRMSE per band, NDVI r; with ``opensr=True`` also the opensr-test style
consistency with the 30 m input and improvement / omission / hallucination fractions).
:func:`calibration_table` scores the predictive spread of MC-dropout or an ensemble (coverage of
±1σ and ±2σ against truth) on the test windows, recalibrated on validation windows when it is off.
:func:`test_windows`, :func:`train_block_mask` and :func:`index_patch_size` read the pair
index's windows and splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.bandpass import LinearAdjustment, fit_linear_adjustment, hls_adjust
from harmonize.bands import REFLECTANCE_BANDS
from harmonize.metrics import consistency, correctness, evaluate
from pipelines.evaluation.truth import calendar_day, sensor_part, truth_on_grid

__all__ = [
    "index_patch_size",
    "test_windows",
    "train_block_mask",
    "harmonization_table",
    "fit_on_training_blocks",
    "OPENSR_COLUMNS",
    "window_phases",
    "calibration_table",
    "baseline_windows",
    "calibration_windows",
]

#: The opensr-test style columns :func:`harmonization_table` adds with ``opensr=True``.
OPENSR_COLUMNS: tuple[str, ...] = (
    "30 m MAE",
    "30 m pbias %",
    "30 m SAM (deg)",
    "shift (m)",
    "improvement",
    "omission",
    "hallucination",
    "unresolved",
)


def index_patch_size(index: pd.DataFrame, default: int = 256) -> int:
    """The window side (pixels) the pair index was built with.

    Parameters
    ----------
    index
        The pair index; its ``attrs["config"]`` holds the :class:`harmonize.pairs.PairConfig`.
    default
        When the index carries no config.

    Returns
    -------
    int
        ``patch_size`` of the index's config.
    """
    cfg = index.attrs.get("config") or {}
    return int(cfg.get("patch_size", default))


def test_windows(index: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Rows of the pair index in ``split``.

    Parameters
    ----------
    index
        The pair index, with a ``split`` column.
    split
        ``"train"``, ``"val"`` or ``"test"``.

    Returns
    -------
    pandas.DataFrame
        Those rows, renumbered from 0.
    """
    return index[index["split"] == split].reset_index(drop=True)


def train_block_mask(index: pd.DataFrame, shape: tuple[int, int], patch: int | None = None) -> np.ndarray:
    """Boolean ``(y, x)`` mask of the pixels covered by training windows.

    Parameters
    ----------
    index
        The pair index, with ``split``, ``y0`` and ``x0`` columns.
    shape
        The cube's ``(y, x)`` shape.
    patch
        Window side in pixels; by default :func:`index_patch_size`.

    Returns
    -------
    numpy.ndarray
        True where a training window reaches.
    """
    patch = patch or index_patch_size(index)
    mask = np.zeros(shape, bool)
    for r in index[index["split"] == "train"].itertuples():
        mask[int(r.y0) : int(r.y0) + patch, int(r.x0) : int(r.x0) + patch] = True
    return mask


def _stack_windows(
    arrays: Mapping[str, xr.Dataset],
    truth: xr.Dataset | None,
    windows: pd.DataFrame,
    patch: int,
    landsat_clear: xr.DataArray | None,
) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
    """Every method's windows, the truth's and Landsat's clear mask, as ``[window, band, y, x]``
    (``None`` for the truth and the mask without ``truth`` / ``landsat_clear``)."""
    import dask

    # every window of every array lazily first, then one computation: each computation plans
    # the cubes' whole graphs, which cost far more than reading the windows
    lazy: dict[str, list[Any]] = {k: [] for k in arrays}
    truths, valids = [], []
    for r in windows.itertuples():
        ys, xs = slice(int(r.y0), int(r.y0) + patch), slice(int(r.x0), int(r.x0) + patch)
        lt = np.datetime64(pd.Timestamp(r.landsat_time).to_datetime64(), "ns")
        if truth is not None:
            t_truth = truth.sel(time=calendar_day(r.s2_time))[list(REFLECTANCE_BANDS)].isel(y=ys, x=xs)
            truths.append([t_truth[b].data for b in REFLECTANCE_BANDS])
        if landsat_clear is not None:
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
    truth_arr = None if truth is None else np.stack([np.stack([np.asarray(b) for b in w]) for w in truths])
    valid = np.stack([np.asarray(v, bool) for v in valids]) if landsat_clear is not None else None
    return preds, truth_arr, valid


def baseline_windows(
    cube: xr.Dataset,
    index: pd.DataFrame,
    truth: xr.Dataset,
    fitted: LinearAdjustment,
    *,
    split: str = "test",
    max_windows: int | None = 64,
) -> dict[str, Any]:
    """The baselines' windows, the truth's and Landsat's clear mask, read ahead of the model's
    (``baselines=`` of :func:`harmonization_table`; no model needed: the demo reads them while
    training runs).

    Parameters
    ----------
    cube, index, truth, split, max_windows
        As in :func:`harmonization_table`.
    fitted
        The fitted linear adjustment (:func:`fit_on_training_blocks`).

    Returns
    -------
    dict
        ``preds`` (method -> ``[window, band, y, x]``), ``truth``, ``valid``, ``fitted``,
        ``split`` and ``max_windows``.
    """
    windows = _scored_windows(index, split, max_windows)
    landsat = sensor_part(cube, "landsat")
    preds, truths, valid = _stack_windows(
        _baselines(cube, landsat, fitted), truth_on_grid(truth, cube), windows, index_patch_size(index),
        landsat["clear"],
    )
    return {"preds": preds, "truth": truths, "valid": valid, "fitted": fitted, "split": split,
            "max_windows": max_windows}


def _scored_windows(index: pd.DataFrame, split: str, max_windows: int | None) -> pd.DataFrame:
    """The ``split`` windows, at most ``max_windows`` of them evenly spaced."""
    windows = test_windows(index, split)
    if windows.empty:
        raise ValueError(f"the pair index has no {split!r} windows to score")
    if max_windows and len(windows) > max_windows:
        windows = windows.iloc[np.linspace(0, len(windows) - 1, max_windows).round().astype(int)]
    return windows


def fit_on_training_blocks(
    cube: xr.Dataset, index: pd.DataFrame, patch: int | None = None
) -> LinearAdjustment:
    """A linear bandpass fitted on same-day pairs inside the training blocks only.

    The baseline :func:`harmonization_table` scores (``fitted``); fitting it reads every
    same-day pair of whole scenes, the table's largest single cost, so a caller with an idle
    core can fit it beforehand.

    Parameters
    ----------
    cube
        The co-registered cube with both sensors.
    index
        The pair index with its ``split`` column.
    patch
        The index's patch size (default: read from the index).

    Returns
    -------
    harmonize.bandpass.LinearAdjustment
    """
    patch = index_patch_size(index) if patch is None else patch
    shape = (cube.sizes["y"], cube.sizes["x"])
    train_mask = xr.DataArray(train_block_mask(index, shape, patch), dims=("y", "x"))
    masked = cube.assign(clear=cube["clear"] & train_mask)
    return fit_linear_adjustment(masked, max_days=0)


def _baselines(cube: xr.Dataset, landsat: xr.Dataset, fitted: LinearAdjustment) -> dict[str, xr.Dataset]:
    """Landsat as the cube resampled it, + HLS bandpass, + the fitted linear bandpass."""
    resampling = (cube.attrs.get("harmonize_load") or {}).get("resampling", "bilinear")
    if isinstance(resampling, dict):
        resampling = next(iter(resampling.values()), "bilinear")
    return {
        f"Landsat resampled ({resampling})": landsat,
        "+ HLS bandpass": hls_adjust(landsat, to="sentinel-2"),
        "+ fitted linear bandpass": fitted.apply(landsat),
    }


def _table_row(m: Mapping[str, float]) -> dict[str, float]:
    """One method's row of the table from :func:`harmonize.metrics.evaluate`'s figures."""
    return {
        "PSNR": m["psnr"],
        "SSIM": m["ssim"],
        "SAM (deg)": m["sam"],
        "NRMSE": m["nrmse"],
        "NDVI r": m["ndvi_r"],
        **{f"PSNR {b}": m[f"psnr_{b}"] for b in REFLECTANCE_BANDS},
        **{f"SSIM {b}": m[f"ssim_{b}"] for b in REFLECTANCE_BANDS},
        **{f"NRMSE {b}": m[f"nrmse_{b}"] for b in REFLECTANCE_BANDS},
    }


def window_phases(windows: pd.DataFrame, landsat_phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Where the Landsat pixels start in each window (``[n, 2]`` rows and columns, 0-2).

    Parameters
    ----------
    windows
        Rows with ``y0``, ``x0`` (pixel offsets in the cube).
    landsat_phase
        Where they start in the cube (:func:`harmonize.lowfreq.grid_phase`).
    """
    y0 = windows["y0"].to_numpy(int)
    x0 = windows["x0"].to_numpy(int)
    return np.stack([(landsat_phase[0] - y0) % 3, (landsat_phase[1] - x0) % 3], axis=1)


def _opensr_row(
    pred: np.ndarray,
    lowres: np.ndarray,
    reference: np.ndarray,
    truth: np.ndarray,
    valid: np.ndarray,
    phases: np.ndarray,
    shift_images: int | None,
) -> dict[str, float]:
    """Consistency with the bandpass-adjusted input ``reference`` at 30 m, and correctness
    against ``truth`` with ``lowres`` (the input on the 10 m grid) as the starting point."""
    c = consistency(pred, reference, valid, phase=phases, shift_images=shift_images)
    k = correctness(pred, lowres, truth, valid)
    return {
        "30 m MAE": c["reflectance_mae"],
        "30 m pbias %": c["reflectance_pbias"],
        "30 m SAM (deg)": c["spectral_angle"],
        "shift (m)": c["shift_m"],
        **{name: k[name] for name in ("improvement", "omission", "hallucination", "unresolved")},
    }


def harmonization_table(
    cube: xr.Dataset,
    index: pd.DataFrame,
    truth: xr.Dataset,
    predictions: Mapping[str, xr.Dataset],
    *,
    split: str = "test",
    fitted: LinearAdjustment | None = None,
    max_windows: int | None = 64,
    opensr: bool = False,
    landsat_phase: tuple[int, int] = (0, 0),
    shift_images: int | None = 12,
    baselines: Mapping[str, Any] | None = None,
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
    opensr
        Add :data:`OPENSR_COLUMNS`: consistency at 30 m with the HLS-adjusted input (mean
        absolute error, percent bias, spectral angle, residual shift; no truth needed) and the
        fractions of pixels that improve on the input, stay like it or hallucinate, against
        truth (:func:`harmonize.metrics.consistency`, :func:`harmonize.metrics.correctness`).
    landsat_phase
        Where the Landsat pixels start in the cube (:func:`harmonize.lowfreq.grid_phase`): the
        30 m blocks of the consistency are those pixels.
    shift_images
        Windows the residual shift is measured on (evenly spread; None: all).
    baselines
        The baselines' windows read beforehand (:func:`baseline_windows` with the same
        ``split`` and ``max_windows``; its ``fitted`` is used): only ``predictions`` are read here.

    Returns
    -------
    (pandas.DataFrame, dict)
        One row per method: overall PSNR, SSIM, SAM, NRMSE, NDVI r and per-band PSNR (and the
        opensr columns); and the details (window count, the fitted coefficients).
    """
    windows = _scored_windows(index, split, max_windows)
    patch = index_patch_size(index)
    landsat = sensor_part(cube, "landsat")
    if baselines is not None and (baselines["split"], baselines["max_windows"]) == (split, max_windows):
        fitted = baselines["fitted"]
        stacked, _, _ = _stack_windows(predictions, None, windows, patch, None)
        preds = {**baselines["preds"], **stacked}
        truths, valid = baselines["truth"], baselines["valid"]
        methods = dict.fromkeys(preds)
    else:
        if fitted is None:
            fitted = fit_on_training_blocks(cube, index, patch)
        methods = {**_baselines(cube, landsat, fitted), **predictions}
        tr = truth_on_grid(truth, cube)
        preds, truths, valid = _stack_windows(methods, tr, windows, patch, landsat["clear"])
    rows = {name: _table_row(evaluate(p, truths, valid)) for name, p in preds.items()}
    if opensr:
        names = list(methods)
        lowres, reference = preds[names[0]], preds[names[1]]  # resampled, + HLS bandpass
        phases = window_phases(windows, landsat_phase)
        for name, p in preds.items():
            rows[name].update(_opensr_row(p, lowres, reference, truths, valid, phases, shift_images))
    table = pd.DataFrame.from_dict(rows, orient="index")
    details = {
        "windows": int(len(windows)),
        "pixels": int(valid.sum()),
        "split": split,
        "fitted_linear": fitted.to_dict(),
        **({"landsat_phase": [int(v) for v in landsat_phase]} if opensr else {}),
    }
    return table, details


def _window_inputs(
    cube: xr.Dataset, truth: xr.Dataset, windows: pd.DataFrame, patch: int, bands: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs (``bands`` of Landsat), truth and Landsat's clear mask of ``windows``."""
    import dask

    lazy, truths, valids = [], [], []
    for r in windows.itertuples():
        ys, xs = slice(int(r.y0), int(r.y0) + patch), slice(int(r.x0), int(r.x0) + patch)
        lt = np.datetime64(pd.Timestamp(r.landsat_time).to_datetime64(), "ns")
        sel = cube.sel(time=lt).isel(y=ys, x=xs)
        lazy.append([sel[b].data for b in bands])
        valids.append(sel["clear"].data)
        t = truth.sel(time=calendar_day(r.s2_time))[list(REFLECTANCE_BANDS)].isel(y=ys, x=xs)
        truths.append([t[b].data for b in REFLECTANCE_BANDS])
    x, t, v = dask.compute(lazy, truths, valids)
    stack = lambda ws: np.stack([np.stack([np.asarray(b, np.float32) for b in w]) for w in ws])  # noqa: E731
    return stack(x), stack(t), np.stack([np.asarray(m, bool) for m in v])


def _spread(
    member: Mapping[str, Any], x: np.ndarray, valid: np.ndarray, halo: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ``<band>_std`` of one uncertainty method on the windows ``x``."""
    import torch

    from harmonize.infer import predict_array

    # one torch thread: on windows of ~100 px a second one spins (demo: 5 CPU s on one thread,
    # 16-18 on two, same figures)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        y = predict_array(x, member["model"], clear=valid, uncertainty=member["uncertainty"],
                          mc_passes=int(member.get("mc_passes", 8)), device="cpu", halo=halo)
    finally:
        torch.set_num_threads(threads)
    n = y.shape[1] // 2
    return y[:, :n], y[:, n:]


def calibration_windows(
    cube: xr.Dataset,
    index: pd.DataFrame,
    truth: xr.Dataset,
    *,
    max_windows: int | None = 64,
    val_windows: int | None = 32,
) -> dict[str, Any]:
    """The model inputs, truth and clear masks of :func:`calibration_table`'s test windows and
    then its validation windows (no model needed: the demo reads them while training runs).

    Parameters
    ----------
    cube, index, truth, max_windows, val_windows
        As in :func:`calibration_table`.

    Returns
    -------
    dict
        ``x`` (Landsat bands and pan, ``[window, band, y, x]``), ``truth``, ``valid`` (clear,
        finite truth), ``n_test`` (the first windows are the test ones), ``max_windows``,
        ``val_windows``.
    """
    patch = index_patch_size(index)
    test = _scored_windows(index, "test", max_windows)
    val = test_windows(index, "val")
    if val_windows and len(val) > val_windows:
        val = val.iloc[np.linspace(0, len(val) - 1, val_windows).round().astype(int)]
    bands = tuple(REFLECTANCE_BANDS) + (("pan",) if "pan" in cube else ())
    both = pd.concat([test, val], ignore_index=True)
    x, t, v = _window_inputs(cube, truth_on_grid(truth, cube), both, patch, bands)
    v &= np.isfinite(t).all(axis=1)
    return {"x": x, "truth": t, "valid": v, "n_test": len(test), "max_windows": max_windows,
            "val_windows": val_windows}


def calibration_table(
    cube: xr.Dataset,
    index: pd.DataFrame,
    truth: xr.Dataset,
    methods: Mapping[str, Mapping[str, Any]],
    *,
    max_windows: int | None = 64,
    val_windows: int | None = 32,
    tolerance: float = 0.05,
    halo: int | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Coverage of ±1σ and ±2σ against truth for each uncertainty method, recalibrated when off.

    Each method predicts the test windows (and the validation windows) from the windows alone
    (:func:`harmonize.infer.predict_array`, mirror-padded); its coverage on the test windows is
    :func:`harmonize.calibration.coverage`. When ±1σ or ±2σ is off its nominal 68.3 % / 95.4 %
    by more than ``tolerance``, a σ scale per band and interval is fitted on the validation
    windows (:func:`harmonize.calibration.fit_interval_scales`, split-conformal: one factor per
    band cannot fix both intervals of heavy-tailed errors) and the test coverage measured again.

    Parameters
    ----------
    cube, index, truth
        As in :func:`harmonization_table`.
    methods
        Name -> ``{"model": package path, module or a list of them, "uncertainty":
        "mc_dropout" | "ensemble", "mc_passes": n}``.
    max_windows, val_windows
        Caps on the test and validation windows (evenly spaced).
    tolerance
        Coverage error (fraction) above which the spread is recalibrated.
    halo
        Mirror padding of each window (default the model's receptive halo; less is cheaper and
        changes only the windows' edges, alike on validation and test windows).
    inputs
        The windows read beforehand (:func:`calibration_windows` with the same ``max_windows``
        and ``val_windows``).

    Returns
    -------
    (pandas.DataFrame, dict)
        One row per method: ``±1σ``, ``±2σ`` (test, as predicted), ``σ scale`` (mean over bands
        and both intervals, 1 when not recalibrated), ``σ scale ±1σ``, ``σ scale ±2σ`` (mean over
        bands), ``±1σ recalibrated``, ``±2σ recalibrated``; and the details
        (windows, pixels, nominal coverage, per-band figures, scales).
    """
    from harmonize.calibration import NOMINAL, coverage, fit_interval_scales, needs_recalibration

    if inputs is None or (inputs["max_windows"], inputs["val_windows"]) != (max_windows, val_windows):
        inputs = calibration_windows(cube, index, truth, max_windows=max_windows, val_windows=val_windows)
    x, t, v, n = inputs["x"], inputs["truth"], inputs["valid"], inputs["n_test"]
    rows, details = {}, {"windows": n, "val_windows": len(v) - n, "pixels": int(v[:n].sum()), "halo": halo,
                         "nominal": {f"±{k}σ": NOMINAL[k] for k in (1, 2)}, "methods": {}}
    for name, member in methods.items():
        mean, std = _spread(member, x, v, halo)
        if not np.any(std[np.broadcast_to(v[:, None], std.shape)] > 0):
            details["methods"][name] = {"error": "zero spread on every pixel"}
            continue
        cov = coverage(mean[:n], std[:n], t[:n], v[:n])
        rec: dict[str, Any] = {"test": cov, "recalibrated": needs_recalibration(cov, tolerance)}
        scale = np.ones((2, mean.shape[1]))
        after = cov
        if rec["recalibrated"] and not v[n:].any():
            rec["recalibrated"] = False
            rec["note"] = "no clear validation pixels to fit a σ scale on"
        if rec["recalibrated"]:
            scale = fit_interval_scales(mean[n:], std[n:], t[n:], v[n:])
            after = coverage(mean[:n], std[:n], t[:n], v[:n], scales=scale)
            rec.update(scale=scale.tolist(), method="per-band, per-interval split-conformal σ scale",
                       test_after=after)
        std_v = std[:n][np.broadcast_to(v[:n, None], std[:n].shape)]
        rec["median_std"] = float(np.median(std_v)) if std_v.size else float("nan")
        details["methods"][name] = rec
        rows[name] = {"±1σ": cov["cov1"], "±2σ": cov["cov2"], "median σ": rec["median_std"],
                      "σ scale": float(np.mean(scale)), "σ scale ±1σ": float(np.mean(scale[0])),
                      "σ scale ±2σ": float(np.mean(scale[1])), "±1σ recalibrated": after["cov1"],
                      "±2σ recalibrated": after["cov2"]}
    return pd.DataFrame.from_dict(rows, orient="index"), details
