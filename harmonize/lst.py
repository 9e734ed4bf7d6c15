"""10 m land surface temperature: Landsat's 30 m LST sharpened with 10 m reflectance.

Thermal sharpening of the DMS/TsHARP family (Kustas et al. 2003; Agam et al. 2007; Gao et al.
2012): regress the coarse LST on reflectance indices aggregated to the coarse pixels, apply the
regression to the fine indices, and add the coarse residual back so every coarse pixel keeps
its temperature::

    fine = model(indices_10m) + residual_up,   residual = lst_30m - blockmean(model(indices_10m))

``residual_up`` is the residual interpolated bicubically and then corrected per block so that
``blockmean(fine) == lst_30m`` exactly (not only approximately, as a plain interpolated residual
would). The models (``method``):

``"tsharp"``
    TsHARP: one global line in vegetation cover ``fc = 1 - ((ndvi_max - ndvi) /
    (ndvi_max - ndvi_min)) ** 0.625``.
``"global"``
    One global ridge regression on NDVI, NDVI², MNDWI (water), NDBI (built-up/bare) and albedo.
``"local"`` (default)
    The same predictors fitted in a moving window of coarse pixels (``window``), blended with
    the global fit where the window has few clear pixels - DMS's local/global idea with linear
    models: the LST-index relation changes across a scene (soil moisture, land use).

``global`` and ``local`` fit, as DMS does, on the more homogeneous coarse pixels only
(``homogeneous``), where the thermal footprint's blur biases the coefficients least.

ST_B10 is distributed at 30 m but TIRS sees a ~100 m footprint, so its 30 m pixels carry that
blur, and keeping their block means (``keep="block"``, the default) copies it into the product.
``keep="footprint"`` instead keeps the LST consistent with what TIRS measured: the sharpened
field, seen through a footprint-sized Gaussian, averages to the input per block. On the
simulated worlds it is 0.2-0.6 K closer to the truth (README); its block means differ.

The fine and coarse grids must nest: the coarse grid is the fine one zoomed out by ``factor``
(``load_cube(..., bands=["lst"], geobox=fine_geobox.zoom_out(3))``). :func:`resample_lst` is the
bicubic reference. :func:`fit_lst_model` / :func:`predict_lst` estimate LST from reflectance
alone (e.g. on Sentinel-2 dates): that cannot see the day's weather, which shifts a whole scene
by kelvins, so expect errors of that size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401 - registers the .rio accessor (CRS of the products)
import xarray as xr
from scipy import ndimage

from harmonize.errors import HarmonizeError, UnknownBandError

__all__ = [
    "METHODS",
    "KEEPS",
    "TIRS_FOOTPRINT_M",
    "FEATURES",
    "lst_features",
    "block_mean",
    "nested",
    "sharpen_lst",
    "resample_lst",
    "LSTModel",
    "fit_lst_model",
    "predict_lst",
]

Method = Literal["tsharp", "global", "local"]
METHODS: tuple[str, ...] = ("tsharp", "global", "local")
Keep = Literal["block", "footprint"]
#: What the sharpened field keeps of the coarse LST (see :func:`sharpen_lst`).
KEEPS: tuple[str, ...] = ("block", "footprint")
#: How far (K) the fine model may leave the coarse LST's range (roads and roofs are hotter at
#: 10 m than any 100 m footprint shows), so no extrapolation runs away.
CLIP_MARGIN_K = 10.0
#: Landsat 8/9 TIRS ground footprint (m); ST_B10 is distributed resampled to 30 m.
TIRS_FOOTPRINT_M = 100.0
#: The predictors of the ``global`` and ``local`` models, computed from six reflectance bands.
FEATURES: tuple[str, ...] = ("ndvi", "ndvi2", "mndwi", "ndbi", "albedo")
_BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
# Broadband albedo from OLI-like bands (Liang 2001), blue green red nir swir16 swir22.
_ALBEDO_W = np.array([0.356, 0.0, 0.130, 0.373, 0.085, 0.072], np.float32)


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(s) > 1e-6, (a - b) / s, np.nan).astype(np.float32)


def lst_features(refl: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of reflectance ``(6, ...)`` (blue ... swir22), ``(5, ...)`` float32."""
    b, g, r, n, s1, _ = (np.asarray(refl[i], np.float32) for i in range(6))
    ndvi = _nd(n, r)
    albedo = np.tensordot(_ALBEDO_W, np.asarray(refl, np.float32), axes=1) - 0.0018
    return np.stack([ndvi, ndvi * ndvi, _nd(g, s1), _nd(s1, n), albedo]).astype(np.float32)


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Means of ``factor x factor`` blocks over the last two axes (NaN if any member is NaN)."""
    *lead, ny, nx = a.shape
    return a.reshape(*lead, ny // factor, factor, nx // factor, factor).mean(axis=(-3, -1))


def _up(a: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(a, factor, axis=-2), factor, axis=-1)


def _fill_nan(a: np.ndarray) -> np.ndarray:
    """NaNs replaced by the nearest finite value (zeros if there is none)."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    if bad.all():
        return np.zeros_like(a)
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return a[tuple(idx)]


