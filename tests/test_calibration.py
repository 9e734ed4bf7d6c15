"""Coverage and σ recalibration on constructed Gaussian cases."""

from __future__ import annotations

import numpy as np
import pytest

from harmonize.calibration import (
    NOMINAL,
    apply_scale,
    coverage,
    fit_interval_scales,
    fit_scale,
    needs_recalibration,
)


def _case(seed: int, true_sigma: float, n: int = 64):
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.05, 0.4, (4, 6, n, n))
    std = np.full_like(mean, 0.02)
    truth = mean + rng.normal(0, true_sigma, mean.shape)
    return mean, std, truth


def test_calibrated_gaussian_has_nominal_coverage():
    cov = coverage(*_case(0, 0.02))
    assert cov["cov1"] == pytest.approx(0.6827, abs=0.01) and cov["cov2"] == pytest.approx(0.9545, abs=0.005)
    assert not needs_recalibration(cov)


def test_mis_scaled_sigma_is_recalibrated_on_other_windows():
    mean, std, truth = _case(1, 0.04)  # σ reported half the true spread
    cov = coverage(mean, std, truth)
    assert cov["cov1"] == pytest.approx(0.3829, abs=0.01)  # erf(0.5 / sqrt 2) and needs_recalibration(cov)
    scale = fit_scale(mean, std, truth)
    assert scale == pytest.approx(np.full(6, 2.0), rel=0.03)
    m2, s2, t2 = _case(2, 0.04)  # held-out windows
    fixed = coverage(m2, s2 * scale[None, :, None, None], t2)
    assert fixed["cov1"] == pytest.approx(NOMINAL[1], abs=0.01)
    assert fixed["cov2"] == pytest.approx(NOMINAL[2], abs=0.01) and not needs_recalibration(fixed)


def test_mask_excludes_pixels():
    mean, std, truth = _case(3, 0.02, n=16)
    truth[:, :, :8] += 1.0  # far outside under the mask
    mask = np.ones((4, 16, 16), bool)
    mask[:, :8] = False
    cov = coverage(mean, std, truth, mask)
    assert cov["n"] == 4 * 8 * 16 and cov["cov2"] > 0.9


def _heavy(seed: int, n: int = 64):
    """σ that misses most of the error: a snapshot ensemble's near-copy members. The truth is
    off by a Student-t (3 dof) error of scale 0.01 while σ spreads over two decades."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.05, 0.4, (4, 6, n, n))
    std = 10 ** rng.uniform(-4, -2, mean.shape)
    truth = mean + 0.01 * rng.standard_t(3, mean.shape) + rng.normal(0, std)
    return mean, std, truth


def test_interval_scales_fix_both_intervals_on_held_out_windows_where_one_scale_cannot():
    mean, std, truth = _heavy(4)  # validation windows
    one = fit_scale(mean, std, truth)
    m2, s2, t2 = _heavy(5)  # held-out windows
    single = coverage(m2, s2 * one[None, :, None, None], t2)
    assert needs_recalibration(single)  # one factor per band: one interval or the other is off
    scales = fit_interval_scales(mean, std, truth)
    assert scales.shape == (2, 6) and (scales[1] > scales[0] * 1.2).all()  # heavy tails: ±2σ wider
    fixed = coverage(m2, s2, t2, scales=scales)
    assert fixed["cov1"] == pytest.approx(NOMINAL[1], abs=0.01)
    assert fixed["cov2"] == pytest.approx(NOMINAL[2], abs=0.01) and not needs_recalibration(fixed)
    # on the windows they were fitted on, at least nominal and by no more than a pixel's share
    own = coverage(mean, std, truth, scales=scales)
    for k in (1, 2):
        assert NOMINAL[k] <= own[f"cov{k}"] <= NOMINAL[k] + 1e-3


def test_interval_scales_on_a_dataset_and_their_shape_checked():
    import xarray as xr

    ds = xr.Dataset({"red_std": ("x", np.full(3, 0.01)), "nir_std": ("x", np.full(3, 0.02))})
    scales = np.array([[2.0, 3.0], [4.0, 5.0]])
    out = apply_scale(ds, scales, ["red", "nir"], interval=2)
    np.testing.assert_allclose(out["red_std"], 0.04)
    np.testing.assert_allclose(out["nir_std"], 0.10)
    np.testing.assert_allclose(apply_scale(ds, [2.0, 3.0], ["red", "nir"])["nir_std"], 0.06)
    with pytest.raises(ValueError, match="per interval and band"):
        coverage(*_case(0, 0.02, n=8), scales=np.ones((3, 6)))
