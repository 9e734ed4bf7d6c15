"""The training loss on valid pixels: masked L1, optionally plus (1 - SSIM), and batch preparation.

A batch is a dict of ``input`` ``[N, 7, H, W]``, ``target`` ``[N, 6, H, W]`` and optionally
``valid`` ``[N, H, W]``; a pixel counts where ``valid`` is true and both tensors are finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harmonize.model import UNet

__all__ = ["prepare_batch", "masked_l1", "ssim_map", "training_loss"]


def prepare_batch(
    batch: dict[str, torch.Tensor], model: UNet, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move a batch to ``device``, fill NaN inputs, and build the ``[N, H, W]`` validity mask.

    Returns
    -------
    tuple
        ``(x, y, valid)``: inputs with non-finite values replaced by the model's per-band input
        mean, targets zeroed where invalid, and the mask (``valid`` and finite in both).
    """
    x = batch["input"].to(device, non_blocking=True).float()
    y = batch["target"].to(device, non_blocking=True).float()
    valid = torch.isfinite(y).all(1) & torch.isfinite(x).all(1)
    if "valid" in batch:
        valid &= batch["valid"].to(device).bool()
    x = torch.where(torch.isfinite(x), x, model.input_mean[None, :, None, None].to(x.dtype))
    y = torch.where(valid[:, None], y, torch.zeros((), device=device))
    return x, y, valid


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over valid pixels and all bands (0 when nothing is valid).

    Parameters
    ----------
    pred, target
        ``[N, C, H, W]``.
    valid
        ``[N, H, W]`` bool.
    """
    w = valid[:, None].to(pred.dtype).expand_as(pred)
    return ((pred - target).abs() * w).sum() / w.sum().clamp_min(1.0)


def ssim_map(a: torch.Tensor, b: torch.Tensor, win: int = 7) -> torch.Tensor:
    """Differentiable SSIM map with a uniform ``win`` x ``win`` window (data range 1), per band."""
    c1, c2 = 0.01**2, 0.03**2
    pad = win // 2
    mu_a = F.avg_pool2d(a, win, 1, pad, count_include_pad=False)
    mu_b = F.avg_pool2d(b, win, 1, pad, count_include_pad=False)
    saa = F.avg_pool2d(a * a, win, 1, pad, count_include_pad=False) - mu_a**2
    sbb = F.avg_pool2d(b * b, win, 1, pad, count_include_pad=False) - mu_b**2
    sab = F.avg_pool2d(a * b, win, 1, pad, count_include_pad=False) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))


def training_loss(
    pred: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, ssim_weight: float
) -> torch.Tensor:
    """``masked_l1 + ssim_weight * (1 - SSIM)`` over valid pixels (plain L1 when the weight is 0)."""
    loss = masked_l1(pred, y, valid)
    if ssim_weight > 0:
        # Invalid pixels take the target's value in both images so windows see no fake edge.
        p = torch.where(valid[:, None], pred, y)
        m = ssim_map(p.float(), y.float())
        w = valid[:, None].expand_as(m).float()
        loss = loss + ssim_weight * (1 - (m * w).sum() / w.sum().clamp_min(1.0))
    return loss