def _fill_mean(a: np.ndarray) -> np.ndarray:
    """NaNs replaced by the mean of the finite values (cheap; where the result is masked anyway)."""
    ok = np.isfinite(a)
    return a if ok.all() else np.where(ok, a, np.float32(a[ok].mean()) if ok.any() else np.float32(0.0))


def _bicubic(a: np.ndarray, factor: int) -> np.ndarray:
    return ndimage.zoom(_fill_nan(a), factor, order=3, mode="nearest", grid_mode=True).astype(np.float32)


def _mean_preserving(residual: np.ndarray, factor: int) -> np.ndarray:
    """``residual`` interpolated to the fine grid with its block means kept exactly."""
    smooth = _bicubic(residual, factor)
    return smooth + _up(_fill_nan(residual) - block_mean(smooth, factor), factor)


def _fc(ndvi: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.clip((hi - ndvi) / max(hi - lo, 1e-3), 0.0, 1.0)
    return (1.0 - x**0.625).astype(np.float32)


def _design(feats: np.ndarray, method: str, ndvi_range: tuple[float, float]) -> np.ndarray:
    """Design matrix ``(k, ...)`` without the intercept."""
    if method == "tsharp":
        return _fc(feats[0], *ndvi_range)[None]
    return feats


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge coefficients ``(k + 1,)`` (intercept first) on standardised columns of ``x (n, k)``."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    a = np.c_[np.ones(len(z)), z]
    reg = alpha * len(z) * np.eye(a.shape[1])
    reg[0, 0] = 0.0
    beta = np.linalg.solve(a.T @ a + reg, a.T @ y)
    coef = beta[1:] / sd
    return np.r_[beta[0] - mu @ coef, coef]


def _local_coefficients(
    x: np.ndarray, y: np.ndarray, ok: np.ndarray, window: int, alpha: float, global_coef: np.ndarray
) -> np.ndarray:
    """Per coarse pixel ridge coefficients ``(ny, nx, k + 1)`` of a moving window, shrunk towards
    ``global_coef`` (the ridge penalty is on the difference from it, weighted by pixel count)."""
    k = x.shape[0]
    a = np.concatenate([np.ones((1,) + y.shape, np.float64), x.astype(np.float64)])
    w = ok.astype(np.float64)
    a = np.where(ok, a, 0.0)
    yy = np.where(ok, y, 0.0).astype(np.float64)

    def box(v: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(v, size=window, mode="constant") * window * window

    ata = np.empty(y.shape + (k + 1, k + 1))
    aty = np.empty(y.shape + (k + 1,))
    for i in range(k + 1):
        aty[..., i] = box(a[i] * yy)
        for j in range(i, k + 1):
            ata[..., i, j] = ata[..., j, i] = box(a[i] * a[j] * w)
    # Penalty per coefficient: alpha times its column's sum of squares in the window, but never
    # less than a quarter window's worth, so windows with few clear pixels keep the global fit.
    mean_sq = (a[:, ok] ** 2).mean(axis=1)
    reg = alpha * np.maximum(np.diagonal(ata, axis1=-2, axis2=-1), mean_sq * window * window / 4.0)
    lhs = ata + reg[..., None] * np.eye(k + 1)
    rhs = aty + reg * global_coef
    return np.linalg.solve(lhs, rhs[..., None])[..., 0]


def _footprint(fine: np.ndarray, sigma: float) -> np.ndarray:
    """Reflectance ``(6, ny, nx)`` as a thermal band of Gaussian ``sigma`` (fine pixels) sees it."""
    if sigma <= 0:
        return fine
    out = np.stack([ndimage.gaussian_filter(_fill_nan(b), sigma, mode="nearest") for b in fine])
    out[:, ~np.isfinite(fine).all(0)] = np.nan
    return out


def _homogeneous(ndvi: np.ndarray, factor: int, keep: float, valid: np.ndarray) -> np.ndarray:
    """Coarse pixels whose neighbourhood (3 x 3 coarse pixels, about a thermal footprint) is
    among the ``keep`` most homogeneous in fine NDVI: there the footprint's blur matters least."""
    filled = _fill_mean(ndvi)
    m = ndimage.uniform_filter(filled, 3 * factor, mode="nearest")
    m2 = ndimage.uniform_filter(filled**2, 3 * factor, mode="nearest")
    sd = block_mean(np.sqrt(np.maximum(m2 - m * m, 0.0)), factor)
    return sd <= np.quantile(sd[valid], keep) if valid.any() else valid


def _fit_predict(
    lst: np.ndarray,
    fine: np.ndarray,
    factor: int,
    method: str,
    window: int,
    alpha: float,
    sigma: float,
    homogeneous: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Model LST on the fine grid, fitted on the coarse pixels where ``lst`` is finite, and the
    fine pixels where it extrapolates (:func:`_unseen`)."""
    coarse_feats = lst_features(block_mean(_footprint(fine, sigma), factor))
    fine_feats = lst_features(fine)
    valid = np.isfinite(lst) & np.isfinite(coarse_feats).all(0)
    if homogeneous < 1.0 and method != "tsharp" and valid.sum() * homogeneous >= 50:
        valid &= _homogeneous(fine_feats[0], factor, homogeneous, valid)
    if valid.sum() < 10:
        raise HarmonizeError(
            f"Only {int(valid.sum())} clear coarse pixels to fit the LST model on; sharpen a "
            "clearer date, or pass more of the scene."
        )
    ndvi_range = tuple(np.nanpercentile(coarse_feats[0][valid], [2, 98]).tolist())
    xc, xf = _design(coarse_feats, method, ndvi_range), _design(fine_feats, method, ndvi_range)
    coef = _ridge(xc[:, valid].T.astype(np.float64), lst[valid].astype(np.float64), alpha)
    unseen = _unseen(xc[:, valid], xf)
    if method != "local":
        return (coef[0] + np.tensordot(coef[1:], xf, axes=1)).astype(np.float32), unseen
    local = _local_coefficients(np.nan_to_num(xc), lst, valid, window, alpha, coef)
    coef_fine = _up(np.moveaxis(local, -1, 0), factor)
    return (coef_fine[0] + (coef_fine[1:] * xf).sum(0)).astype(np.float32), unseen


def _unseen(train: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Fine pixels whose predictors leave the range the fit saw (0.5-99.5 %, widened by a tenth):
    there the model extrapolates (a lake too small for any clear coarse pixel, say)."""
    lo, hi = np.nanpercentile(train, [0.5, 99.5], axis=1)
    pad = 0.1 * (hi - lo)
    lo, hi = (lo - pad)[:, None, None], (hi + pad)[:, None, None]
    with np.errstate(invalid="ignore"):
        return ((fine < lo) | (fine > hi)).any(0)


def _check_nesting(lst: xr.DataArray, refl: xr.Dataset, factor: int) -> None:
    ny, nx = lst.sizes["y"], lst.sizes["x"]
    if (refl.sizes["y"], refl.sizes["x"]) != (ny * factor, nx * factor) or not (
        np.allclose(refl["x"].values.reshape(nx, factor).mean(1), lst["x"])
        and np.allclose(refl["y"].values.reshape(ny, factor).mean(1), lst["y"])
    ):
        raise HarmonizeError(
            f"The LST grid ({ny} x {nx}) is not the reflectance grid ({refl.sizes['y']} x "
            f"{refl.sizes['x']}) zoomed out by {factor}; load the LST with "
            f"geobox=reflectance.odc.geobox.zoom_out({factor}), then crop both with nested()."
        )


def nested(
    lst: xr.DataArray | xr.Dataset, reflectance: xr.Dataset, *, factor: int = 3
) -> tuple[xr.DataArray | xr.Dataset, xr.Dataset]:
    """``lst`` and ``reflectance`` cropped to their common extent of whole coarse pixels.

    ``fine_geobox.zoom_out(factor)`` rounds up, so its last row/column of coarse pixels may
    overhang the fine grid; this drops those (and the fine pixels they would have covered).
    """
    ny = min(lst.sizes["y"], reflectance.sizes["y"] // factor)
    nx = min(lst.sizes["x"], reflectance.sizes["x"] // factor)
    return (
        lst.isel(y=slice(0, ny), x=slice(0, nx)),
        reflectance.isel(y=slice(0, ny * factor), x=slice(0, nx * factor)),
    )


def _footprint_sigma(footprint_m: float, fine: xr.Dataset) -> float:
    """Gaussian sigma, in fine pixels, standing in for a thermal footprint of ``footprint_m``.

    0.35 x the footprint (a box of that width has sigma 0.29 x; the rest is the detector's
    blur and the product's resampling), measured best on two simulated worlds.
    """
    res = abs(float(fine["x"].values[1] - fine["x"].values[0])) if fine.sizes["x"] > 1 else 10.0
    return 0.35 * footprint_m / res


def _stack(refl: xr.Dataset) -> np.ndarray:
    missing = [b for b in _BANDS if b not in refl.data_vars]
    if missing:
        raise UnknownBandError(
            f"Sharpening LST needs the reflectance bands {list(_BANDS)}; missing {missing}."
        )
    return np.stack([np.asarray(refl[b].values, np.float32) for b in _BANDS])


def sharpen_lst(
    lst: xr.DataArray,
    reflectance: xr.Dataset,
    *,
    method: Method = "local",
    factor: int = 3,
    window: int = 15,
    alpha: float = 0.05,
    homogeneous: float = 0.5,
    keep: Keep = "block",
    footprint_m: float = TIRS_FOOTPRINT_M,
) -> xr.DataArray:
    """Sharpen one date's coarse LST with fine reflectance of the same date (module docstring).

    Parameters
    ----------
    lst
        ``(y, x)`` LST in kelvin on the coarse grid, NaN where not clear.
    reflectance
        ``(y, x)`` bands ``blue`` ... ``swir22`` on the fine grid (the coarse one times
        ``factor``), e.g. harmonized Landsat at 10 m.
    method
        ``"local"``, ``"global"`` or ``"tsharp"``.
    factor
        Coarse / fine pixel size.
    window
        Side of the local model's window, in coarse pixels.
    alpha
        Ridge penalty (on standardised predictors; locally, towards the global fit).
    homogeneous
        Fit on this share of the usable coarse pixels, the most homogeneous in fine NDVI over
        about a thermal footprint (DMS's selection: there the footprint's blur biases the fit
        least); 1 fits on all.
    keep
        ``"block"``: every coarse block of the result averages to ``lst`` exactly (DMS/TsHARP).
        ``"footprint"``: the result seen through the thermal footprint (a Gaussian of the
        footprint's spread) averages to ``lst`` per block: consistent with what TIRS measured
        rather than with its 30 m resampling, so the footprint's blur is not copied into the
        product (the fit also uses footprint-smoothed reflectance). Block means then differ.
    footprint_m
        The thermal band's ground footprint (TIRS: 100 m), for ``keep="footprint"``.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` float32 LST in kelvin on the fine grid, NaN where the coarse LST or the
        reflectance is; its ``factor x factor`` block means equal ``lst``.

    Raises
    ------
    HarmonizeError
        If the grids do not nest, or too few clear coarse pixels are left to fit.
    UnknownBandError
        If a reflectance band is missing.
    """
    if method not in METHODS:
        raise HarmonizeError(f"method must be one of {METHODS}, not {method!r}.")
    _check_nesting(lst, reflectance, factor)
    fine = _stack(reflectance)
    coarse = np.asarray(lst.values, np.float32)
    if keep not in KEEPS:
        raise HarmonizeError(f"keep must be one of {KEEPS}, not {keep!r}.")
    sigma = _footprint_sigma(footprint_m, reflectance) if keep == "footprint" else 0.0
    model, unseen = _fit_predict(coarse, fine, factor, method, window, alpha, sigma, homogeneous)
    # No regression extrapolates beyond what the scene shows, give or take what 10 m adds.
    lo, hi = np.nanmin(coarse), np.nanmax(coarse)
    model = np.clip(model, lo - CLIP_MARGIN_K, hi + CLIP_MARGIN_K)
    model_filled = _fill_mean(model)
    out = model_filled + _mean_preserving(coarse - block_mean(model_filled, factor), factor)
    if keep == "footprint":
        seen = ndimage.gaussian_filter(model_filled, sigma, mode="nearest")
        through = model_filled + _bicubic(coarse - block_mean(seen, factor), factor)
        # Only where the model is on known ground: blocks where it extrapolates keep their means.
        trusted = ~_up(block_mean(unseen.astype(np.float32), factor) > 0, factor)
        out = np.where(trusted, through, out)
    out[~np.isfinite(_up(coarse, factor)) | ~np.isfinite(model)] = np.nan
    return _like(out, reflectance, lst, f"lst sharpened ({method})")


def resample_lst(lst: xr.DataArray, like: xr.Dataset | xr.DataArray, *, factor: int = 3) -> xr.DataArray:
    """Bicubic interpolation of coarse ``lst`` onto ``like``'s fine grid (the reference method)."""
    coarse = np.asarray(lst.values, np.float32)
    out = _bicubic(coarse, factor)
    out[~np.isfinite(_up(coarse, factor))] = np.nan
    return _like(out, like, lst, "lst resampled (bicubic)")


def _like(values: np.ndarray, fine: xr.Dataset | xr.DataArray, lst: xr.DataArray, name: str) -> xr.DataArray:
    coords = {"y": fine["y"].values, "x": fine["x"].values}
    coords |= {c: lst[c] for c in lst.coords if c not in ("y", "x") and lst[c].ndim == 0}
    da = xr.DataArray(values.astype(np.float32), dims=("y", "x"), coords=coords, name="lst")
    da.attrs = {"units": "K", "long_name": name}
    if fine.rio.crs is not None:
        da = da.rio.write_crs(fine.rio.crs)
    return da


@dataclass(frozen=True)
class LSTModel:
    """LST from reflectance and day of year alone (:func:`fit_lst_model`).

    Attributes
    ----------
    coef
        Ridge coefficients: intercept, then :data:`FEATURES`, the features times the seasonal
        term, and the two seasonal terms.
    rmse_fit
        RMSE (K) on the coarse pixels it was fitted on, pooled over dates.
    n_dates
        Dates it was fitted on.
    """

    coef: np.ndarray
    rmse_fit: float
    n_dates: int


def _seasonal_design(feats: np.ndarray, t: pd.Timestamp) -> np.ndarray:
    doy = t.day_of_year
    c, s = np.cos(2 * np.pi * (doy - 172) / 365.25), np.sin(2 * np.pi * (doy - 172) / 365.25)
    ones = np.ones_like(feats[0])
    return np.concatenate([feats, feats * np.float32(c), (ones * c)[None], (ones * s)[None]])


def fit_lst_model(
    lst: xr.DataArray, reflectance: xr.Dataset, *, factor: int = 3, alpha: float = 0.05
) -> LSTModel:
    """Fit LST on reflectance indices and season over several dates (coarse pixels pooled).

    Parameters
    ----------
    lst
        ``(time, y, x)`` coarse LST (K), NaN where not clear.
    reflectance
        ``(time, y, x)`` fine reflectance of the same dates.
    factor, alpha
        As in :func:`sharpen_lst`.
    """
    xs, ys = [], []
    for i in range(lst.sizes["time"]):
        t = pd.Timestamp(lst["time"].values[i])
        coarse = np.asarray(lst.isel(time=i).values, np.float32)
        feats = lst_features(block_mean(_stack(reflectance.isel(time=i)), factor))
        x = _seasonal_design(feats, t)
        ok = np.isfinite(coarse) & np.isfinite(x).all(0)
        xs.append(x[:, ok].T)
        ys.append(coarse[ok])
    x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)
    if len(y) < 10:
        raise HarmonizeError("Too few clear LST pixels to fit an LST model on; give clearer dates.")
    coef = _ridge(x, y, alpha)
    rmse = float(np.sqrt(np.mean((coef[0] + x @ coef[1:] - y) ** 2)))
    return LSTModel(coef=coef, rmse_fit=rmse, n_dates=int(lst.sizes["time"]))


def predict_lst(model: LSTModel, reflectance: xr.Dataset, time: object) -> xr.DataArray:
    """LST (K) on ``reflectance``'s grid at ``time`` from reflectance alone (see the caveat in
    the module docstring: the day's weather is not in reflectance)."""
    x = _seasonal_design(lst_features(_stack(reflectance)), pd.Timestamp(time))
    out = model.coef[0] + np.tensordot(model.coef[1:], x, axes=1)
    da = xr.DataArray(
        out.astype(np.float32),
        dims=("y", "x"),
        coords={"y": reflectance["y"].values, "x": reflectance["x"].values},
        name="lst",
        attrs={"units": "K", "long_name": "lst estimated from reflectance alone"},
    )
    return da.rio.write_crs(reflectance.rio.crs) if reflectance.rio.crs is not None else da
