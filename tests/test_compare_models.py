"""pipelines.experiments.compare_models on the tiny world: export against truth, then a short train-eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.experiments.compare_models import BASELINES, export_pairs

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def exported(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "pairs.npz"
    meta = export_pairs(tiny_world.root, out, tiny=True, progress=False)
    return tiny_world, out, meta


def test_export_patches_match_truth_and_keep_splits_apart(exported):
    world, path, meta = exported
    z = np.load(path)
    assert all(meta["windows"].get(s, 0) > 0 for s in ("train", "val", "test"))
    assert z["test_input"].shape[1:] == (7, 32, 32) and z["test_truth"].shape[1:] == (6, 32, 32)
    # the truth of each test window is the simulator's truth at that place (float16 precision)
    truth = world.truth
    cfg = meta["settings"]
    assert meta["world_config"]["size_km"] == world.config.size_km
    assert cfg["sharpen_target"] is True  # trained as the demo trains: sharpened 20 m targets
    found = 0
    for k, (y0, x0) in enumerate(zip(z["test_y0"], z["test_x0"], strict=True)):
        win = truth[["red"]].isel(y=slice(int(y0), int(y0) + 32), x=slice(int(x0), int(x0) + 32))
        red = win["red"].values  # (time, y, x): the window matches one date of the truth
        err = np.abs(red - z["test_truth"][k, 2].astype(np.float32)).max(axis=(1, 2))
        found += bool(err.min() < 2e-3)
    assert found == len(z["test_y0"])
    # no test pixel is a training pixel (blocks dealt to splits)
    P = cfg["patch_size"]
    ny, nx = world.geobox.shape
    used = {}
    for split in ("train", "test"):
        m = np.zeros((ny, nx), bool)
        for y0, x0 in zip(z[f"{split}_y0"], z[f"{split}_x0"], strict=True):
            m[y0 : y0 + P, x0 : x0 + P] = True
        used[split] = m
    assert not (used["train"] & used["test"]).any()
    # the bandpass baselines are not the raw input, and HLS brings blue closer to truth
    bic = z["test_input"][:, :6].astype(np.float32)
    assert not np.allclose(bic, z["test_hls"].astype(np.float32))
    assert not np.allclose(bic, z["test_fitted"].astype(np.float32))
    v = z["test_valid"]
    t = z["test_truth"].astype(np.float32)
    err_raw = np.abs(bic[:, 0] - t[:, 0])[v].mean()
    err_hls = np.abs(z["test_hls"][:, 0].astype(np.float32) - t[:, 0])[v].mean()
    assert err_hls < err_raw
    # the linear fit saw training-block pixels only: at most the train area in every pair
    assert 0 < meta["fitted_linear"]["n_pixels"]["red"] <= meta["pairs"] * used["train"].sum()


def test_train_eval_scores_every_method_without_the_geospatial_stack(exported, tmp_path):
    """train-eval runs where dask, rasterio, odc-stac and pystac-client are not installed."""
    _, path, _ = exported
    code = (
        "import sys, json; from pipelines.experiments.compare_models import train_eval;"
        f"train_eval({str(path)!r}, {str(tmp_path)!r}, presets=['tiny'], steps=6, batch=4);"
        "print(json.dumps(sorted(m for m in ('dask', 'rasterio', 'odc', 'pystac_client', 'rustac', 'zarr')"
        " if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    result = json.loads((tmp_path / "compare.json").read_text())
    names = list(result["methods"])
    assert names == [*BASELINES.values(), "UNet tiny"]
    for m in result["methods"].values():
        assert np.isfinite([m["psnr"], m["ssim"], m["sam"], m["nrmse"], m["ndvi_r"]]).all()
    rec = result["training"]["tiny"]
    assert rec["steps"] == 6 and rec["parameters"] > 0 and rec["steps_per_s"] > 0
    # the bicubic row is the test input scored against truth
    z = np.load(path)
    v = z["test_valid"]
    t = z["test_truth"].astype(np.float32)
    mse = np.mean([((z["test_input"][:, b].astype(np.float32) - t[:, b])[v] ** 2).mean() for b in range(6)])
    assert result["methods"][BASELINES["bicubic"]]["psnr"] == pytest.approx(-10 * np.log10(mse), abs=1e-3)
    assert "UNet tiny" in (tmp_path / "compare.md").read_text()


def test_train_eval_command_trains_through_fit(exported, tmp_path):
    """The click command runs train-eval with the library's loop: one history row per epoch."""
    from click.testing import CliRunner

    from pipelines.experiments.compare_models import main

    _, path, _ = exported
    args = ["train-eval", "--data", str(path), "--out", str(tmp_path), "--presets", "tiny", "--steps", "3",
            "--batch", "4", "--save-models"]  # fmt: skip
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert "UNet tiny" in run.output
    rec = json.loads((tmp_path / "compare.json").read_text())["training"]["tiny"]
    assert rec["steps"] == 3 and [h["step"] for h in rec["history"]] == [1, 2, 3]
    assert rec["best_step"] in (1, 2, 3)
    assert (tmp_path / "model-tiny" / "mlm.json").is_file()
    assert not list(tmp_path.glob(".train-*"))  # fit's checkpoints go with its temporary folder
    m = json.loads((tmp_path / "compare.json").read_text())["methods"]
    # the bicubic input is the omission corner: none of it moves toward truth or away from both
    assert m[BASELINES["bicubic"]]["omission"] == 1.0
    u = m["UNet tiny"]
    assert u["improvement"] + u["omission"] + u["hallucination"] == pytest.approx(1.0)
    assert np.isfinite([u["cons_reflectance_mae"], u["cons_spectral_angle"]]).all()
    assert "hallucination" in (tmp_path / "compare.md").read_text()


