"""Scores of a model during and after training: the per-epoch validation row, the final metrics.

The final metrics are :func:`harmonize.metrics.evaluate`'s against the Sentinel-2 targets, the
same for the identity baseline (the Landsat input's reflectance bands) as ``identity_*``, and,
when every sample carries a ``reference``, against it as ``reference_*``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harmonize.metrics import evaluate
from harmonize.metrics import ssim as ssim_metric
from harmonize.model import UNet
from harmonize.train.config import TrainConfig
from harmonize.train.data import make_loader
from harmonize.train.losses import loss_options, prepare_batch, training_loss

__all__ = ["validate", "full_metrics"]

#: The metrics reported for the identity baseline and against a reference.
_SUMMARY = ("psnr", "ssim", "sam", "ergas", "rmse", "nrmse", "ndvi_mae", "ndvi_r")


@torch.no_grad()
def validate(model: UNet, dataset: Any, cfg: TrainConfig, device: torch.device,
             amp_dtype: torch.dtype | None) -> dict[str, float]:
    """One pass over ``dataset``: the loss, MAE, PSNR and SSIM over valid pixels.

    Returns
    -------
    dict
        ``val_loss`` (the training loss, weighted by valid pixels), ``val_mae``, ``val_psnr``,
        ``val_ssim``; NaN when no pixel is valid.
    """
    model.eval()
    abs_sum = sq_sum = n_val = 0.0
    ssim_sum = ssim_n = 0.0
    loss_sum = n_pix = 0.0
    for batch in make_loader(dataset, cfg, shuffle=False, epoch=0):
        x, y, valid = prepare_batch(batch, model, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(x)
        pred = pred.float()
        pixels = float(valid.sum())
        loss = training_loss(pred, y, valid, **loss_options(cfg))
        loss_sum += float(loss) * pixels
        n_pix += pixels
        w = valid[:, None].float().expand_as(pred)
        abs_sum += float(((pred - y).abs() * w).sum())
        sq_sum += float((((pred - y) ** 2) * w).sum())
        n = float(w.sum())
        n_val += n
        v = valid.cpu().numpy()
        if v.any():
            s = ssim_metric(pred.cpu().numpy(), y.cpu().numpy(), v)
            ssim_sum += s * n
            ssim_n += n
    if n_val == 0:
        return {"val_loss": float("nan"), "val_psnr": float("nan"), "val_ssim": float("nan")}
    mse = sq_sum / n_val
    return {
        "val_loss": loss_sum / n_pix,
        "val_mae": abs_sum / n_val,
        "val_psnr": float(10 * math.log10(1.0 / mse)) if mse > 0 else float("inf"),
        "val_ssim": ssim_sum / ssim_n if ssim_n else float("nan"),
    }


@torch.no_grad()
def full_metrics(model: UNet, dataset: Any, n: int, device: torch.device) -> dict[str, float]:
    """All metrics of :func:`harmonize.metrics.evaluate` on up to ``n`` evenly spread samples.

    Returns
    -------
    dict
        The model's metrics against the targets, ``identity_*`` (the input's reflectance bands
        against the targets) and, when every sample has a ``reference``, ``reference_*`` (the
        model against it); empty when there is nothing to score.
    """
    if dataset is None or n == 0 or len(dataset) == 0:
        return {}
    model.eval()
    idx = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int))
    preds, targets, inputs, masks, references = [], [], [], [], []
    for i in idx:
        s = dataset[int(i)]
        batch = {k: torch.as_tensor(np.asarray(v))[None] for k, v in s.items()
                 if k in ("input", "target", "valid")}
        x, y, valid = prepare_batch(batch, model, device)
        preds.append(model(x).float().cpu().numpy()[0])
        targets.append(np.asarray(s["target"], dtype=np.float32))
        inputs.append(x.cpu().numpy()[0, : preds[-1].shape[0]])
        masks.append(valid.cpu().numpy()[0])
        if "reference" in s:
            references.append(np.asarray(s["reference"], dtype=np.float32))
    p, t, xi, m = (np.stack(a) for a in (preds, targets, inputs, masks))
    out = evaluate(p, t, m)
    out.update({f"identity_{k}": v for k, v in evaluate(xi, t, m).items() if k in _SUMMARY})
    if len(references) == len(preds):
        ref = np.stack(references)
        out.update({f"reference_{k}": v for k, v in evaluate(p, ref, m).items() if k in _SUMMARY})
    return {k: float(v) for k, v in out.items()}
