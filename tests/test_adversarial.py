"""Adversarial training: exact resume with the discriminator, its losses recorded, no leak into G."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from harmonize.errors import ModelError
from harmonize.testing import SyntheticPairs
from harmonize.train import TrainConfig, fit
from harmonize.train.adversarial import DISCRIMINATOR_WEIGHTS, PatchDiscriminator, SRGANDiscriminator

torch.set_num_threads(1)


class _Interrupt(Exception):
    pass


def _cfg(**kw) -> TrainConfig:
    base = dict(model="tiny", epochs=2, batch_size=4, lr=5e-3, eval_samples=2, normalization_samples=4,
                patience=None, device="cpu", figures=False, ssim_weight=0.1,
                adversarial={"weight": 0.05, "channels": 8, "layers": 2})
    return TrainConfig(**{**base, **kw})


def _data(n: int, seed: int) -> SyntheticPairs:
    return SyntheticPairs(n, 32, seed=seed, blur=0.8, gain=(0.9,) * 6, offset=(0.01,) * 6)


def _weights(run, epoch: int, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"epoch-{epoch:04d}" / name))


def test_two_epochs_resume_exactly_with_the_discriminator(tmp_path):
    cfg = _cfg()
    train, val = _data(8, 0), _data(2, 1)
    full = fit(cfg, train, val, out_dir=tmp_path / "full", progress=False)

    def stop_after_1(row):
        if row["epoch"] == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(cfg, train, val, out_dir=tmp_path / "cut", callbacks=[stop_after_1], progress=False)
    assert (tmp_path / "cut" / "checkpoints" / "epoch-0001" / DISCRIMINATOR_WEIGHTS).is_file()
    opt = torch.load(tmp_path / "cut" / "checkpoints" / "epoch-0001" / "optimizer.pt", weights_only=True)
    assert opt["discriminator_optimizer"]["state"]  # Adam moments of the discriminator, plain tensors
    resumed = fit(cfg, train, val, out_dir=tmp_path / "cut", resume="auto", progress=False)
    keys = ("train_loss", "train_l1", "train_g_adv", "train_d_loss", "val_loss")
    assert [[r[k] for k in keys] for r in full.history] == [[r[k] for k in keys] for r in resumed.history]
    for name in ("model.safetensors", DISCRIMINATOR_WEIGHTS):
        a, b = _weights(tmp_path / "full", 2, name), _weights(tmp_path / "cut", 2, name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # both losses are curves in history.csv; the adversarial term is part of the generator's loss
    rows = list(csv.DictReader((tmp_path / "full" / "history.csv").open()))
    assert {"train_g_adv", "train_d_loss", "train_l1"} <= set(rows[0])
    for r in full.history:
        assert r["train_d_loss"] > 0 and r["train_g_adv"] > 0
        assert r["train_loss"] == pytest.approx(r["train_l1"] + 0.05 * r["train_g_adv"], rel=1e-6)
    # the package holds the generator only, and the discriminator's weights moved in training
    item = json.loads((tmp_path / "full" / "model" / "mlm.json").read_text())
    assert item["properties"]["mlm:hyperparameters"]["adversarial"]["discriminator"] == "patchgan"
    d1, d2 = (_weights(tmp_path / "full", e, DISCRIMINATOR_WEIGHTS) for e in (1, 2))
    assert any(not torch.equal(d1[k], d2[k]) for k in d1)


def test_the_adversarial_weight_steers_the_generator_and_nothing_else(tmp_path):
    train = _data(8, 0)
    plain = fit(_cfg(epochs=1, adversarial=None), train, out_dir=tmp_path / "plain", progress=False)
    zero = fit(_cfg(epochs=1, adversarial={"weight": 0.0, "channels": 8, "layers": 2}), train,
               out_dir=tmp_path / "zero", progress=False)
    gan = fit(_cfg(epochs=1, adversarial={"weight": 0.5, "channels": 8, "layers": 2}), train,
              out_dir=tmp_path / "gan", progress=False)
    a, b, c = (_weights(tmp_path / n, 1) for n in ("plain", "zero", "gan"))
    # weight 0: training the discriminator beside it leaves the generator's updates untouched
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert plain.history[0]["train_loss"] == zero.history[0]["train_l1"]
    assert "train_d_loss" not in plain.history[0] and gan.history[0]["train_d_loss"] > 0


def test_resuming_a_plain_run_adversarially_is_refused(tmp_path):
    train = _data(4, 0)
    fit(_cfg(epochs=1, adversarial=None), train, out_dir=tmp_path, progress=False)
    with pytest.raises(ModelError, match="holds no discriminator"):
        fit(_cfg(epochs=2), train, out_dir=tmp_path, resume="auto", progress=False)


def test_discriminators_score_patches_or_images(tmp_path):
    x = torch.rand(2, 13, 64, 64)
    patch = PatchDiscriminator(13, 8, 3)(x)
    assert patch.shape[:2] == (2, 1) and patch.shape[-1] > 1  # one score per overlapping patch
    assert SRGANDiscriminator(6, 8, 2)(x[:, :6]).shape == (2, 1, 1, 1)  # one score per image
    res = fit(_cfg(epochs=1, figures=True, adversarial={"discriminator": "srgan", "loss": "lsgan",
                                                         "channels": 8, "layers": 2}),
              _data(4, 0), out_dir=tmp_path, progress=False)
    assert res.history[0]["train_d_loss"] > 0
    assert (tmp_path / "adversarial_curve.png").stat().st_size > 1000
