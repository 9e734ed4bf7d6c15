"""Training figures: loss curves, the learning-rate finder, and prediction panels (PNG, Agg)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_loss_curve", "plot_lr_find", "show_results", "rgb_composite"]

log = logging.getLogger(__name__)


def _pyplot():  # noqa: ANN202 - lazy import keeps `import harmonize` fast and headless-safe
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curve(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Train and validation loss per epoch (log scale), validation PSNR on a second axis."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    if any(np.isfinite(r.get("val_loss", np.nan)) for r in history):
        ax.plot(epochs, [r.get("val_loss", np.nan) for r in history], "s-", label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1 loss (reflectance)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    if any(np.isfinite(r.get("val_psnr", np.nan)) for r in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [r.get("val_psnr", np.nan) for r in history], "^--", color="tab:green",
                 label="val PSNR")
        ax2.set_ylabel("PSNR (dB)")
        l2, lab2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lab2
    ax.legend(lines, labels, loc="best")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggested: float | None,
                 path: str | Path) -> Path:
    """Loss against learning rate (log x) with the suggested learning rate marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    if suggested is not None:
        ax.axvline(suggested, color="tab:red", ls="--", label=f"suggested {suggested:.2e}")
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def rgb_composite(img: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``[bands >= 3, y, x]`` reflectance -> ``[y, x, 3]`` in 0-1 from red, green, blue (2, 1, 0)."""
    rgb = np.stack([img[2], img[1], img[0]], axis=-1).astype(np.float64)
    out = np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    return np.where(np.isfinite(out), out, 0.5)  # no data shows grey


def show_results(model: Any, dataset: Any, path: str | Path, n: int = 4, *,
                 indices: Sequence[int] | None = None, device: str = "cpu") -> Path:
    """Panels per sample: Landsat input RGB | prediction | Sentinel-2 target | reference (if any).

    Parameters
    ----------
    model
        A :class:`~harmonize.model.UNet` (put in eval mode here).
    dataset
        Yields dicts with ``input`` ``[7, H, W]``, ``target`` ``[6, H, W]``, optional ``valid``
        and ``reference``.
    path
        PNG to write.
    n
        Number of samples (evenly spread over the dataset unless ``indices`` is given).
    """
    import torch

    plt = _pyplot()
    if indices is None:
        indices = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int).tolist()
    samples = [dataset[i] for i in indices]
    has_reference = any("reference" in s for s in samples)
    cols = ["Landsat input", "prediction", "Sentinel-2 target"] + (["reference"] if has_reference else [])
    fig, axes = plt.subplots(len(samples), len(cols), figsize=(2.5 * len(cols), 2.6 * len(samples)),
                             squeeze=False, subplot_kw={"xticks": [], "yticks": []})
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.03, hspace=0.12)
    was_training = model.training
    model.eval()
    for row, s in zip(axes, samples, strict=True):
        x = torch.as_tensor(s["input"]).float()
        base = model.input_mean.detach().cpu()[:, None, None]
        x = torch.where(torch.isfinite(x), x, base)
        with torch.no_grad():
            pred = model(x[None].to(device))[0].float().cpu().numpy()
        target = np.asarray(s["target"], dtype=np.float64).copy()
        if "valid" in s:
            target[:, ~np.asarray(s["valid"], dtype=bool)] = np.nan
        ref = np.stack([target[2], target[1], target[0]], axis=-1)
        finite = ref[np.isfinite(ref).all(-1)]
        if finite.size == 0:
            finite = np.stack([pred[2], pred[1], pred[0]], axis=-1).reshape(-1, 3)
        lo, hi = np.percentile(finite, 2, axis=0), np.percentile(finite, 98, axis=0)
        images = [x.numpy(), pred, target] + ([np.asarray(s["reference"])] if "reference" in s else [])
        for ax, img, title in zip(row, images, cols, strict=False):  # a reference may be absent
            ax.imshow(rgb_composite(img, lo, hi))
            ax.set_title(title, fontsize=9)
        for ax in row[len(images):]:
            ax.set_visible(False)
    if was_training:
        model.train()
    out = Path(path)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
