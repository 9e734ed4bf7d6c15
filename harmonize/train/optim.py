"""The optimizer and learning-rate schedule of a training run (AdamW; one-cycle, cosine, constant)."""

from __future__ import annotations

import math
from typing import Any

import torch

from harmonize.train.config import TrainConfig

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW at ``cfg.lr``, with weight decay on weights but not on biases and norm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int) -> Any:
    """The LR schedule ``cfg.schedule`` over ``total_steps`` optimizer updates.

    ``"onecycle"``: :class:`torch.optim.lr_scheduler.OneCycleLR` with warm-up fraction
    ``cfg.warmup_fraction`` (plain constant when there are fewer than 4 steps); ``"cosine"``:
    linear warm-up over ``cfg.warmup_fraction`` of the steps, then cosine decay to 0;
    ``"constant"``: ``cfg.lr`` throughout.
    """
    total_steps = max(total_steps, 1)
    if cfg.schedule == "onecycle" and total_steps >= 4:
        # OneCycleLR needs at least one step in each phase
        pct = min(max(cfg.warmup_fraction, 1.5 / total_steps), 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct,
            anneal_strategy="cos", cycle_momentum=False)
    warm = int(round(cfg.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if cfg.schedule != "cosine":  # constant, or a onecycle too short to have phases
            return 1.0
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(total_steps - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
