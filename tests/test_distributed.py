"""Training past one device: 2 CPU processes (torchrun, gloo) give the single-process loss curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harmonize.errors import HarmonizeError
from harmonize.train.distributed import split_batches

ROOT = Path(__file__).parents[1]

#: One training run: the same script on one process or under torchrun. Group norm, because
#: batch-norm statistics are per process on CPU; clouds (invalid pixels) differ between the
#: halves of each batch, which the valid-pixel weighting must absorb.
SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from harmonize.testing import SyntheticPairs
from harmonize.train import fit
out = sys.argv[1]
cfg = dict(model="tiny", model_overrides={"norm": "group", "groups": 4}, epochs=4, batch_size=8, lr=5e-3,
           max_batches_per_epoch=1, ssim_weight=0.1, eval_samples=0, normalization_samples=8,
           patience=None, device="cpu", figures=False)
res = fit(cfg, SyntheticPairs(16, 32, seed=0, cloud_fraction=0.5), SyntheticPairs(4, 32, seed=1),
          out_dir=out, progress=False)
rank = int(os.environ.get("RANK", "0"))
json.dump([{k: r[k] for k in ("train_loss", "val_loss", "step")} for r in res.history],
          open(os.path.join(out, f"history-{rank}.json"), "w"))
"""


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_single_process_loss_curve(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    _run([sys.executable, str(script), str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(script), str(tmp_path / "two")], tmp_path)
    one = json.loads((tmp_path / "one" / "history-0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"history-{r}.json").read_text()) for r in (0, 1)]
    assert two[0] == two[1]  # both processes saw the same global losses
    assert [r["step"] for r in one] == [r["step"] for r in two[0]] == [1, 2, 3, 4]
    # one batch an epoch: epoch 1's loss is the first batch's, before any update, so it agrees
    # to float32 rounding; after updates, rounding in the gradient all-reduce (a sum in another
    # order) is amplified by Adam's first steps (about lr * sign(g) for tiny components): the
    # stated tolerance is 1e-6 relative for the first step, 3e-3 for the curve after it
    assert two[0][0]["train_loss"] == pytest.approx(one[0]["train_loss"], rel=1e-6)
    for a, b in zip(one, two[0], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=3e-3)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=3e-3)
    assert one[-1]["train_loss"] < one[0]["train_loss"]  # it trained
    wa = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    # 4 Adam steps of lr 5e-3 apart at most, and far closer on the whole
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=0.05) for k in wa)
    diff = sum((wa[k] - wb[k]).abs().sum() for k in wa) / sum(wa[k].abs().sum() for k in wa)
    assert diff < 1e-2
    # only rank 0 wrote the run's files: one checkpoint folder per kept epoch, one package
    kept = sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir())
    assert kept == ["epoch-0003", "epoch-0004"]


def test_each_process_gets_its_part_of_the_single_process_batches():
    parts = [split_batches(10, 4, torch.Generator().manual_seed(3), r, 2) for r in (0, 1)]
    whole = split_batches(10, 4, torch.Generator().manual_seed(3), 0, 1)
    assert [a + b for a, b in zip(*parts, strict=True)] == whole
    assert sorted(sum(whole, [])) == list(range(10))  # a permutation, in batches of 4
    assert [len(b) for b in parts[0]] == [2, 2, 1]
    # a last batch smaller than the process count is dropped on every process alike
    assert len(split_batches(9, 4, torch.Generator().manual_seed(3), 1, 2)) == 2
    with pytest.raises(HarmonizeError, match="divide by the 2 processes"):
        split_batches(10, 5, torch.Generator(), 0, 2)