def test_training_variants_are_rows_of_one_table(exported, tmp_path):
    """L1, adversarial and low-frequency constrained rows, one budget, both GAN losses recorded."""
    import torch

    from pipelines.experiments.compare_models import train_eval

    torch.set_num_threads(1)
    _, path, _ = exported
    res = train_eval(path, tmp_path, presets=["tiny"], steps=2, batch=4,
                     variants=["L1", "adversarial", "lowfreq"])
    m = res["methods"]
    assert list(m)[len(BASELINES):] == ["UNet tiny", "UNet tiny adversarial", "UNet tiny lowfreq"]
    adv = res["training"]["tiny adversarial"]["history"]
    assert all(h["train_d_loss"] > 0 and h["train_g_adv"] > 0 for h in adv)
    assert "train_d_loss" not in res["training"]["tiny"]["history"][0]
    assert m["UNet tiny adversarial"]["psnr"] != m["UNet tiny"]["psnr"]
    for row in m.values():
        assert row["improvement"] + row["omission"] + row["hallucination"] == pytest.approx(1.0)
    assert "UNet tiny lowfreq" in (tmp_path / "compare.md").read_text()
    # the three trained rows as one ensemble: its coverage, recalibrated on val when off
    ens = res["uncertainty"]["ensemble of the trained rows"]
    assert ens["members"] == ["UNet tiny", "UNet tiny adversarial", "UNet tiny lowfreq"]
    assert 0.0 <= ens["test"]["cov1"] <= ens["test"]["cov2"] <= 1.0 and ens["test"]["n"] > 0
    assert ens["recalibrated"] == ("test_after" in ens)
    assert "±1σ" in (tmp_path / "compare.md").read_text()


def test_imported_random_weight_model_is_scored_with_and_without_the_constraint(exported, tmp_path):
    """A random Deep-Harmonization UNet goes through the real import; the constraint fixes 30 m."""
    import torch

    from pipelines.experiments.compare_models import IMPORTED_PRESET, train_eval

    torch.set_num_threads(1)
    _, path, _ = exported
    m = train_eval(path, tmp_path, presets=["tiny"], variants=[], imported=True)["methods"]
    dh = f"DH {IMPORTED_PRESET} (random weights, imported)"
    assert list(m)[len(BASELINES):] == [dh, f"{dh} + lowfreq"]
    # random weights are far from the input at 30 m; the constraint puts the 30 m means back
    # (the HLS-adjusted input's, what the consistency score compares against)
    assert m[dh]["cons_reflectance_mae"] > 0.02
    assert m[f"{dh} + lowfreq"]["cons_reflectance_mae"] < 0.1 * m[dh]["cons_reflectance_mae"]
    assert m[f"{dh} + lowfreq"]["cons_reflectance_mae"] < 5e-3
    assert "+ lowfreq" in (tmp_path / "compare.md").read_text()
