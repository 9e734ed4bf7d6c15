"""The training loss terms on constructed cases: what each one scores and what it ignores."""

from __future__ import annotations

import pytest
import torch

from harmonize.train.losses import detail_l1, gradient_l1, masked_l1, training_loss


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand((2, 6, 16, 16), generator=g)
    valid = torch.ones((2, 16, 16), dtype=torch.bool)
    valid[0, :4] = False
    return target, target.clone(), valid


def test_detail_l1_ignores_a_30m_offset_and_scores_sub_pixel_detail() -> None:
    target, pred, valid = _pair()
    offset = pred + 0.05  # a bandpass error: the same at every pixel
    assert float(masked_l1(offset, target, valid)) == pytest.approx(0.05, abs=1e-6)
    assert float(detail_l1(offset, target, valid)) == pytest.approx(0.0, abs=1e-6)
    # detail below 3 px (a checkerboard) is what it scores
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((yy + xx) % 2).float() * 0.04 - 0.02
    assert float(detail_l1(pred + checker, target, valid)) > 0.015
    # masked pixels enter no window: garbage there changes nothing
    garbage = pred.clone()
    garbage[0, :, :4] = 100.0
    assert float(detail_l1(garbage, target, valid)) == pytest.approx(0.0, abs=1e-5)


def test_gradient_l1_scores_an_edge_moved_by_one_pixel_not_an_offset() -> None:
    target = torch.zeros((1, 6, 8, 8))
    target[..., 4:] = 0.1  # a vertical edge between columns 3 and 4
    valid = torch.ones((1, 8, 8), dtype=torch.bool)
    assert float(gradient_l1(target + 0.05, target, valid)) == pytest.approx(0.0, abs=1e-7)
    moved = torch.zeros_like(target)
    moved[..., 5:] = 0.1
    # two of the 7 horizontal differences in each row are off by 0.1, no vertical one
    assert float(gradient_l1(moved, target, valid)) == pytest.approx(0.5 * 2 * 0.1 / 7, rel=1e-5)
    # a pair with an invalid pixel is not scored: garbage there changes nothing
    valid[0, :, 6] = False
    garbage = target.clone()
    garbage[..., 6] = 9.0
    assert float(gradient_l1(garbage, target, valid)) == pytest.approx(0.0, abs=1e-7)


def test_detail_sizes_average_the_detail_terms_and_gradient_weight_adds() -> None:
    target, pred, valid = _pair(2)
    pred = pred + 0.02 * torch.randn(pred.shape, generator=torch.Generator().manual_seed(3))
    plain = masked_l1(pred, target, valid)
    two = training_loss(pred, target, valid, detail_weight=2.0, detail_sizes=(3, 5))
    want = plain + 2.0 * (detail_l1(pred, target, valid, size=3) + detail_l1(pred, target, valid, size=5)) / 2
    assert float(two) == pytest.approx(float(want))
    grad = training_loss(pred, target, valid, gradient_weight=0.5)
    assert float(grad) == pytest.approx(float(plain + 0.5 * gradient_l1(pred, target, valid)))


def test_band_weights_pick_bands_and_defaults_are_plain_l1() -> None:
    target, pred, valid = _pair(1)
    pred = pred + torch.arange(6, dtype=torch.float32)[None, :, None, None] * 0.01  # band k off by k/100
    only_nir = [0, 0, 0, 1, 0, 0]
    assert float(masked_l1(pred, target, valid, only_nir)) == pytest.approx(0.03, abs=1e-6)
    assert float(masked_l1(pred, target, valid, [1] * 6)) == pytest.approx(0.025, abs=1e-6)
    assert float(training_loss(pred, target, valid)) == float(masked_l1(pred, target, valid))
    both = training_loss(pred + 0.0, target, valid, detail_weight=2.0, band_weights=only_nir)
    want = masked_l1(pred, target, valid, only_nir) + 2.0 * detail_l1(
        pred, target, valid, band_weights=only_nir
    )
    assert float(both) == pytest.approx(float(want))
    with pytest.raises(ValueError, match="band weights"):
        masked_l1(pred, target, valid, [1, 2])


def test_train_config_options_reach_the_loss(tmp_path) -> None:
    """TrainConfig.detail_weight / band_weights change what fit minimises; the defaults do not."""
    from harmonize.testing import SyntheticPairs
    from harmonize.train import TrainConfig, fit

    ds = SyntheticPairs(8)
    base = {"model": "tiny", "epochs": 1, "batch_size": 4, "max_batches_per_epoch": 1, "device": "cpu",
            "figures": False, "normalization_samples": 4, "eval_samples": 0}
    losses = {}
    variants = {"plain": {}, "same": {"band_weights": [1] * 6, "detail_sizes": [3]},
                "detail": {"detail_weight": 5.0}, "gradient": {"gradient_weight": 5.0}}
    for name, extra in variants.items():
        result = fit(TrainConfig(**base, **extra), ds, out_dir=tmp_path / name, progress=False)
        losses[name] = result.history[0]
    assert losses["same"]["train_loss"] == pytest.approx(losses["plain"]["train_loss"], rel=1e-6)
    assert losses["detail"]["train_loss"] > losses["plain"]["train_loss"]
    assert losses["gradient"]["train_loss"] > losses["plain"]["train_loss"]
