"""Training on spatially separate blocks, and prediction over a whole feature stack.

Neighbouring pixels share a field, so a random pixel split would score memory, not
generalisation. :func:`block_split` cuts the image into square blocks and holds whole blocks
out; :func:`train_classifier` learns only from labels inside training blocks, at least
``guard`` pixels from any test block (a field straddling a block edge would otherwise lend its
label to the test side), drawing random patches over the training area.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from harmonize.classify.model import ClassifierConfig, UNetClassifier
from harmonize.errors import HarmonizeError

log = logging.getLogger(__name__)

__all__ = ["block_split", "train_mask", "train_classifier", "predict_proba"]


def block_split(
    shape: tuple[int, int], *, block: int = 128, test_fraction: float = 0.25, seed: int = 0
) -> np.ndarray:
    """Which pixels belong to held-out (test) blocks, ``(H, W)`` bool.

    Parameters
    ----------
    shape
        Image ``(H, W)``.
    block
        Block side in pixels.
    test_fraction
        Share of blocks held out (at least one, and at least one kept for training).
    seed
        Seed of the draw of test blocks.
    """
    ny, nx = -(-shape[0] // block), -(-shape[1] // block)
    n = ny * nx
    if n < 2:
        raise HarmonizeError(
            f"an image of {shape} pixels holds {n} block of {block}; use a smaller block_size "
            "so some blocks train and others test"
        )
    k = min(max(1, round(test_fraction * n)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    test_blocks = np.zeros(n, bool)
    test_blocks[order[:k]] = True
    grid = test_blocks.reshape(ny, nx)
    return np.kron(grid, np.ones((block, block), bool))[: shape[0], : shape[1]]


def train_mask(labels: np.ndarray, test: np.ndarray, guard: int = 8) -> np.ndarray:
    """Labelled pixels outside the test blocks and at least ``guard`` pixels from them."""
    from scipy import ndimage

    square = np.ones((3, 3), bool)
    near = ndimage.binary_dilation(test, square, iterations=guard) if guard > 0 else test
    return (labels > 0) & ~near


def _class_weights(y: np.ndarray, codes: list[int], power: float) -> torch.Tensor:
    counts = np.array([(y == c).sum() for c in codes], np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** power
    return torch.as_tensor(w / w.mean(), dtype=torch.float32)


def _patch_origins(mask: np.ndarray, patch: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` patch corners whose patch holds training pixels (centred on a random one)."""
    ys, xs = np.nonzero(mask)
    pick = rng.integers(0, len(ys), n)
    h, w = mask.shape
    oy = np.clip(ys[pick] - patch // 2, 0, max(h - patch, 0))
    ox = np.clip(xs[pick] - patch // 2, 0, max(w - patch, 0))
    return np.stack([oy, ox], axis=1)


def train_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    config: ClassifierConfig | None = None,
) -> tuple[UNetClassifier, dict[str, float]]:
    """Fit a :class:`UNetClassifier` on the pixels of ``mask``.

    Parameters
    ----------
    features
        ``(n_features, H, W)`` float32 (NaN allowed: standardised to 0).
    labels
        ``(H, W)`` class codes, 0 = no label.
    mask
        ``(H, W)`` bool: pixels whose label the loss may use (:func:`train_mask`).
    config
        Settings (default :class:`ClassifierConfig`).

    Returns
    -------
    tuple
        The model (eval mode) and a summary: ``seconds``, ``final_loss``, ``train_pixels``.
    """
    cfg = config or ClassifierConfig()
    y = np.where(mask, labels, 0)
    codes = [int(c) for c in np.unique(y) if c > 0]
    if len(codes) < 2:
        raise HarmonizeError(
            f"the training blocks hold {len(codes)} labelled class(es); the classifier needs at "
            "least two (a larger area or another block_size/seed)"
        )
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(features, labels, mask, cfg, codes, y)
    finally:
        torch.set_num_threads(before)


def _fit(
    features: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    cfg: ClassifierConfig,
    codes: list[int],
    y: np.ndarray,
) -> tuple[UNetClassifier, dict[str, float]]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    model = UNetClassifier(features.shape[0], codes, width=cfg.width, depth=cfg.depth)
    sample = features[:, mask]
    model.set_normalization(np.nanmean(sample, axis=1), np.nanstd(sample, axis=1))
    index = np.zeros(int(max(codes)) + 1, np.int64) - 1
    index[codes] = np.arange(len(codes))
    target = torch.as_tensor(np.where(y > 0, index[y], -1))
    x_all = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32))
    weight = _class_weights(y[mask], codes, cfg.class_weight_power)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    p = min(cfg.patch, *features.shape[1:])
    model.train()
    loss_v = float("nan")
    for _step in range(cfg.steps):
        origins = _patch_origins(mask, p, rng, cfg.batch_size)
        xb = torch.stack([x_all[:, oy : oy + p, ox : ox + p] for oy, ox in origins])
        yb = torch.stack([target[oy : oy + p, ox : ox + p] for oy, ox in origins])
        if cfg.feature_dropout > 0:
            keep = torch.rand(xb.shape[0], xb.shape[1], 1, 1) >= cfg.feature_dropout
            mean = model.mean[None, :, None, None]
            xb = torch.where(keep, xb, mean.expand_as(xb))
        if torch.rand(()) < 0.5:  # flips: fields have no preferred side
            xb, yb = xb.flip(-1), yb.flip(-1)
        if torch.rand(()) < 0.5:
            xb, yb = xb.flip(-2), yb.flip(-2)
        loss = F.cross_entropy(model(xb), yb, weight=weight, ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_v = float(loss.detach())
    seconds = time.perf_counter() - t0
    log.info("classifier: %d steps in %.1f s, final loss %.3f", cfg.steps, seconds, loss_v)
    return model.eval(), {"seconds": seconds, "final_loss": loss_v, "train_pixels": int(mask.sum())}


@torch.no_grad()
def predict_proba(
    model: UNetClassifier, features: np.ndarray, *, tile: int = 512, threads: int | None = 1
) -> np.ndarray:
    """Class probabilities ``(classes, H, W)`` float32 (order ``model.codes``).

    The image is run in ``tile``-pixel tiles with a 32-pixel overlap whose borders are dropped,
    so memory stays bounded on large areas; ``threads`` as in :class:`ClassifierConfig`.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _predict(model, features, tile)
    finally:
        torch.set_num_threads(before)


def _predict(model: UNetClassifier, features: np.ndarray, tile: int) -> np.ndarray:
    model.eval()
    _, h, w = features.shape
    out = np.zeros((len(model.codes), h, w), np.float32)
    halo = 32
    x_all = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32))
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            ya, xa = max(y0 - halo, 0), max(x0 - halo, 0)
            yb, xb = min(y0 + tile + halo, h), min(x0 + tile + halo, w)
            prob = torch.softmax(model(x_all[None, :, ya:yb, xa:xb]), dim=1)[0].numpy()
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            out[:, y0:y1, x0:x1] = prob[:, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    return out
