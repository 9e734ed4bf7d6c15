"""The low-frequency constraint: an output whose 30 m means are the (bandpass-adjusted) input's.

After SEN2SR (ESA OpenSR), a super-resolution model keeps radiometry *by construction* when its
output's low frequencies are replaced by the input's: the network can then only add detail below
the Landsat pixel. Here the low-pass is the mean over the ``factor`` x ``factor`` block of 10 m
pixels that one 30 m Landsat pixel covers (the Landsat Nyquist band), and the projection

    out' = out + up(block_mean(ref) - block_mean(out))

with ``up`` the block-wise (nearest) up-sampling makes ``block_mean(out') == block_mean(ref)``
exactly (the projection is idempotent), while the within-block detail of ``out`` is kept.
``ref`` is the input's reflectance bands after a per-band linear bandpass adjustment
(``slope * landsat + offset``, OLI to MSI), so the constrained model reproduces the
Sentinel-2-like radiometry of the input at 30 m.

Blocks start at pixel 0 of the array; a model with the constraint pads its input to a multiple
of ``factor`` (its ``size_multiple`` includes it), so tiles on that grid give the same blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harmonize.bands import bandpass_coefficients

__all__ = ["block_mean", "lowfreq_project", "hls_oli_to_msi", "fit_bandpass"]

#: 10 m pixels per 30 m Landsat pixel along each axis.
LANDSAT_FACTOR = 3


def block_mean(x: torch.Tensor, factor: int = LANDSAT_FACTOR) -> torch.Tensor:
    """Mean over ``factor`` x ``factor`` blocks of ``[N, C, H, W]`` (``H, W`` multiples of it)."""
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"block_mean needs H, W multiples of {factor}, got {tuple(x.shape[-2:])}")
    return F.avg_pool2d(x, factor, factor)


def lowfreq_project(out: torch.Tensor, ref: torch.Tensor, factor: int = LANDSAT_FACTOR) -> torch.Tensor:
    """``out`` with its block means replaced by ``ref``'s (differentiable, idempotent).

    Parameters
    ----------
    out, ref
        ``[N, C, H, W]`` with ``H, W`` multiples of ``factor``.
    factor
        Block side in pixels (3: a 30 m pixel on the 10 m grid).
    """
    delta = block_mean(ref.to(out.dtype), factor) - block_mean(out, factor)
    return out + delta.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def hls_oli_to_msi(bands: Sequence[str], platform: str = "sentinel-2a") -> tuple[list[float], list[float]]:
    """Slope and offset per band mapping OLI reflectance onto MSI's (the inverse HLS adjustment).

    Bands without HLS coefficients (none of the six reflectance bands) keep slope 1, offset 0.
    """
    coef = bandpass_coefficients(platform)
    slope, offset = [], []
    for b in bands:
        c = coef.get(b)
        slope.append(1.0 / c.slope if c else 1.0)
        offset.append(-c.offset / c.slope if c else 0.0)
    return slope, offset


def fit_bandpass(dataset: object, n: int = 32, n_bands: int = 6,
                 factor: int = LANDSAT_FACTOR) -> tuple[list[float], list[float]]:
    """Per-band least-squares ``target ≈ slope * input + offset`` at 30 m on training samples.

    Fits on block means (the scale the constraint acts on) over blocks that are wholly valid in
    ``n`` evenly spread samples of a map-style dataset of sample dicts (``input``, ``target``,
    optional ``valid``). Falls back to slope 1, offset 0 for a band with no valid block.
    """
    size = len(dataset)  # type: ignore[arg-type]
    idx = np.unique(np.linspace(0, size - 1, num=min(n, size)).astype(int))
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for i in idx:
        s = dataset[int(i)]  # type: ignore[index]
        x = np.asarray(s["input"], dtype=np.float64)[:n_bands]
        y = np.asarray(s["target"], dtype=np.float64)[:n_bands]
        valid = np.isfinite(x).all(0) & np.isfinite(y).all(0)
        if "valid" in s:
            valid &= np.asarray(s["valid"], dtype=bool)
        h, w = (valid.shape[0] // factor) * factor, (valid.shape[1] // factor) * factor
        if h == 0 or w == 0:
            continue

        def blocks(a: np.ndarray, h: int = h, w: int = w) -> np.ndarray:
            shape = (*a.shape[:-2], h // factor, factor, w // factor, factor)
            return a[..., :h, :w].reshape(shape).mean((-3, -1))

        ok = blocks(valid.astype(np.float64)) == 1.0
        xs.append(blocks(np.where(valid, x, 0.0))[:, ok])
        ys.append(blocks(np.where(valid, y, 0.0))[:, ok])
    slope, offset = [1.0] * n_bands, [0.0] * n_bands
    if not xs:
        return slope, offset
    x_all, y_all = np.concatenate(xs, 1), np.concatenate(ys, 1)
    for b in range(n_bands):
        if x_all.shape[1] >= 2 and np.var(x_all[b]) > 0:
            a, c = np.polyfit(x_all[b], y_all[b], 1)
            slope[b], offset[b] = float(a), float(c)
    return slope, offset
