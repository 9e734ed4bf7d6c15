"""A small UNet that labels every pixel from its time-series features (the UnetClassifier idea).

The network sees a ``(features, H, W)`` stack (:mod:`harmonize.classify.features`) and returns
class logits per pixel. A 1x1 convolution first mixes the many per-period features into
``width`` channels (a per-pixel spectral-temporal layer), then a shallow UNet adds the
neighbourhood: fields are homogeneous, so context removes pixel noise and sharpens edges.
Inputs are standardised by buffers fitted on the training pixels, so callers pass raw features.
Weights are saved as safetensors with a JSON sidecar (:func:`save_classifier`), never pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from harmonize.errors import ModelError

__all__ = ["ClassifierConfig", "UNetClassifier", "save_classifier", "load_classifier"]

WEIGHTS = "classifier.safetensors"
META = "classifier.json"


class ClassifierConfig(BaseModel):
    """Network and training settings of :func:`harmonize.classify.train_classifier`.

    Attributes
    ----------
    width
        Channels after the first (1x1) layer; doubled at each level down.
    depth
        UNet levels (1, the default: no downsampling, the 1x1 layer and one block of two 3x3
        convolutions; on the 5.12 km demo world it reached 0.96-0.98 held-out accuracy in 250
        steps over three seeds where two levels reached 0.94 at 2.5 times the cost).
    steps, batch_size, patch, lr
        Optimiser steps (AdamW, one-cycle schedule), patches per step, patch side in pixels,
        peak learning rate.
    class_weight_power
        Loss weights ``(1 / class frequency) ** power`` (0: plain cross entropy; 0.5 helps
        rare classes such as roads without drowning the common ones).
    feature_dropout
        Chance of zeroing a whole input feature per sample while training (robustness to a
        period that clouds left badly filled).
    seed
        Seed of the weights and the patch draw.
    threads
        torch CPU threads while training and predicting (default 1: the network is small, and
        on a busy machine two threads that wait for each other at every layer ran 8x slower
        than one; ``None`` keeps torch's setting).
    """

    model_config = ConfigDict(extra="forbid")
    width: int = Field(16, ge=4, le=256)
    depth: int = Field(1, ge=1, le=4)
    steps: int = Field(250, ge=1)
    batch_size: int = Field(16, ge=1)
    patch: int = Field(32, ge=8)
    lr: float = Field(1e-2, gt=0)
    class_weight_power: float = Field(0.5, ge=0, le=1)
    feature_dropout: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    threads: int | None = Field(1, ge=1)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNetClassifier(nn.Module):
    """Per-pixel class logits from a feature stack (see the module docstring).

    Parameters
    ----------
    n_features
        Input channels.
    codes
        The class code of each output channel (the legend's values, e.g. ``[1, 2, 5]``).
    width, depth
        As in :class:`ClassifierConfig`.
    """

    def __init__(self, n_features: int, codes: list[int], *, width: int = 16, depth: int = 1) -> None:
        super().__init__()
        self.codes = [int(c) for c in codes]
        self.width, self.depth = width, depth
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.stem = nn.Sequential(
            nn.Conv2d(n_features, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        chans = [width * 2**i for i in range(depth)]
        self.down = nn.ModuleList(_block(chans[max(i - 1, 0)], chans[i]) for i in range(depth))
        self.up = nn.ModuleList(_block(chans[i] + chans[i + 1], chans[i]) for i in range(depth - 1))
        self.head = nn.Conv2d(width, len(self.codes), 1)

    @property
    def size_multiple(self) -> int:
        """Inputs are padded to a multiple of this internally."""
        return 2 ** (self.depth - 1)

    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise inputs with these per-feature statistics (std floored at 1e-6)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, classes, H, W]`` of features ``[N, n_features, H, W]`` (NaN -> the mean)."""
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(self.depth - 1)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.up[i](torch.cat([skips[i], x], dim=1))
        return self.head(x)[..., :h, :w]


def save_classifier(model: UNetClassifier, folder: str | Path, **meta: Any) -> Path:
    """Write ``model`` as safetensors + JSON (codes, sizes, ``meta``) into ``folder``."""
    from safetensors.torch import save_file

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / WEIGHTS)
    doc = {
        "n_features": int(model.mean.numel()),
        "codes": model.codes,
        "width": model.width,
        "depth": model.depth,
        **meta,
    }
    (root / META).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return root


def load_classifier(folder: str | Path) -> tuple[UNetClassifier, dict[str, Any]]:
    """A classifier written by :func:`save_classifier` (in eval mode) and its metadata."""
    from safetensors.torch import load_file

    root = Path(folder)
    if not (root / WEIGHTS).exists() or not (root / META).exists():
        raise ModelError(
            f"{root} holds no classifier ({WEIGHTS} + {META}); train one with the classify stage"
        )
    doc = json.loads((root / META).read_text())
    model = UNetClassifier(doc["n_features"], doc["codes"], width=doc["width"], depth=doc["depth"])
    model.load_state_dict(load_file(root / WEIGHTS))
    return model.eval(), doc
