"""The training loss on valid pixels: masked L1, optionally plus (1 - SSIM), an L1 on the
detail below the Landsat pixel and an L1 on neighbour differences, per-band weights, and batch
preparation.

A batch is a dict of ``input`` ``[N, 7, H, W]``, ``target`` ``[N, 6, H, W]`` and optionally
``valid`` ``[N, H, W]``; a pixel counts where ``valid`` is true and both tensors are finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from harmonize.model import UNet

__all__ = ["prepare_batch", "masked_l1", "detail_l1", "gradient_l1", "ssim_map", "training_loss",
           "loss_options"]


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


def _band_weights(pred: torch.Tensor, band_weights: Sequence[float] | None) -> torch.Tensor:
    """``[1, C, 1, 1]`` weights (ones without ``band_weights``)."""
    if band_weights is None:
        return torch.ones((1, pred.shape[1], 1, 1), dtype=pred.dtype, device=pred.device)
    if len(band_weights) != pred.shape[1]:
        raise ValueError(f"{len(band_weights)} band weights for {pred.shape[1]} output bands")
    return torch.as_tensor(band_weights, dtype=pred.dtype, device=pred.device)[None, :, None, None]


def masked_l1(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    band_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Mean absolute error over valid pixels and all bands (0 when nothing is valid).

    Parameters
    ----------
    pred, target
        ``[N, C, H, W]``.
    valid
        ``[N, H, W]`` bool.
    band_weights
        ``C`` weights of the bands in the mean (default equal).
    """
    w = valid[:, None].to(pred.dtype).expand_as(pred) * _band_weights(pred, band_weights)
    return ((pred - target).abs() * w).sum() / w.sum().clamp_min(1e-12)


def _detail(a: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    """``a`` minus its mean over the valid pixels of a ``size`` x ``size`` window."""
    v = valid[:, None].to(a.dtype)
    pad = size // 2
    num = F.avg_pool2d(a * v, size, 1, pad, count_include_pad=False)
    den = F.avg_pool2d(v, size, 1, pad, count_include_pad=False)
    return a - num / den.clamp_min(1e-6)


def detail_l1(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    size: int = 3,
    band_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """L1 of the detail below ``size`` pixels: each image minus its local mean, over valid pixels.

    On the 10 m grid ``size=3`` is one Landsat pixel: the plain L1 is dominated by the 30 m
    (radiometric) part of the error, which a bandpass fixes; this term scores only what the
    model must add below the Landsat pixel (edges, the detail of 20 m bands in the target), so
    it is learnt in fewer steps.

    Parameters
    ----------
    pred, target
        ``[N, C, H, W]``.
    valid
        ``[N, H, W]`` bool; invalid pixels enter no local mean and no score.
    size
        Window side in pixels (odd).
    band_weights
        ``C`` weights of the bands in the mean (default equal).
    """
    return masked_l1(_detail(pred, valid, size), _detail(target, valid, size), valid, band_weights)


def gradient_l1(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    band_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """L1 of the differences between horizontal and vertical neighbours, over valid pairs.

    An edge's position and contrast at the 10 m pixel (what a 30 m band lacks) is what it
    scores; any offset or smooth change shared by ``pred`` and ``target`` costs nothing.

    Parameters
    ----------
    pred, target
        ``[N, C, H, W]``.
    valid
        ``[N, H, W]`` bool; a difference counts where both of its pixels are valid.
    band_weights
        ``C`` weights of the bands in the mean (default equal).
    """
    dx = masked_l1(pred[..., 1:] - pred[..., :-1], target[..., 1:] - target[..., :-1],
                   valid[..., 1:] & valid[..., :-1], band_weights)
    dy = masked_l1(pred[..., 1:, :] - pred[..., :-1, :], target[..., 1:, :] - target[..., :-1, :],
                   valid[..., 1:, :] & valid[..., :-1, :], band_weights)
    return 0.5 * (dx + dy)


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
    pred: torch.Tensor,
    y: torch.Tensor,
    valid: torch.Tensor,
    ssim_weight: float = 0.0,
    *,
    detail_weight: float = 0.0,
    band_weights: Sequence[float] | None = None,
    detail_sizes: Sequence[int] = (3,),
    gradient_weight: float = 0.0,
) -> torch.Tensor:
    """``masked_l1 + ssim_weight * (1 - SSIM) + detail_weight * detail_l1
    + gradient_weight * gradient_l1`` over valid pixels.

    Parameters
    ----------
    pred, y
        ``[N, C, H, W]`` prediction and target.
    valid
        ``[N, H, W]`` bool.
    ssim_weight
        Weight of ``1 - SSIM`` (0: left out).
    detail_weight
        Weight of :func:`detail_l1` (0: left out).
    band_weights
        ``C`` weights of the bands in the L1 terms (default equal), e.g. more on nir.
    detail_sizes
        Window sides of the detail term (its mean over them; default one Landsat pixel, 3).
    gradient_weight
        Weight of :func:`gradient_l1` (0: left out).

    Returns
    -------
    torch.Tensor
        The scalar loss (plain L1 with every option at its default).
    """
    loss = masked_l1(pred, y, valid, band_weights)
    if ssim_weight > 0:
        # Invalid pixels take the target's value in both images so windows see no fake edge.
        p = torch.where(valid[:, None], pred, y)
        m = ssim_map(p.float(), y.float())
        w = valid[:, None].expand_as(m).float()
        loss = loss + ssim_weight * (1 - (m * w).sum() / w.sum().clamp_min(1.0))
    if detail_weight > 0:
        detail = sum(detail_l1(pred, y, valid, size=k, band_weights=band_weights) for k in detail_sizes)
        loss = loss + detail_weight * detail / len(detail_sizes)
    if gradient_weight > 0:
        loss = loss + gradient_weight * gradient_l1(pred, y, valid, band_weights=band_weights)
    return loss


def loss_options(cfg: Any) -> dict[str, Any]:
    """The :func:`training_loss` keywords of a :class:`~harmonize.train.TrainConfig`."""
    return {"ssim_weight": cfg.ssim_weight, "detail_weight": cfg.detail_weight,
            "band_weights": cfg.band_weights, "detail_sizes": tuple(cfg.detail_sizes),
            "gradient_weight": cfg.gradient_weight}
