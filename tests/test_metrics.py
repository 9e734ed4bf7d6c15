"""Metrics against hand-computed values on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harmonize.metrics import (
    ergas,
    evaluate,
    evaluate_table,
    ndvi,
    ndvi_agreement,
    nrmse,
    psnr,
    rmse,
    sam,
    ssim,
)


def _image(seed: int = 0, shape=(6, 24, 20)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.02, 0.4, size=shape)
    return base.astype(np.float32)


def test_identical_images_are_perfect():
    t = _image()
    res = evaluate(t, t)
    assert math.isinf(res["psnr"]) and res["psnr"] > 0
    assert res["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert res["sam"] == 0.0
    assert res["ergas"] == 0.0 and res["rmse"] == 0.0 and res["nrmse"] == 0.0
    assert res["ndvi_mae"] == 0.0 and res["ndvi_r"] == pytest.approx(1.0)
    assert res["n_valid"] == 24 * 20


def test_constant_offset_gives_known_rmse_psnr_ergas():
    t = _image()
    p = t + np.float32(0.01)
    assert rmse(p, t) == pytest.approx(np.full(6, 0.01), rel=1e-4)
    assert psnr(p, t) == pytest.approx(40.0, abs=1e-3)  # 10 log10(1 / 0.01^2)
    assert psnr(p, t, data_range=0.5) == pytest.approx(40.0 - 20 * math.log10(2), abs=1e-3)
    means = t.reshape(6, -1).astype(np.float64).mean(axis=1)
    per_band, overall = nrmse(p, t)
    assert per_band == pytest.approx(0.01 / means, rel=1e-4)
    assert overall == pytest.approx(0.01 / means.mean(), rel=1e-4)
    expected_ergas = 100 / 3 * math.sqrt(np.mean((0.01 / means) ** 2))
    assert ergas(p, t) == pytest.approx(expected_ergas, rel=1e-4)
    assert ergas(p, t, ratio=0.5) == pytest.approx(expected_ergas * 1.5, rel=1e-4)
    res = evaluate(p, t)
    assert res["bias"] == pytest.approx(0.01, rel=1e-4) and res["mae"] == pytest.approx(0.01, rel=1e-4)
    assert 0 < res["ssim"] < 1.0 + 1e-9


def test_sam_known_angles_and_scale_invariance():
    t = np.zeros((6, 2, 2), dtype=np.float64)
    p = np.zeros_like(t)
    t[0] = 1.0          # spectrum (1, 0, 0, ...)
    p[0], p[1] = 1.0, 1.0  # spectrum (1, 1, 0, ...): 45 degrees away
    assert sam(p, t) == pytest.approx(45.0)
    t2 = _image(1)
    assert sam(2.5 * t2, t2) == pytest.approx(0.0, abs=1e-4)  # float32 rounding only
    assert psnr(2.5 * t2, t2) < 30


def test_ssim_drops_with_noise_and_matches_skimage_without_mask():
    from skimage.metrics import structural_similarity

    t = _image(2)
    rng = np.random.default_rng(3)
    p = t + rng.normal(0, 0.05, t.shape).astype(np.float32)
    ours = ssim(p, t, per_band=True)
    ref = [structural_similarity(p[b].astype(np.float64), t[b].astype(np.float64), data_range=1.0,
                                 win_size=7) for b in range(6)]
    assert ours == pytest.approx(ref, abs=1e-9)
    assert ssim(p, t) < ssim(t + rng.normal(0, 0.01, t.shape), t) < 1.0


def test_mask_and_nan_exclude_pixels():
    t = _image(4)
    p = t + np.float32(0.02)
    mask = np.ones(t.shape[1:], dtype=bool)
    mask[:5] = False
    bad = p.copy()
    bad[:, :5] = 7.0           # garbage under the mask
    bad[2, 5, 3] = np.nan      # one NaN pixel outside the mask
    mask_nan = mask.copy()
    mask_nan[5, 3] = False
    a = evaluate(bad, t, mask)
    b = evaluate(p, t, mask_nan)
    for key in ("psnr", "sam", "ergas", "rmse", "nrmse", "ndvi_mae", "rmse_red"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
    assert a["n_valid"] == mask_nan.sum()
    assert a["psnr"] == pytest.approx(20 * math.log10(1 / 0.02), abs=1e-3)
    empty = evaluate(p, t, np.zeros_like(mask))
    assert empty["n_valid"] == 0 and math.isnan(empty["psnr"])


def test_batches_pool_pixels():
    t = np.stack([_image(5), _image(6)])
    p = t.copy()
    p[0] += 0.01
    p[1] += 0.03
    # pooled MSE = (0.01^2 + 0.03^2) / 2
    assert psnr(p, t) == pytest.approx(-10 * math.log10((0.01**2 + 0.03**2) / 2), abs=1e-3)


def test_ndvi_agreement_hand_values():
    red = np.array([[0.1, 0.2]])
    nir = np.array([[0.3, 0.2]])
    assert ndvi(red, nir) == pytest.approx(np.array([[0.5, 0.0]]))
    t = np.full((6, 1, 4), 0.1)
    t[2] = [[0.1, 0.1, 0.2, 0.05]]
    t[3] = [[0.3, 0.1, 0.2, 0.45]]
    p = t.copy()
    p[3] = [[0.5, 0.1, 0.2, 0.45]]  # NDVI 0.5 -> 2/3 in the first pixel only
    res = ndvi_agreement(p, t)
    assert res["ndvi_mae"] == pytest.approx((2 / 3 - 0.5) / 4)
    a = np.array([2 / 3, 0, 0, 0.8])
    b = np.array([0.5, 0, 0, 0.8])
    assert res["ndvi_r"] == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_table_has_bands_and_all_row():
    t = _image(7)
    df = evaluate_table(t + 0.01, t)
    assert list(df.index) == ["blue", "green", "red", "nir", "swir16", "swir22", "all"]
    assert df.loc["red", "rmse"] == pytest.approx(0.01, rel=1e-4)
    assert df.loc["all", "psnr"] == pytest.approx(40.0, abs=1e-3)
    with pytest.raises(ValueError):
        evaluate(t, t[:5])


def _scene(seed: int = 8, n: int = 48):
    """A smooth 30 m input (block means of truth, repeated to 10 m) and detailed 10 m truth."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    truth = np.stack([ndimage.gaussian_filter(rng.uniform(0.05, 0.4, (n, n)), 1.5) for _ in range(6)])
    low = truth.reshape(6, n // 3, 3, n // 3, 3).mean(axis=(2, 4))
    return truth, low, np.repeat(np.repeat(low, 3, axis=1), 3, axis=2)


def test_correctness_identity_truth_and_noise():
    from harmonize.metrics import correctness

    truth, _, up = _scene()
    ident = correctness(up, up, truth, min_distance=1e-4)
    assert ident["omission"] == 1.0 and ident["improvement"] == 0.0
    perfect = correctness(truth, up, truth, min_distance=1e-4)
    assert perfect["improvement"] == 1.0 and perfect["hallucination"] == 0.0
    rng = np.random.default_rng(1)
    noisy = truth + rng.choice([-1, 1], truth.shape) * 0.2
    assert correctness(noisy, up, truth, min_distance=1e-4)["hallucination"] > 0.95
    assert ident["unresolved"] == 0.0
    flat = truth.copy()
    flat[:, :12] = up[:, :12]  # a quarter where input, output and truth agree: unresolved
    r = correctness(up, up, flat, min_distance=1e-4)
    assert r["unresolved"] == pytest.approx(0.25) and r["omission"] == 1.0


def test_consistency_zero_for_block_preserving_output_and_reports_shift():
    from harmonize.metrics import consistency

    truth, low, up = _scene(n=96)
    c = consistency(truth, low)  # truth's 30 m means are the input
    assert c["reflectance_mae"] < 1e-12 and c["spectral_angle"] < 1e-6 and c["shift_px"] < 0.3
    assert consistency(truth, up)["reflectance_mae"] < 1e-12  # input given on the 10 m grid
    shifted = np.roll(truth, (6, -3), axis=(1, 2))  # 60 m down, 30 m left
    s = consistency(shifted, low)
    assert s["shift_row"] == pytest.approx(-6, abs=0.6) and s["shift_col"] == pytest.approx(3, abs=0.6)
    assert s["shift_m"] == pytest.approx(10 * np.hypot(6, 3), abs=6)
    assert s["reflectance_mae"] > 0.005


def test_consistency_on_the_landsat_grid_of_an_offset_window():
    from harmonize.metrics import consistency

    truth, _, up = _scene(n=99)
    # windows that start 1 row and 2 columns into a Landsat pixel (and one at 0, 0): on the
    # Landsat pixels (phase) the truth is consistent with the input, on the window's own blocks not
    win = np.stack([truth[:, 2:92, 1:91], truth[:, :90, :90]])
    low = np.stack([up[:, 2:92, 1:91], up[:, :90, :90]])
    phase = np.array([[1, 2], [0, 0]])
    c = consistency(win, low, phase=phase, shift_images=1)
    assert c["reflectance_mae"] < 1e-12 and c["spectral_angle"] < 1e-6
    assert consistency(win[:1], low[:1])["reflectance_mae"] > 1e-3
    assert consistency(win[:1], low[:1], phase=(1, 2))["reflectance_mae"] < 1e-12
