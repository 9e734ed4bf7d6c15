"""Image-quality metrics of harmonized reflectance against a reference, on valid pixels only.

All functions take numpy arrays of reflectance shaped ``[bands, y, x]`` or ``[n, bands, y, x]``
(a batch of patches) and an optional boolean ``mask`` shaped ``[y, x]`` or ``[n, y, x]`` that is
``True`` where a pixel is valid. Pixels that are NaN in either image are invalid as well.

Conventions
-----------
- ``data_range`` (PSNR, SSIM) defaults to 1.0: reflectance is on a 0-1 scale, so an RMSE of 0.01
  reflectance is a PSNR of 40 dB.
- SAM is the mean spectral angle in degrees over valid pixels (0 for identical spectra; blind to
  a per-pixel brightness scale).
- ERGAS is ``100 * ratio * sqrt(mean_b (RMSE_b / mean_b)^2)`` with ``ratio`` the ratio of the
  high to the low pixel size (10 m / 30 m = 1/3 by default), ``mean_b`` the reference's mean.
- NRMSE is the RMSE divided by the reference's mean (per band, and over all bands together).
- NDVI agreement uses the red and nir bands (``(nir - red) / (nir + red)``): mean absolute error
  and Pearson r over valid pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from harmonize.bands import REFLECTANCE_BANDS

__all__ = [
    "psnr",
    "ssim",
    "sam",
    "ergas",
    "rmse",
    "nrmse",
    "ndvi",
    "ndvi_agreement",
    "evaluate",
    "evaluate_table",
    "consistency",
    "correctness",
    "correctness_map",
    "CORRECTNESS_CLASSES",
]


def _prepare(pred: Any, target: Any, mask: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return float64 ``[n, b, y, x]`` arrays and a ``[n, y, x]`` validity mask."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    if p.ndim == 3:
        p, t = p[None], t[None]
    if p.ndim != 4:
        raise ValueError(f"expected [bands, y, x] or [n, bands, y, x], got {p.shape}")
    valid = np.isfinite(p).all(axis=1) & np.isfinite(t).all(axis=1)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.ndim == 2:
            m = m[None]
        valid &= np.broadcast_to(m, valid.shape)
    return p, t, valid


def _pixels(p: np.ndarray, t: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid pixels as ``[pixels, bands]``."""
    pp = np.moveaxis(p, 1, -1)[valid]
    tt = np.moveaxis(t, 1, -1)[valid]
    return pp, tt


def _psnr_from_mse(mse: np.ndarray | float, data_range: float) -> np.ndarray | float:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / np.asarray(mse))


def rmse(pred: Any, target: Any, mask: Any | None = None) -> np.ndarray:
    """Per-band root-mean-square error over valid pixels (``[bands]``)."""
    pp, tt = _pixels(*_prepare(pred, target, mask))
    if len(pp) == 0:
        return np.full(pp.shape[1], np.nan)
    return np.sqrt(np.mean((pp - tt) ** 2, axis=0))


def nrmse(pred: Any, target: Any, mask: Any | None = None) -> tuple[np.ndarray, float]:
    """RMSE divided by the reference mean: ``(per band [bands], all bands together)``."""
    pp, tt = _pixels(*_prepare(pred, target, mask))
    if len(pp) == 0:
        return np.full(pp.shape[1], np.nan), float("nan")
    per_band = np.sqrt(np.mean((pp - tt) ** 2, axis=0)) / np.mean(tt, axis=0)
    overall = float(np.sqrt(np.mean((pp - tt) ** 2)) / np.mean(tt))
    return per_band, overall


