"""How training reads its datasets: the seeded DataLoader, steps per epoch, normalisation statistics.

Datasets are any map-style object (``__len__`` and ``__getitem__``) whose items are dicts::

    {"input":     float32 [7, H, W]   Landsat blue green red nir swir16 swir22 pan, 10 m grid,
     "target":    float32 [6, H, W]   Sentinel-2 reflectance, same band order,
     "valid":     bool    [H, W]      optional, pixels to score (clear in both sensors),
     "reference": float32 [6, H, W]   optional, a reference to score against as well}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from harmonize.errors import HarmonizeError
from harmonize.train.config import TrainConfig

__all__ = ["make_loader", "steps_per_epoch", "estimate_normalization"]


def make_loader(dataset: Any, cfg: TrainConfig, *, shuffle: bool, epoch: int) -> DataLoader:
    """A DataLoader of ``cfg.batch_size`` whose shuffle is seeded by ``cfg.seed`` and ``epoch``.

    The same seed and epoch give the same order, so a resumed run sees the batches an
    uninterrupted one would.
    """
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, generator=g,
                      num_workers=cfg.num_workers, drop_last=False,
                      pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_seed_worker if cfg.num_workers else None)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def steps_per_epoch(n_batches: int, cfg: TrainConfig) -> int:
    """Optimizer updates in an epoch of ``n_batches`` batches (capped, then accumulated)."""
    if cfg.max_batches_per_epoch:
        n_batches = min(n_batches, cfg.max_batches_per_epoch)
    return math.ceil(n_batches / cfg.grad_accum)


@torch.no_grad()
def estimate_normalization(dataset: Any, n: int = 32) -> dict[str, list[float]]:
    """Per-band statistics over valid pixels of ``n`` evenly spread training samples.

    Parameters
    ----------
    dataset
        A map-style dataset of sample dicts (see the module docstring).
    n
        Samples to read.

    Returns
    -------
    dict
        ``input_mean``, ``input_std`` (7 values) and ``output_offset``, ``output_scale``
        (mean and standard deviation of ``target - input`` for the 6 reflectance bands).

    Raises
    ------
    HarmonizeError
        If the samples hold fewer than two valid pixels.
    """
    idx = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int))
    xs, rs = [], []
    for i in idx:
        s = dataset[int(i)]
        x = torch.as_tensor(s["input"]).double()
        y = torch.as_tensor(s["target"]).double()
        valid = torch.isfinite(x).all(0) & torch.isfinite(y).all(0)
        if "valid" in s:
            valid &= torch.as_tensor(s["valid"]).bool()
        xs.append(x[:, valid])
        rs.append(y[:, valid] - x[: y.shape[0], valid])
    x = torch.cat(xs, 1)
    r = torch.cat(rs, 1)
    if x.shape[1] < 2:
        raise HarmonizeError("no valid pixels in the training samples: check masks and targets")
    return {
        "input_mean": x.mean(1).tolist(),
        "input_std": x.std(1).clamp_min(1e-4).tolist(),
        "output_offset": r.mean(1).tolist(),
        "output_scale": r.std(1).clamp_min(1e-4).tolist(),
    }
