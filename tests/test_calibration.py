"""Coverage and σ recalibration on constructed Gaussian cases."""

from __future__ import annotations

import numpy as np
import pytest

from harmonize.calibration import NOMINAL, coverage, fit_scale, needs_recalibration


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
