"""The learning-rate range test: :func:`lr_find` and its suggested learning rate."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harmonize.model import UNet
from harmonize.plot_training import plot_lr_find
from harmonize.train.config import TrainConfig
from harmonize.train.data import estimate_normalization, make_loader
from harmonize.train.device import resolve_device
from harmonize.train.losses import loss_options, prepare_batch, training_loss

__all__ = ["LRFindResult", "lr_find"]

log = logging.getLogger(__name__)


@dataclass
class LRFindResult:
    """Learning rates tried, their smoothed losses, the suggestion and the plot."""

    lrs: list[float]
    losses: list[float]
    suggested_lr: float
    plot_path: Path | None


def lr_find(
    config: TrainConfig | dict[str, Any],
    dataset: Any,
    *,
    model: UNet | None = None,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    num_steps: int = 60,
    plot_path: str | Path | None = None,
    smoothing: float = 0.9,
) -> LRFindResult:
    """Learning-rate range test: raise the LR exponentially each step and record the loss.

    The model is a copy (``model`` or one built from ``config``); the original is untouched. The
    suggestion is the LR of the steepest descent of the smoothed loss, capped at a tenth of the
    LR of the minimum loss. Stops early once the loss exceeds 4x its minimum.

    Parameters
    ----------
    config
        A :class:`TrainConfig` (or a dict of its fields): model, batch size, weight decay, seed.
    dataset
        Training samples (see :mod:`harmonize.train.data`).
    model
        A model to copy instead of building ``config.model`` (its normalisation is kept).
    start_lr, end_lr, num_steps
        The range and the number of steps (one batch each).
    plot_path
        Where to draw the loss against the LR (PNG); ``None`` draws nothing.
    smoothing
        Exponential smoothing of the loss.

    Returns
    -------
    LRFindResult
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = copy.deepcopy(model) if model is not None else UNet(cfg.unet_config())
    if model is None and cfg.normalization_samples > 0:
        stats = estimate_normalization(dataset, cfg.normalization_samples)
        net.set_normalization(stats["input_mean"], stats["input_std"],
                              output_offset=stats["output_offset"], output_scale=stats["output_scale"])
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=start_lr, weight_decay=cfg.weight_decay)
    gamma = (end_lr / start_lr) ** (1 / max(num_steps - 1, 1))
    lrs, losses = [], []
    avg, best = 0.0, float("inf")
    step = 0
    while step < num_steps:
        for batch in make_loader(dataset, cfg, shuffle=True, epoch=step):
            if step >= num_steps:
                break
            lr = start_lr * gamma**step
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, valid = prepare_batch(batch, net, device)
            loss = training_loss(net(x).float(), y, valid, **loss_options(cfg))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg = smoothing * avg + (1 - smoothing) * float(loss.detach())
            smooth = avg / (1 - smoothing ** (step + 1))
            lrs.append(lr)
            losses.append(smooth)
            best = min(best, smooth)
            step += 1
            if not math.isfinite(smooth) or smooth > 4 * best:
                step = num_steps
                break
    suggested = _suggest_lr(lrs, losses)
    path = plot_lr_find(lrs, losses, suggested, plot_path) if plot_path else None
    log.info("lr_find: suggested learning rate %.2e", suggested)
    return LRFindResult(lrs=lrs, losses=losses, suggested_lr=suggested, plot_path=path)


def _suggest_lr(lrs: list[float], losses: list[float]) -> float:
    if len(lrs) < 3:
        return lrs[0] if lrs else 1e-3
    log_lr = np.log10(lrs)
    loss = np.asarray(losses)
    i_min = int(np.argmin(loss))
    grad = np.gradient(loss[: i_min + 1], log_lr[: i_min + 1]) if i_min >= 2 else np.gradient(loss, log_lr)
    steepest = lrs[int(np.argmin(grad))]
    return float(min(steepest, lrs[i_min] / 10) if i_min > 0 else steepest)
