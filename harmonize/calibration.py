"""Calibration of predictive spread: coverage of the ±kσ intervals and a fitted σ scale.

MC-dropout and ensembles (:func:`harmonize.infer.super_resolve` with ``uncertainty=``) give a
``<band>_std``. It is calibrated when the truth falls within ±1σ of the mean about 68.3 % of
the time and within ±2σ about 95.4 % (Gaussian errors). :func:`coverage` measures that;
:func:`fit_scale` fits one factor per band on validation windows so that ``scale * std``
covers as it should; :func:`apply_scale` rescales the ``<band>_std`` of a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["NOMINAL", "coverage", "fit_scale", "needs_recalibration", "apply_scale"]

#: Coverage of ±1σ and ±2σ for Gaussian errors.
NOMINAL: dict[int, float] = {k: math.erf(k / math.sqrt(2.0)) for k in (1, 2)}


def _z(mean: Any, std: Any, truth: Any, mask: Any | None) -> np.ndarray:
    """``|truth - mean| / std`` as ``[pixels, bands]`` over valid pixels (std floored at 1e-12)."""
    m = np.asarray(mean, np.float64)
    s = np.asarray(std, np.float64)
    t = np.asarray(truth, np.float64)
    if m.ndim == 3:
        m, s, t = m[None], s[None], t[None]
    valid = np.isfinite(m).all(1) & np.isfinite(s).all(1) & np.isfinite(t).all(1)
    if mask is not None:
        mk = np.asarray(mask, bool)
        valid &= np.broadcast_to(mk[None] if mk.ndim == 2 else mk, valid.shape)
    z = np.abs(t - m) / np.maximum(s, 1e-12)
    return np.moveaxis(z, 1, -1)[valid]


def coverage(mean: Any, std: Any, truth: Any, mask: Any | None = None) -> dict[str, Any]:
    """Fraction of valid pixels whose truth lies within ±1σ and ±2σ of the mean.

    Parameters
    ----------
    mean, std, truth
        ``[bands, y, x]`` or ``[n, bands, y, x]`` arrays.
    mask
        Optional ``[y, x]`` / ``[n, y, x]`` validity.

    Returns
    -------
    dict
        ``cov1``, ``cov2`` (all bands), ``cov1_bands``, ``cov2_bands`` (lists), ``nominal1``,
        ``nominal2`` and ``n`` (pixels).
    """
    z = _z(mean, std, truth, mask)
    out: dict[str, Any] = {"n": int(len(z))}
    for k in (1, 2):
        out[f"cov{k}"] = float((z <= k).mean()) if len(z) else float("nan")
        out[f"cov{k}_bands"] = [float(v) for v in (z <= k).mean(axis=0)] if len(z) else []
        out[f"nominal{k}"] = NOMINAL[k]
    return out


def needs_recalibration(cov: dict[str, Any], tolerance: float = 0.05) -> bool:
    """Whether ±1σ or ±2σ coverage is off its nominal value by more than ``tolerance``."""
    return any(abs(cov[f"cov{k}"] - NOMINAL[k]) > tolerance for k in (1, 2))


def fit_scale(mean: Any, std: Any, truth: Any, mask: Any | None = None) -> np.ndarray:
    """One factor per band such that ``scale * std`` covers the truth at the nominal rates.

    The factor is the mean of ``q1 / 1`` and ``q2 / 2``, with ``qk`` the quantile of ``|z|`` at
    the nominal ±kσ coverage: exact for Gaussian errors of any mis-scaled σ, and a compromise
    between the two intervals otherwise. Fit it on validation windows, never on the test ones.
    """
    z = _z(mean, std, truth, mask)
    if len(z) == 0:
        raise ValueError("no valid pixels to fit a σ scale on")
    q1 = np.quantile(z, NOMINAL[1], axis=0)
    q2 = np.quantile(z, NOMINAL[2], axis=0)
    return 0.5 * (q1 + q2 / 2.0)


def apply_scale(ds: Any, scale: Sequence[float], bands: Sequence[str]) -> Any:
    """The dataset with each ``<band>_std`` multiplied by its fitted factor."""
    return ds.assign({f"{b}_std": ds[f"{b}_std"] * float(s) for b, s in zip(bands, scale, strict=True)})
