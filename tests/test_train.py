"""Training: learning on a known mapping, checkpoints/resume, reproducibility, early stopping, UX."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from harmonize.errors import HarmonizeError, ModelError
from harmonize.model import load_model_package
from harmonize.testing import SyntheticPairs
from harmonize.train import (
    StopTraining,
    TrainConfig,
    benchmark_training,
    estimate_normalization,
    fit,
    lr_find,
    masked_l1,
    show_results,
    train_from_config,
)

torch.set_num_threads(1)

# A strong, known bandpass difference (gain/offset per band) on top of a mild blur: learnable in
# a few dozen steps of the tiny model.
GAIN = (0.8, 1.2, 0.85, 1.15, 0.9, 1.1)
OFFSET = (0.02, -0.01, 0.015, -0.03, 0.01, 0.02)


def _data(n: int, seed: int, **kw) -> SyntheticPairs:
    return SyntheticPairs(n, 32, seed=seed, blur=0.8, gain=GAIN, offset=OFFSET, **kw)


def _cfg(**kw) -> TrainConfig:
    base = dict(model="tiny", epochs=3, batch_size=8, lr=1e-2, eval_samples=4,
                normalization_samples=8, patience=None, device="cpu", figures=False)
    return TrainConfig(**{**base, **kw})


def _val_loss_of_untrained(train, val) -> float:
    """L1 of the model before training (identity + per-band mean offset), over valid pixels."""
    from harmonize.model import build_model

    m = build_model("tiny").eval()
    st = estimate_normalization(train, 8)
    m.set_normalization(st["input_mean"], st["input_std"], output_offset=st["output_offset"],
                        output_scale=st["output_scale"])
    batch = torch.utils.data.default_collate([val[i] for i in range(len(val))])
    v = batch["valid"] & torch.isfinite(batch["target"]).all(1)
    with torch.no_grad():
        return float(masked_l1(m(batch["input"]), torch.nan_to_num(batch["target"]), v))


def test_synthetic_pairs_follow_the_known_mapping():
    s = _data(1, 0, cloud_fraction=0.0, noise=0.0)[0]
    # The target is the reference; the Landsat bands are the blurred reference through the known
    # gain/offset.
    assert torch.equal(s["target"], s["reference"])
    flat = s["reference"].mean((1, 2)).numpy()
    assert s["input"][:6].mean((1, 2)).numpy() == pytest.approx(
        flat * np.array(GAIN) + np.array(OFFSET), rel=1e-3)
    cloudy = _data(8, 0, cloud_fraction=1.0)
    assert all(not it["valid"].all() and torch.isnan(it["target"][:, ~it["valid"]]).all()
               for it in (cloudy[i] for i in range(3)))


def test_fit_learns_and_exports_everything(tmp_path):
    train, val = _data(24, 0), _data(8, 1)
    before = _val_loss_of_untrained(train, val)
    res = fit(_cfg(epochs=4, batch_size=4, figures=True), train, val, out_dir=tmp_path,
              progress=False)
    assert len(res.history) == 4 and res.global_step == 4 * 6
    assert res.history[-1]["val_loss"] < 0.95 * before
    assert res.best_val_loss == min(r["val_loss"] for r in res.history)
    # the exported model beats the untouched Landsat bands on the same validation pixels
    assert res.metrics["psnr"] > res.metrics["identity_psnr"]
    assert res.metrics["reference_psnr"] > res.metrics["identity_psnr"]
    for name in ("history.csv", "loss_curve.png", "results.png", "best.safetensors"):
        assert (tmp_path / name).stat().st_size > 0, name
    with (tmp_path / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "val_psnr", "val_ssim", "seconds"} <= set(rows[0])
    model, doc = load_model_package(tmp_path / "model")
    x = val[0]["input"][None]
    with torch.no_grad():
        assert torch.equal(model(x), res.model(x))
    assert doc["properties"]["harmonize:training_data"]["n_train"] == 24
    assert doc["properties"]["harmonize:metrics"]["best_epoch"] == res.best_epoch
    # the checkpoint's optimizer state is plain tensors: loads with weights_only=True
    ckpt = sorted((tmp_path / "checkpoints").glob("epoch-*"))[-1]
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert state["optimizer"]["state"]
    assert json.loads((ckpt / "state.json").read_text())["global_step"] == 24


class _Interrupt(Exception):
    pass


def test_resume_matches_uninterrupted_and_seed_reproduces(tmp_path):
    cfg = _cfg(epochs=3, model_overrides={"dropout": 0.2})
    train, val = _data(16, 0), _data(4, 1)
    full = fit(cfg, train, val, out_dir=tmp_path / "full", progress=False)

    def stop_after_2(row):
        if row["epoch"] == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(cfg, train, val, out_dir=tmp_path / "cut", callbacks=[stop_after_2], progress=False)
    saved = json.loads((tmp_path / "cut" / "checkpoints" / "epoch-0002" / "state.json").read_text())
    assert saved["epoch"] == 2 and saved["global_step"] == 4
    resumed = fit(cfg, train, val, out_dir=tmp_path / "cut", resume="auto", progress=False)
    assert resumed.history[:2] == saved["history"]  # the first two epochs come from the checkpoint
    assert resumed.global_step == full.global_step == 6
    for a, b in zip(full.history, resumed.history, strict=True):
        assert (a["train_loss"], a["val_loss"]) == (b["train_loss"], b["val_loss"])
    wa = load_file(str(tmp_path / "full" / "checkpoints" / "epoch-0003" / "model.safetensors"))
    wb = load_file(str(tmp_path / "cut" / "checkpoints" / "epoch-0003" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # stopping at a checkpoint by lowering `epochs` (a time budget) just exports that epoch, even
    # though the shorter schedule could not take the longer one's state
    short = fit(cfg.model_copy(update={"epochs": 1}), train, val, out_dir=tmp_path / "cut", resume=
                tmp_path / "cut" / "checkpoints" / "epoch-0003", progress=False)
    assert len(short.history) == 3 and short.global_step == 6
    # a different seed gives a different run
    other = fit(cfg.model_copy(update={"seed": 1, "epochs": 1}), train, val,
                out_dir=tmp_path / "seed1", progress=False)
    assert other.history[0]["train_loss"] != full.history[0]["train_loss"]
    # resuming into a different architecture is refused
    with pytest.raises(ModelError, match="another model configuration"):
        fit(cfg.model_copy(update={"model_overrides": {"base_channels": 8}}), train, val,
            out_dir=tmp_path / "full", resume="auto", progress=False)


def test_stop_training_from_a_callback_exports_the_first_k_epochs(tmp_path):
    # A constant LR makes a run of 2 epochs the first 2 epochs of a longer run.
    cfg = _cfg(epochs=4, schedule="constant")
    train, val = _data(16, 0), _data(4, 1)
    seen = []

    def budget(row):
        if row["epoch"] == 2:
            raise StopTraining

    stopped = fit(cfg, train, val, out_dir=tmp_path / "stopped", progress=False,
                  callbacks=[budget, lambda row: seen.append(row["epoch"])])
    short = fit(cfg.model_copy(update={"epochs": 2}), train, val, out_dir=tmp_path / "short", progress=False)
    assert stopped.stopped_at == 2 and short.stopped_at is None and not stopped.stopped_early
    assert seen == [1, 2]  # the other callbacks still saw the stopping epoch
    assert len(stopped.history) == 2 and stopped.global_step == short.global_step == 4
    for a, b in zip(stopped.history, short.history, strict=True):
        assert (a["train_loss"], a["val_loss"]) == (b["train_loss"], b["val_loss"])
    assert stopped.best_epoch == short.best_epoch
    assert stopped.best_val_loss == min(r["val_loss"] for r in stopped.history)
    wa = load_file(str(tmp_path / "stopped" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "short" / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert stopped.metrics["psnr"] == short.metrics["psnr"]
    with (tmp_path / "stopped" / "history.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    # the stopped run's checkpoint continues where it stopped
    resumed = fit(cfg, train, val, out_dir=tmp_path / "stopped", resume="auto", progress=False)
    assert len(resumed.history) == 4 and resumed.history[:2] == stopped.history


def test_threads_apply_while_training_and_are_restored(tmp_path):
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    seen = []
    result = fit(_cfg(epochs=1, threads=wanted), _data(8, 0), _data(4, 1), out_dir=tmp_path / "t",
                 progress=False, callbacks=[lambda row: seen.append(torch.get_num_threads())])
    assert seen == [wanted] and torch.get_num_threads() == before
    assert len(result.history) == 1 and np.isfinite(result.history[0]["val_loss"])
    with pytest.raises(ValueError):
        _cfg(threads=0)


def test_early_stopping_stops_and_resume_after_stop_is_a_no_op(tmp_path):
    cfg = _cfg(epochs=10, patience=1, min_delta=1.0)  # nothing can improve by a whole unit
    train, val = _data(8, 0), _data(4, 1)
    res = fit(cfg, train, val, out_dir=tmp_path, progress=False)
    assert res.stopped_early and len(res.history) == 2 and res.best_epoch == 1
    again = fit(cfg, train, val, out_dir=tmp_path, resume="auto", progress=False)
    assert len(again.history) == 2 and again.global_step == res.global_step
    # a fresh run in the same folder drops the old checkpoints instead of resuming them later
    fresh = fit(cfg.model_copy(update={"epochs": 1, "patience": None}), train, val, out_dir=tmp_path,
                progress=False)
    assert [p.name for p in (tmp_path / "checkpoints").glob("epoch-*")] == ["epoch-0001"]
    assert len(fresh.history) == 1


def test_gradient_accumulation_equals_a_larger_batch(tmp_path):
    # Without batch statistics and with equal valid-pixel counts, 2 x 4 accumulated == 8.
    train = _data(16, 0, cloud_fraction=0.0)
    common = dict(epochs=1, model_overrides={"norm": "none"}, grad_clip=None, schedule="constant")
    a = fit(_cfg(batch_size=8, **common), train, None, out_dir=tmp_path / "a", progress=False)
    b = fit(_cfg(batch_size=4, grad_accum=2, **common), train, None, out_dir=tmp_path / "b",
            progress=False)
    assert a.global_step == b.global_step == 2
    wa = a.model.state_dict()
    wb = b.model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert not torch.equal(wa["head.weight"], torch.zeros_like(wa["head.weight"]))


def test_lr_find_and_show_results(tmp_path):
    train = _data(16, 0)
    res = lr_find(_cfg(batch_size=4), train, num_steps=20, start_lr=1e-5, end_lr=1.0,
                  plot_path=tmp_path / "lr.png")
    assert np.all(np.diff(res.lrs) > 0) and 1e-5 <= res.suggested_lr <= 1.0
    assert len(res.lrs) == len(res.losses) <= 20
    assert (tmp_path / "lr.png").stat().st_size > 0
    from harmonize.model import build_model

    out = show_results(build_model("tiny"), train, tmp_path / "show.png", n=2)
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    assert img.shape[0] > 100 and img.shape[1] > img.shape[0]  # 2 rows x 4 columns of panels


def test_train_from_config_with_overrides_and_factory(tmp_path):
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(
        "model: tiny\nepochs: 5\nbatch_size: 4\nnormalization_samples: 4\neval_samples: 2\nfigures: false\n"
        "dataset:\n  factory: harmonize.testing:synthetic_datasets\n  n_train: 8\n  n_val: 4\n  size: 32\n"
    )
    res = train_from_config(cfg_path, ["epochs=1", "lr=3e-4", "dataset.n_train=4"],
                            out_dir=tmp_path / "run", progress=False)
    assert len(res.history) == 1 and res.global_step == 1  # 4 samples / batch 4
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "lr: 0.0003" in saved and "n_train: 4" in saved
    assert (tmp_path / "run" / "model" / "mlm.json").is_file()

    seen = {}

    def factory(cfg):
        seen["cfg"] = cfg
        return _data(4, 0), None

    res = train_from_config(cfg_path, {"epochs": 1}, dataset_factory=factory,
                            out_dir=tmp_path / "run2", progress=False)
    assert seen["cfg"].epochs == 1 and res.history[0]["epoch"] == 1
    with pytest.raises(HarmonizeError, match="cannot import dataset factory"):
        train_from_config(cfg_path, ["dataset.factory=nowhere.pairs:datasets"], out_dir=tmp_path / "x")
    with pytest.raises(ValueError):
        TrainConfig.from_yaml(cfg_path, ["epochs=0"])


def test_benchmark_training_reports_throughput():
    r = benchmark_training("tiny", batch_size=2, size=32, steps=1, warmup=1, device="cpu")
    assert r["steps_per_s"] > 0 and r["samples_per_s"] == pytest.approx(2 * r["steps_per_s"])
    assert r["dtype"] == "float32" and r["parameters"] == 110342


def test_train_stage_time_budget_exports_the_best_epoch_so_far(tmp_path, monkeypatch, tiny_world):
    """The stage's max_seconds stops fit after the epoch that passes it (StopTraining), no re-run."""
    import pystac

    import harmonize.train
    import pipelines.stages.train as stage
    from harmonize.cube import load_cube
    from harmonize.pairs import PairConfig, build_pair_index

    items = [pystac.Item.from_dict(d) for d in tiny_world.items()]
    cube = load_cube(items, geobox=tiny_world.geobox, chunks={"time": 1, "y": 64, "x": 64})
    index = build_pair_index(cube, PairConfig(max_days=2, min_clear=0.5, patch_size=32, stride=32,
                                              block_size=32, train_fraction=0.5, val_fraction=0.5,
                                              test_fraction=0.0))
    monkeypatch.setattr(stage, "open_cube", lambda path: cube)
    monkeypatch.setattr(stage, "read_index", lambda path: index)
    calls = []
    monkeypatch.setattr(harmonize.train, "fit", lambda *a, **k: calls.append(k) or fit(*a, **k))
    config = stage.TrainStageConfig(
        cube=tmp_path / "cube", pairs=tmp_path / "pairs", out=tmp_path / "model", cache=False,
        max_seconds=1e-6, max_train_windows=8, max_val_windows=4, truth=tiny_world.root / "truth.zarr",
        train={"epochs": 4, "batch_size": 4, "max_batches_per_epoch": 1, "device": "cpu", "figures": False,
               "eval_samples": 2, "normalization_samples": 2},
    )  # fmt: skip
    report = stage.train_stage(config, scheduler="synchronous")
    assert len(calls) == 1  # one fit: the budget ends it, nothing trains again
    assert report["epochs"] == 1 and report["best_epoch"] == 1
    assert "reference_psnr" in report["metrics"]  # validation scored against the truth store too
    _, doc = load_model_package(tmp_path / "model" / "model")
    assert doc["properties"]["harmonize:metrics"]["best_epoch"] == 1
