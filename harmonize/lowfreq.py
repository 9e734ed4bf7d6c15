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

The blocks must be the Landsat pixels: a 10 m cube's origin can sit 10 or 20 m off the Landsat
30 m grid, and then blocks counted from the cube's pixel 0 straddle two Landsat pixels each.
:func:`grid_phase` gives the row and column (0, 1 or 2) where the Landsat grid's blocks start in
a 10 m array, from the cube's geobox and a Landsat scene's ``proj:transform``; pass it as
``phase=`` or set it for every model call in a block with :func:`landsat_grid` (what
:func:`lowfreq_project` uses when called without ``phase``, as the models call it). A model with
the constraint pads its input to a multiple of ``factor`` (its ``size_multiple`` includes it), so
tiles starting on that grid keep the cube's phase. Partial blocks at an array's edges are
completed by replicating the edge pixels.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harmonize.bands import bandpass_coefficients

__all__ = ["block_mean", "lowfreq_project", "grid_phase", "landsat_grid", "current_phase",
           "hls_oli_to_msi", "fit_bandpass"]

#: 10 m pixels per 30 m Landsat pixel along each axis.
LANDSAT_FACTOR = 3

#: The phase :func:`lowfreq_project` uses when called without one (see :func:`landsat_grid`).
_PHASE: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("landsat_phase", default=(0, 0))


def grid_phase(
    geobox: Any, landsat_transform: Any, factor: int = LANDSAT_FACTOR, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[int, int]:
    """Row and column of a fine array where the coarse (Landsat) grid's pixels start.

    Parameters
    ----------
    geobox
        The fine grid: an ``odc.geo`` GeoBox, or an affine transform (north-up).
    landsat_transform
        The Landsat grid: a scene's ``proj:transform`` (6 values ``a, b, c, d, e, f``), an
        affine transform, or a GeoBox; any pixel corner of the grid will do.
    factor
        Fine pixels per coarse pixel (3: 10 m in 30 m).
    shift
        ``(dx, dy)`` metres added to the coarse grid's origin (a co-registration shift, as
        :func:`harmonize.cube.load_cube` applies it to a scene's geotransform).

    Returns
    -------
    (int, int)
        ``(row, col)`` in ``[0, factor)``: the first fine row and column that begin a coarse
        pixel, rounded to the nearest fine pixel (a grid 5 m off the 10 m lattice rounds).
    """
    fine = getattr(geobox, "affine", geobox)
    coarse = getattr(landsat_transform, "affine", landsat_transform)
    c = tuple(float(v) for v in (coarse[:6] if isinstance(coarse, (list, tuple)) else tuple(coarse)[:6]))
    step_x, step_y = float(fine.a), float(fine.e)
    if not np.isclose(abs(c[0]), factor * abs(step_x), rtol=1e-6):
        raise ValueError(f"a coarse pixel of {abs(c[0]):g} is not {factor} fine pixels of {abs(step_x):g}")
    col = round((c[2] + float(shift[0]) - fine.c) / step_x) % factor
    row = round((c[5] + float(shift[1]) - fine.f) / step_y) % factor
    return int(row), int(col)


@contextmanager
def landsat_grid(phase: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Within the block, :func:`lowfreq_project` (and every model calling it) uses ``phase``.

    Parameters
    ----------
    phase
        ``(row, col)`` from :func:`grid_phase`, for arrays that start at the cube's pixel 0 or at
        a multiple of :data:`LANDSAT_FACTOR` from it (tiles of a model's ``size_multiple``).
        The setting is per thread (a context variable): set it where the model runs.
    """
    token = _PHASE.set((int(phase[0]) % LANDSAT_FACTOR, int(phase[1]) % LANDSAT_FACTOR))
    try:
        yield _PHASE.get()
    finally:
        _PHASE.reset(token)


def current_phase() -> tuple[int, int]:
    """The phase set by the innermost :func:`landsat_grid` (``(0, 0)`` outside any)."""
    return _PHASE.get()


def block_mean(x: torch.Tensor, factor: int = LANDSAT_FACTOR) -> torch.Tensor:
    """Mean over ``factor`` x ``factor`` blocks of ``[N, C, H, W]`` (``H, W`` multiples of it)."""
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"block_mean needs H, W multiples of {factor}, got {tuple(x.shape[-2:])}")
    return F.avg_pool2d(x, factor, factor)


def lowfreq_project(
    out: torch.Tensor,
    ref: torch.Tensor,
    factor: int = LANDSAT_FACTOR,
    phase: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``out`` with its block means replaced by ``ref``'s (differentiable, idempotent).

    Parameters
    ----------
    out, ref
        ``[N, C, H, W]`` of the same shape (with ``phase (0, 0)``, ``H, W`` multiples of ``factor``).
    factor
        Block side in pixels (3: a 30 m pixel on the 10 m grid).
    phase
        ``(row, col)`` where the first whole block starts (:func:`grid_phase`); default the one
        :func:`landsat_grid` set, else ``(0, 0)``. The partial blocks before it and at the far
        edges are completed by replicating edge pixels, and their means set alike.
    """
    pr, pc = current_phase() if phase is None else (int(phase[0]) % factor, int(phase[1]) % factor)
    ref = ref.to(out.dtype)
    if pr or pc:
        h, w = out.shape[-2:]
        top, left = (factor - pr) % factor, (factor - pc) % factor
        pad = (left, (-(w + left)) % factor, top, (-(h + top)) % factor)
        big_out, big_ref = F.pad(out, pad, mode="replicate"), F.pad(ref, pad, mode="replicate")
        return lowfreq_project(big_out, big_ref, factor, (0, 0))[..., top : top + h, left : left + w]
    delta = block_mean(ref, factor) - block_mean(out, factor)
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
