"""Harmonization against truth: each way of making Landsat Sentinel-2-like, scored on held-out windows.

:func:`harmonization_table` scores Landsat resampled alone, + HLS bandpass, + a fitted linear
bandpass and any model outputs against the truth on the pair index's held-out test blocks
(PSNR, SSIM, SAM, NRMSE per band, NDVI r). :func:`test_windows`, :func:`train_block_mask` and
:func:`index_patch_size` read the pair index's windows and splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from harmonize.bandpass import LinearAdjustment, fit_linear_adjustment, hls_adjust
from harmonize.bands import REFLECTANCE_BANDS
from harmonize.metrics import evaluate
from pipelines.evaluation.truth import calendar_day, sensor_part, truth_on_grid

__all__ = ["index_patch_size", "test_windows", "train_block_mask", "harmonization_table"]


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
    truth: xr.Dataset,
    windows: pd.DataFrame,
    patch: int,
    landsat_clear: xr.DataArray,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every method's windows, the truth's and Landsat's clear mask, as ``[window, band, y, x]``."""
    import dask

    # every window of every array lazily first, then one computation: each computation plans
    # the cubes' whole graphs, which cost far more than reading the windows
    lazy: dict[str, list[Any]] = {k: [] for k in arrays}
    truths, valids = [], []
    for r in windows.itertuples():
        ys, xs = slice(int(r.y0), int(r.y0) + patch), slice(int(r.x0), int(r.x0) + patch)
        lt = np.datetime64(pd.Timestamp(r.landsat_time).to_datetime64(), "ns")
        t_truth = truth.sel(time=calendar_day(r.s2_time))[list(REFLECTANCE_BANDS)].isel(y=ys, x=xs)
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


def _scored_windows(index: pd.DataFrame, split: str, max_windows: int | None) -> pd.DataFrame:
    """The ``split`` windows, at most ``max_windows`` of them evenly spaced."""
    windows = test_windows(index, split)
    if windows.empty:
        raise ValueError(f"the pair index has no {split!r} windows to score")
    if max_windows and len(windows) > max_windows:
        windows = windows.iloc[np.linspace(0, len(windows) - 1, max_windows).round().astype(int)]
    return windows


def _fit_on_training_blocks(cube: xr.Dataset, index: pd.DataFrame, patch: int) -> LinearAdjustment:
    """A linear bandpass fitted on same-day pairs inside the training blocks only."""
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
    windows = _scored_windows(index, split, max_windows)
    patch = index_patch_size(index)
    landsat = sensor_part(cube, "landsat")
    if fitted is None:
        fitted = _fit_on_training_blocks(cube, index, patch)
    methods = {**_baselines(cube, landsat, fitted), **predictions}
    tr = truth_on_grid(truth, cube)
    preds, truths, valid = _stack_windows(methods, tr, windows, patch, landsat["clear"])
    rows = {name: _table_row(evaluate(p, truths, valid)) for name, p in preds.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    details = {
        "windows": int(len(windows)),
        "pixels": int(valid.sum()),
        "split": split,
        "fitted_linear": fitted.to_dict(),
    }
    return table, details