def psnr(pred: Any, target: Any, mask: Any | None = None, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all bands of the valid pixels (inf if identical)."""
    pp, tt = _pixels(*_prepare(pred, target, mask))
    if len(pp) == 0:
        return float("nan")
    return float(_psnr_from_mse(np.mean((pp - tt) ** 2), data_range))


def ssim(
    pred: Any, target: Any, mask: Any | None = None, *, data_range: float = 1.0, per_band: bool = False
) -> float | np.ndarray:
    """Structural similarity (scikit-image, 7x7 uniform window) averaged over valid pixels.

    Each band of each image is scored separately; invalid pixels are set to the reference's
    valid mean in both images before windows are formed (so a window touching the mask edge sees
    a flat fill, identical in both), and the SSIM map is averaged over valid pixels at least 3
    pixels from the image border (without a mask this equals scikit-image's mean SSIM).

    Returns
    -------
    float or ndarray
        The mean over bands, or one value per band with ``per_band=True``.
    """
    from skimage.metrics import structural_similarity

    p, t, valid = _prepare(pred, target, mask)
    n, b = p.shape[:2]
    sums = np.zeros(b)
    count = 0
    win = min(7, *(s - (1 - s % 2) for s in p.shape[2:]))
    if win < 3:
        raise ValueError(f"images of {p.shape[2:]} pixels are too small for SSIM")
    pad = (win - 1) // 2
    # Like scikit-image's mean SSIM, leave out the border where the window is incomplete.
    interior = np.zeros(p.shape[2:], dtype=bool)
    interior[pad : p.shape[2] - pad, pad : p.shape[3] - pad] = True
    for i in range(n):
        v = valid[i]
        scored = v & interior
        if not scored.any():
            continue
        count += int(scored.sum())
        for j in range(b):
            fill = t[i, j][v].mean()
            pi = np.where(v, p[i, j], fill)
            ti = np.where(v, t[i, j], fill)
            _, smap = structural_similarity(pi, ti, data_range=data_range, win_size=win, full=True)
            sums[j] += smap[scored].sum()
    if count == 0:
        out = np.full(b, np.nan)
    else:
        out = sums / count
    return out if per_band else float(out.mean())


def sam(pred: Any, target: Any, mask: Any | None = None) -> float:
    """Mean spectral angle (degrees) between predicted and reference spectra of valid pixels.

    Uses ``2 * atan2(|a - b|, |a + b|)`` of the unit spectra, exact (0) for identical spectra.
    Pixels where either spectrum is all zero are skipped.
    """
    pp, tt = _pixels(*_prepare(pred, target, mask))
    na = np.linalg.norm(pp, axis=1)
    nb = np.linalg.norm(tt, axis=1)
    ok = (na > 0) & (nb > 0)
    if not ok.any():
        return float("nan")
    a = pp[ok] / na[ok, None]
    b = tt[ok] / nb[ok, None]
    ang = 2.0 * np.arctan2(np.linalg.norm(a - b, axis=1), np.linalg.norm(a + b, axis=1))
    return float(np.degrees(ang).mean())


def ergas(pred: Any, target: Any, mask: Any | None = None, *, ratio: float = 10.0 / 30.0) -> float:
    """ERGAS: ``100 * ratio * sqrt(mean over bands of (RMSE_b / mean_b) ** 2)`` (lower is better).

    Parameters
    ----------
    ratio
        High-resolution pixel size over low-resolution pixel size (10 m / 30 m by default).
    """
    per_band, _ = nrmse(pred, target, mask)
    return float(100.0 * ratio * np.sqrt(np.mean(per_band**2)))


def ndvi(red: Any, nir: Any) -> np.ndarray:
    """NDVI ``(nir - red) / (nir + red)``; NaN where the denominator is 0."""
    red = np.asarray(red, dtype=np.float64)
    nir = np.asarray(nir, dtype=np.float64)
    den = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, (nir - red) / den, np.nan)


def ndvi_agreement(
    pred: Any,
    target: Any,
    mask: Any | None = None,
    *,
    bands: Sequence[str] = REFLECTANCE_BANDS,
) -> dict[str, float]:
    """NDVI mean absolute error and Pearson r between prediction and reference (valid pixels)."""
    p, t, valid = _prepare(pred, target, mask)
    r, n = list(bands).index("red"), list(bands).index("nir")
    a = ndvi(p[:, r], p[:, n])[valid]
    b = ndvi(t[:, r], t[:, n])[valid]
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) == 0:
        return {"ndvi_mae": float("nan"), "ndvi_r": float("nan")}
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        corr = 1.0 if np.array_equal(a, b) else float("nan")
    else:
        corr = float(np.corrcoef(a, b)[0, 1])
    return {"ndvi_mae": float(np.abs(a - b).mean()), "ndvi_r": corr}


def evaluate(
    pred: Any,
    target: Any,
    mask: Any | None = None,
    *,
    bands: Sequence[str] = REFLECTANCE_BANDS,
    data_range: float = 1.0,
    ratio: float = 10.0 / 30.0,
    with_ssim: bool = True,
) -> dict[str, float]:
    """All metrics in one flat dict: overall values plus ``<metric>_<band>`` per band.

    Keys: ``psnr ssim sam ergas rmse nrmse mae bias ndvi_mae ndvi_r n_valid`` and, per band,
    ``psnr_<band> ssim_<band> rmse_<band> nrmse_<band> mae_<band> bias_<band>``.
    """
    p, t, valid = _prepare(pred, target, mask)
    bands = list(bands)
    if len(bands) != p.shape[1]:
        raise ValueError(f"{len(bands)} band names for {p.shape[1]} bands")
    pp, tt = _pixels(p, t, valid)
    out: dict[str, float] = {"n_valid": float(len(pp))}
    if len(pp) == 0:
        return {**out, **{k: float("nan") for k in ("psnr", "ssim", "sam", "ergas", "rmse", "nrmse",
                                                    "mae", "bias", "ndvi_mae", "ndvi_r")}}
    err = pp - tt
    mse_b = np.mean(err**2, axis=0)
    rmse_b = np.sqrt(mse_b)
    nrmse_b, nrmse_all = nrmse(p, t, valid)
    out["psnr"] = float(_psnr_from_mse(mse_b.mean(), data_range))
    ssim_b = ssim(p, t, valid, data_range=data_range, per_band=True) if with_ssim else None
    out["ssim"] = float(np.mean(ssim_b)) if ssim_b is not None else float("nan")
    out["sam"] = sam(p, t, valid)
    out["ergas"] = float(100.0 * ratio * np.sqrt(np.mean(nrmse_b**2)))
    out["rmse"] = float(np.sqrt(mse_b.mean()))
    out["nrmse"] = nrmse_all
    out["mae"] = float(np.abs(err).mean())
    out["bias"] = float(err.mean())
    if "red" in bands and "nir" in bands:
        out.update(ndvi_agreement(p, t, valid, bands=bands))
    for j, name in enumerate(bands):
        out[f"psnr_{name}"] = float(_psnr_from_mse(mse_b[j], data_range))
        if ssim_b is not None:
            out[f"ssim_{name}"] = float(ssim_b[j])
        out[f"rmse_{name}"] = float(rmse_b[j])
        out[f"nrmse_{name}"] = float(nrmse_b[j])
        out[f"mae_{name}"] = float(np.abs(err[:, j]).mean())
        out[f"bias_{name}"] = float(err[:, j].mean())
    return out


def evaluate_table(
    pred: Any,
    target: Any,
    mask: Any | None = None,
    *,
    bands: Sequence[str] = REFLECTANCE_BANDS,
    data_range: float = 1.0,
    ratio: float = 10.0 / 30.0,
):  # noqa: ANN201 - pandas is imported lazily
    """The per-band metrics of :func:`evaluate` as a DataFrame: one row per band plus ``"all"``.

    Columns ``psnr ssim rmse nrmse mae bias``; the ``"all"`` row adds ``sam ergas ndvi_mae ndvi_r``.
    """
    import pandas as pd

    res = evaluate(pred, target, mask, bands=bands, data_range=data_range, ratio=ratio)
    cols = ["psnr", "ssim", "rmse", "nrmse", "mae", "bias"]
    rows = {b: {c: res.get(f"{c}_{b}", np.nan) for c in cols} for b in bands}
    rows["all"] = {c: res[c] for c in cols + ["sam", "ergas", "ndvi_mae", "ndvi_r"] if c in res}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------------------------------------
# Consistency with the low-resolution input and per-pixel correctness (after opensr-test)


def _block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of the last two axes (NaN-aware, edges cropped)."""
    h, w = (a.shape[-2] // factor) * factor, (a.shape[-1] // factor) * factor
    a = a[..., :h, :w]
    shape = a.shape[:-2] + (h // factor, factor, w // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a.reshape(shape), axis=(-3, -1))


def _on_blocks(a: np.ndarray, phase: Any, factor: int) -> np.ndarray:
    """``a`` (``[n, b, y, x]``) cropped so that each image's blocks start at its ``phase``: one
    ``(row, col)`` for all, or one per image (``[n, 2]``); all cropped to one size."""
    ph = np.broadcast_to(np.asarray(phase, int) % factor, (a.shape[0], 2))
    if not ph.any():
        return a
    h = (a.shape[-2] - int(ph[:, 0].max())) // factor * factor
    w = (a.shape[-1] - int(ph[:, 1].max())) // factor * factor
    return np.stack([a[i, :, r : r + h, c : c + w] for i, (r, c) in enumerate(ph)])


def consistency(
    pred: Any,
    lowres: Any,
    mask: Any | None = None,
    *,
    factor: int = 3,
    shift_band: int = 3,
    pixel_size: float = 10.0,
    phase: Any = (0, 0),
    shift_images: int | None = None,
) -> dict[str, float]:
    """Consistency of a 10 m output with the 30 m input it came from (no reference needed).

    Both images are averaged over ``factor x factor`` blocks (the 30 m pixels) when ``lowres`` is
    on the output's grid (the input resampled to 10 m); a ``lowres`` already ``factor`` times
    coarser is compared as it is. Pass a bandpass-adjusted input to leave the intended
    sensor-to-sensor change out of the error.

    Parameters
    ----------
    phase
        Where the Landsat pixels start in each image (``(row, col)`` for all, or ``[n, 2]``; see
        :func:`harmonize.lowfreq.grid_phase`): the blocks are those pixels, not blocks from the
        image's corner. Only for a ``lowres`` on the output grid.
    shift_images
        Estimate the residual shift on at most this many images (evenly spread; all by default):
        each costs a sub-pixel registration.

    Returns
    -------
    dict
        ``reflectance_mae`` (mean absolute 30 m difference), ``reflectance_pbias`` (percent bias
        of the output against the input), ``spectral_angle`` (mean SAM in degrees at 30 m),
        ``shift_row``/``shift_col`` (median residual shift in output pixels, band ``shift_band``,
        measured per image by :func:`harmonize.coregister.estimate_shift_pair` on the block-mean
        images), ``shift_px`` (its magnitude) and ``shift_m`` (in metres at ``pixel_size``).
    """
    from harmonize.coregister.pair import estimate_shift_pair
    from harmonize.errors import HarmonizeError

    p = np.asarray(pred, dtype=np.float64)
    q = np.asarray(lowres, dtype=np.float64)
    p = p[None] if p.ndim == 3 else p
    q = q[None] if q.ndim == 3 else q
    if mask is not None:
        m = np.asarray(mask, bool)
        m = m[None] if m.ndim == 2 else m
        p = np.where(m[:, None], p, np.nan)
        if q.shape == p.shape:
            q = np.where(m[:, None], q, np.nan)
    if q.shape[-2:] == p.shape[-2:]:
        pl = _block_mean(_on_blocks(p, phase, factor), factor)
        ql = _block_mean(_on_blocks(q, phase, factor), factor)
    else:
        pl = _block_mean(p, factor)
        ql = q[..., : pl.shape[-2], : pl.shape[-1]]
    if ql.shape != pl.shape:
        raise ValueError(f"input {q.shape} is neither on the output grid {p.shape} nor {factor}x coarser")
    ok = np.isfinite(pl).all(axis=1) & np.isfinite(ql).all(axis=1)
    a, b = np.moveaxis(pl, 1, -1)[ok], np.moveaxis(ql, 1, -1)[ok]
    out = {
        "reflectance_mae": float(np.abs(a - b).mean()) if len(a) else float("nan"),
        "reflectance_pbias": float(100.0 * (a - b).sum() / b.sum()) if len(a) else float("nan"),
        "spectral_angle": sam(pl, ql, ok),
    }
    shifts = []
    chosen = range(len(pl))
    if shift_images is not None and len(pl) > shift_images:
        chosen = np.unique(np.linspace(0, len(pl) - 1, max(1, shift_images)).round().astype(int))
    for i in chosen:
        try:
            s = estimate_shift_pair(pl[i, shift_band], ql[i, shift_band], reference_sigma=0.5,
                                    moving_sigma=0.5, max_shift=3.0, min_pixels=64)
        except HarmonizeError:
            continue
        shifts.append((s.row * factor, s.col * factor))
    s = np.median(np.array(shifts), axis=0) if shifts else np.array([np.nan, np.nan])
    out.update(shift_row=float(s[0]), shift_col=float(s[1]), shift_px=float(np.hypot(*s)))
    out["shift_m"] = out["shift_px"] * pixel_size
    return out


#: Per-pixel classes of :func:`correctness_map`.
CORRECTNESS_CLASSES = ("improvement", "omission", "hallucination")


def correctness_map(
    pred: Any,
    lowres: Any,
    target: Any,
    mask: Any | None = None,
    *,
    gamma: tuple[float, float, float] = (0.8, 0.8, 0.4),
    min_distance: float = 0.005,
) -> np.ndarray:
    """Per-pixel class: 0 improvement, 1 omission, 2 hallucination, -1 unresolved or invalid.

    After the opensr-test protocol: with L1 distances over bands ``d_ref = |input - truth|``,
    ``d_im = |output - truth|`` and ``d_om = |output - input|`` (``lowres`` on the output grid),
    each pixel is placed at ``(a, b) = (d_im, d_om) / d_ref`` (``d_ref`` floored at
    ``min_distance``): the input sits at (1, 0), the truth at (0, 1). With ``H = a + b - 1``,
    the distances to the improvement, omission and hallucination spaces are
    ``a + b (1 - exp(-g_im H))``, ``b + a (1 - exp(-g_om H))`` and ``exp(-g_ha a b)``; the
    nearest wins. Pixels where all three distances are below ``min_distance`` (reflectance) say
    nothing and are unresolved.
    """
    p, t, valid = _prepare(pred, target, mask)
    q, _, valid_q = _prepare(lowres, target, None)
    valid &= valid_q
    d_ref = np.abs(q - t).mean(axis=1)
    d_im = np.abs(p - t).mean(axis=1)
    d_om = np.abs(p - q).mean(axis=1)
    resolved = valid & (np.maximum(np.maximum(d_ref, d_im), d_om) > min_distance)
    ref = np.maximum(d_ref, min_distance)
    a, b = d_im / ref, d_om / ref
    h = a + b - 1.0
    scores = np.stack([
        a + b * (1.0 - np.exp(-gamma[0] * h)),
        b + a * (1.0 - np.exp(-gamma[1] * h)),
        np.exp(-gamma[2] * a * b),
    ])
    cls = np.argmin(scores, axis=0)
    out = np.where(resolved, cls, -1)
    return out[0] if np.asarray(pred).ndim == 3 else out


def correctness(
    pred: Any, lowres: Any, target: Any, mask: Any | None = None, **kwargs: Any
) -> dict[str, float]:
    """Fractions of resolved valid pixels classed improvement / omission / hallucination.

    See :func:`correctness_map` (keyword arguments go to it). Also returns ``unresolved``: the
    fraction of valid pixels where input, output and truth all agree within ``min_distance``.
    """
    cls = correctness_map(pred, lowres, target, mask, **kwargs)
    _, _, valid = _prepare(pred, target, mask)
    n_valid = int(valid.sum())
    n = int((cls >= 0).sum())
    out = {
        name: float((cls == k).sum() / n) if n else float("nan") for k, name in enumerate(CORRECTNESS_CLASSES)
    }
    out["unresolved"] = float(1 - n / n_valid) if n_valid else float("nan")
    return out
