"""Chunk-wise inference of the harmonization UNet over whole cubes, without seams.

:func:`super_resolve` turns the Landsat dates of a cube into Sentinel-2-like 10 m reflectance as
a lazy dataset. The work is a dask graph: the cube's seven input bands are stacked, padded at the
image border, cut into chunks with an overlap (halo) of at least the model's receptive halo, and
each chunk goes through the model on the worker that computes it.

How the result equals a single whole-image forward pass
-------------------------------------------------------
The *reference* is :func:`predict_array`: mirror-pad the whole image by ``halo`` pixels on every
side (``numpy.pad(mode="symmetric")``, i.e. the edge pixel repeated, which is dask's
``boundary="reflect"``), run the model once, crop the padding away. Chunked inference
reproduces it exactly (to float rounding) because

- dask's overlap mirrors the image border in the same way, so every pixel within ``halo`` of an
  output pixel holds the same value in both paths;
- ``halo >= model.receptive_halo``, so the UNet's own zero padding and edge effects at a tile's
  border never reach the cropped centre;
- every chunk (and every inner tile) starts at a multiple of ``model.size_multiple`` in padded
  image coordinates, so the max-pool grid of a tile coincides with the whole image's.

What a tile costs
-----------------
A harmonize UNet's tile is not run over its whole extent at every layer: each block runs only
where the tile's core needs it (:func:`_cropped_forward`). The halo is there for the encoder's
deep levels; the decoder's full-resolution blocks, the costliest, need two pixels around the
core. So a tile costs far less than its ``(core + 2 halo)²`` pixels: on a 1024-pixel chunk the
tiny preset's layers cost ~1.03 times the same layers over the core alone, the base preset's
~1.13 times (instead of 1.13 and 1.27). Batch normalisation is folded into the
convolutions when a model is loaded for inference. Both agree with the plain forward to float
rounding (tested against the whole-tile forward for halos down to zero).

Pixels with no data (NaN in any band) are replaced by the model's input mean (zero after its
normalisation) for the forward pass only. Pixels that hold data but are not ``clear`` (cloud,
shadow) go to the model as observed, the way training saw them: a training window may be up to
``1 - min_clear`` cloudy, and only its loss is masked. Replacing clouds by the mean instead put a
flat patch with an artificial edge beside every cloud, and the model smeared it into the clear
pixels around: on ten cloudy Landsat dates of the demo, the parcel-interior NDVI error of the
pixels next to a cloud was 0.050 with the mean and 0.019 with clouds as observed (0.033 for
bilinear Landsat; 0.008 far from clouds). In
both cases the output is NaN and ``clear`` false wherever the input was not clear or had no data:
nothing is invented where the input had no clear observation.

Models are loaded once per process and device (:func:`load_cached`), from a model package path;
an in-memory model is written to a temporary package first so that tasks carry only a path,
never the module. Uncertainty comes from MC-dropout passes or from an ensemble of packages, as
one ``<band>_std`` variable per band (population standard deviation over the samples).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr

from harmonize.errors import CRSMismatchError, HarmonizeError, ModelError, UnknownBandError

__all__ = [
    "super_resolve",
    "predict_array",
    "load_cached",
    "load_count",
    "resolve_device",
    "ModelSpec",
    "DEFAULT_CHUNK",
    "stripes",
    "tile_forward",
]

log = logging.getLogger(__name__)

#: Smallest default spatial chunk (pixels) per device type. A chunk of ``c`` pixels holds
#: ``(c + 2 halo)² / c²`` of its pixels' input (halo 32 for tiny, 64 for base): at 1024 that is
#: 1.13 (tiny) and 1.27 (base), at 2048 1.06 and 1.13; with each layer cropped to what the core
#: needs (:func:`_cropped_forward`) a 1024-px chunk's layers cost ~1.03 (tiny) and ~1.13 (base)
#: of the same layers over the core alone. Cubes chunked finer (load_cube's 512) are merged up
#: to this; GPUs get the larger size since their memory holds the activations.
DEFAULT_CHUNK = {"cpu": 1024, "cuda": 2048}

#: 10 m pixels per 30 m Landsat pixel (as :data:`harmonize.lowfreq.LANDSAT_FACTOR`).
LANDSAT_FACTOR = 3

Uncertainty = Literal["mc_dropout", "ensemble"] | None
#: Where the Landsat pixels start: one ``(row, col)``, one per date, or ``None`` for ``(0, 0)``.
PhaseLike = tuple[int, int] | Any | None
Precision = Literal["tf32", "bf16", "fp16"] | None

ModelLike = Any  # str | os.PathLike | torch.nn.Module | Sequence of those


# --------------------------------------------------------------------------------------------
# Model loading: once per process and device
# --------------------------------------------------------------------------------------------
_LOCK = threading.Lock()
_LOADS = 0


def load_count() -> int:
    """How many times this process has loaded a model package through :func:`load_cached`.

    Returns
    -------
    int
        Loads so far (cache hits do not count).
    """
    return _LOADS


@functools.lru_cache(maxsize=16)
def _load(path: str, device: str, mc_dropout: bool) -> Any:
    from harmonize.model import load_model_package

    global _LOADS
    model, _ = load_model_package(path, device=device)
    if mc_dropout:
        with warnings.catch_warnings():
            model.enable_mc_dropout()
    else:
        model.eval()
    import torch

    # inference only: batch normalisation folded into the convolutions (float32 rounding)
    model = _fold_batchnorm(model)
    if torch.device(device).type == "cpu":
        # oneDNN's convolutions run ~1.6x faster on NHWC than on NCHW tensors on CPUs
        # (measured with the tiny preset); values agree to float32 rounding
        model.to(memory_format=torch.channels_last)
    _LOADS += 1
    log.info("loaded model package %s on %s (mc_dropout=%s)", path, device, mc_dropout)
    return model


def load_cached(path: str | os.PathLike[str], device: str = "cpu", mc_dropout: bool = False) -> Any:
    """The model of package ``path`` on ``device``, loaded once per process and reused.

    Parameters
    ----------
    path
        Model package directory (or its ``mlm.json``).
    device
        Torch device string.
    mc_dropout
        Return a copy whose dropout layers sample at inference (a separate cache entry, so the
        deterministic copy stays deterministic).

    Returns
    -------
    harmonize.model.UNet
        The model, in eval mode (dropout sampling with ``mc_dropout``), shared by every caller
        of this process with the same arguments.
    """
    key = os.path.abspath(os.fspath(path))
    with _LOCK:  # two dask threads missing the cache at once must not both load
        return _load(key, str(device), bool(mc_dropout))


_TEMP_DIRS: list[str] = []


@atexit.register
def _cleanup_temp_packages() -> None:
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def _package_for(model: Any) -> str:
    """A package path for ``model``: the path itself, or a temporary package of a module."""
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if not (p / "mlm.json").is_file() and not (p.is_file() and p.suffix == ".json"):
            raise ModelError(
                f"no model package at {p}: expected a directory with mlm.json "
                "(write one with harmonize.model.save_model_package or `harmonize train`)"
            )
        return os.path.abspath(os.fspath(p))
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"model must be a package path, a harmonize UNet or a list of those, not {type(model)}"
        )
    from harmonize.model import save_model_package

    tmp = tempfile.mkdtemp(prefix="harmonize-model-")
    _TEMP_DIRS.append(tmp)
    save_model_package(model, tmp, metadata={"name": "in-memory", "pretrained": False})
    return tmp


def resolve_device(device: str | None) -> str:
    """The torch device to run on.

    Parameters
    ----------
    device
        A device string, or ``None`` to choose.

    Returns
    -------
    str
        ``device`` itself, or ``"cuda"`` when a GPU is available and ``"cpu"`` otherwise.
    """
    if device is not None:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ModelSpec:
    """What a dask task needs to find and run the model(s): paths and settings, no module.

    Attributes
    ----------
    paths
        Model package paths (several for an ensemble).
    device
        Torch device string.
    mc_passes
        Forward passes per member with dropout sampling (1 = deterministic).
    precision
        ``None`` (float32), ``"bf16"`` or ``"fp16"`` autocast on the device.
    input_bands, output_bands
        Band names of the model input and output channels.
    fill
        Value per input band put where the input is invalid (the model's input mean).
    size_multiple
        Tiles must start on multiples of this (the model's pooling grid).
    """

    paths: tuple[str, ...]
    device: str
    mc_passes: int
    precision: str | None
    input_bands: tuple[str, ...]
    output_bands: tuple[str, ...]
    fill: tuple[float, ...]
    size_multiple: int

    @property
    def n_samples(self) -> int:
        return len(self.paths) * self.mc_passes

    def models(self) -> list[Any]:
        return [load_cached(p, self.device, self.mc_passes > 1) for p in self.paths]


def _spec_for(
    model: ModelLike, device: str, uncertainty: Uncertainty, mc_passes: int, precision: Precision
) -> tuple[ModelSpec, int]:
    members = list(model) if isinstance(model, (list, tuple)) else [model]
    if not members:
        raise ModelError("an empty list of models; pass a package path or several for an ensemble")
    paths = tuple(_package_for(m) for m in members)
    if uncertainty == "ensemble" and len(paths) < 2:
        raise ModelError("uncertainty='ensemble' needs at least two model packages")
    if uncertainty not in (None, "mc_dropout", "ensemble"):
        raise HarmonizeError(f"unknown uncertainty {uncertainty!r}; use None, 'mc_dropout' or 'ensemble'")
    if precision not in (None, "tf32", "bf16", "fp16"):
        raise HarmonizeError(f"unknown precision {precision!r}; use None, 'tf32', 'bf16' or 'fp16'")
    passes = int(mc_passes) if uncertainty == "mc_dropout" else 1
    if passes < 2 and uncertainty == "mc_dropout":
        raise HarmonizeError("uncertainty='mc_dropout' needs mc_passes >= 2")
    loaded = [load_cached(p, device, passes > 1) for p in paths]
    first = loaded[0]
    for other, p in zip(loaded[1:], paths[1:], strict=True):
        if other.input_bands != first.input_bands or other.output_bands != first.output_bands:
            raise ModelError(
                f"ensemble member {p} has bands {other.input_bands}->{other.output_bands}, "
                f"the first has {first.input_bands}->{first.output_bands}"
            )
    for m, p in zip(loaded, paths, strict=True):
        if not getattr(m, "tile_invariant", True):
            log.warning("model %s uses per-tile normalisation: chunked inference will show seams", p)
    halo = max(int(m.receptive_halo) for m in loaded)
    spec = ModelSpec(
        paths=paths,
        device=device,
        mc_passes=passes,
        precision=precision,
        input_bands=tuple(first.input_bands),
        output_bands=tuple(first.output_bands),
        fill=tuple(float(v) for v in first.input_mean.detach().cpu()),
        size_multiple=max(int(m.size_multiple) for m in loaded),
    )
    return spec, halo


# --------------------------------------------------------------------------------------------
# One tile's forward pass, computed only where its core needs it
# --------------------------------------------------------------------------------------------
def _fold_batchnorm(model: Any) -> Any:
    """``model`` with every eval-mode BatchNorm that follows a convolution folded into that
    convolution's weights and bias (an identity in its place): one pass over the activations
    less per convolution. Values agree with the unfolded model to float32 rounding."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in model.modules():
        if not isinstance(block, torch.nn.Sequential):
            continue
        layers = list(block.children())
        for i in range(len(layers) - 1):
            conv, bn = layers[i], layers[i + 1]
            if (
                type(conv) is torch.nn.Conv2d
                and type(bn) is torch.nn.BatchNorm2d
                and not bn.training
                and bn.track_running_stats
                and bn.running_mean is not None
            ):
                block[i] = fuse_conv_bn_eval(conv, bn)
                # in eval mode like the rest: a fresh module is in training mode, and a model
                # with any training module other than dropout runs its own whole-tile forward
                block[i + 1] = torch.nn.Identity().eval()
    return model


@dataclass(frozen=True)
class _Span:
    """A half-open window ``[start, stop)`` along one axis of one UNet level."""

    start: int
    stop: int

    def grow(self, by: int, n: int) -> _Span:
        return _Span(max(0, self.start - by), min(n, self.stop + by))

    def union(self, other: _Span) -> _Span:
        return _Span(min(self.start, other.start), max(self.stop, other.stop))

    def within(self, outer: _Span) -> slice:
        """This window as a slice of a tensor that holds ``outer``."""
        return slice(self.start - outer.start, self.stop - outer.start)


def _coarse_need(fine: _Span, n_coarse: int, mode: str) -> _Span:
    """The coarse-level window an up-sampling by 2 needs for ``fine`` to come out exact.

    Bilinear (``align_corners=False``) mixes the two coarse neighbours of a fine pixel and
    clamps at a tensor's border, so an up-sampled crop is exact one fine pixel in from a border
    that is not the image's: one coarse pixel more each side covers it. Pixel shuffle is local.
    """
    if mode == "bilinear":
        return _Span(max(0, fine.start // 2 - 1), min(n_coarse, (fine.stop + 1) // 2 + 1))
    return _Span(fine.start // 2, min(n_coarse, (fine.stop + 1) // 2))


def _cropped_forward_ok(model: Any) -> bool:
    """Whether :func:`_cropped_forward` knows ``model``'s layers: a harmonize UNet in eval mode
    (dropout may sample) with tile-invariant normalisation, 3x3 blocks and no 30 m block
    constraint. Other models run their own forward over the whole tile."""
    import torch

    from harmonize.model import UNet

    if type(model) is not UNet or model.config.lowfreq_constraint or not model.tile_invariant:
        return False
    if any(m.training for m in model.modules() if not isinstance(m, torch.nn.modules.dropout._DropoutNd)):
        return False
    for block in [*model.encoders, *model.decoders]:
        convs = [m for m in block if isinstance(m, torch.nn.Conv2d)]
        if len(convs) != 2 or any(
            c.kernel_size != (3, 3) or c.padding != (1, 1) or c.stride != (1, 1) or c.dilation != (1, 1)
            for c in convs
        ):
            return False
    pool = model.pool
    pooled_by_2 = pool.kernel_size in (2, (2, 2)) and pool.padding in (0, (0, 0))
    return isinstance(pool, torch.nn.MaxPool2d) and pooled_by_2


def _block(
    block: Any, z: Any, held: tuple[_Span, _Span], want: tuple[_Span, _Span], size: tuple[int, int]
) -> Any:
    """A UNet block (two 3x3 convolutions with what follows each) over ``z``, which holds the
    window ``held`` of a level ``size`` pixels large, computed only over the window ``want``.

    Each convolution runs unpadded on what it is given, so the output is ``want`` itself and
    holds nothing to crop (a cropped view costs a copy before the next convolution or pooling);
    where a window meets the tile's edge, one pixel of zeros stands in for the whole-tile
    forward's own zero padding."""
    import torch
    import torch.nn.functional as F

    convs = [m for m in block if isinstance(m, torch.nn.Conv2d)]
    cur = held
    for layer in block:
        if not isinstance(layer, torch.nn.Conv2d):
            z = layer(z)
            continue
        later = len(convs) - 1 - convs.index(layer)
        out = tuple(s.grow(later, n) for s, n in zip(want, size, strict=True))
        (top, bottom), (left, right) = (
            (c.start - o.start + 1, o.stop + 1 - c.stop) for c, o in zip(cur, out, strict=True)
        )
        if top or bottom or left or right:
            z = F.pad(z, (left, right, top, bottom))
        z = F.conv2d(z, layer.weight, layer.bias, groups=layer.groups)
        cur = out
    return z


def _cropped_forward(model: Any, x: Any, core: tuple[slice, slice]) -> Any:
    """``model(x)[..., core[0], core[1]]``, computing every layer only where the core needs it.

    A tile's halo is there for the encoder's deep levels: the decoder's full-resolution layers,
    the most costly, need only a couple of pixels around the core, and its coarse layers a few
    more. So each block runs on its input cropped to the window its consumers need (the deep
    path, the skip connection) plus its own two-pixel reach, and computes that window only
    (:func:`_block`: unpadded convolutions, whose output needs no crop and no copy); a window
    that reaches the tile's edge stops there, with the zeros the whole-tile forward pads with.
    Crops keep the pooling grid (even starts at every level). The
    1x1 convolution of a bilinear up-sampling runs before it, on the coarse grid (the two
    commute: bilinear weights sum to one). Equal to the whole-tile forward to float rounding.
    """
    import torch
    import torch.nn.functional as F

    depth = model.config.depth
    mode = model.config.upsample
    n_rf = len(model.config.output_bands)
    h, w = x.shape[-2:]
    m = model.size_multiple
    ph, pw = (-h) % m, (-w) % m
    xin = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
    sizes = [(xin.shape[-2] >> k, xin.shape[-1] >> k) for k in range(depth)]

    # windows, from the output backwards: decoder outputs, their inputs (skips), encoder outputs
    dec_out = [None] * depth
    dec_in = [None] * depth
    dec_out[0] = (_Span(core[0].start, core[0].stop), _Span(core[1].start, core[1].stop))
    for k in range(depth - 1):
        dec_in[k] = tuple(s.grow(2, n) for s, n in zip(dec_out[k], sizes[k], strict=True))
        dec_out[k + 1] = tuple(
            _coarse_need(s, n, mode) for s, n in zip(dec_in[k], sizes[k + 1], strict=True)
        )
    enc_out = [None] * depth
    enc_in = [None] * depth
    enc_out[depth - 1] = dec_out[depth - 1]  # the bottleneck feeds the deepest up-sampling
    for k in range(depth - 1, -1, -1):
        if k < depth - 1:
            pooled = tuple(_Span(2 * s.start, 2 * s.stop) for s in enc_in[k + 1])
            enc_out[k] = tuple(a.union(b) for a, b in zip(dec_in[k], pooled, strict=True))
        enc_in[k] = tuple(s.grow(2, n) for s, n in zip(enc_out[k], sizes[k], strict=True))

    def crop(t: Any, want: tuple[_Span, _Span], held: tuple[_Span, _Span]) -> Any:
        return t[..., want[0].within(held[0]), want[1].within(held[1])]

    full = tuple(_Span(0, n) for n in sizes[0])
    z = crop(xin, enc_in[0], full)
    z = (z - model.input_mean[:, None, None]) / model.input_std[:, None, None]
    skips = []
    for k, enc in enumerate(model.encoders):
        z = _block(enc, z, enc_in[k], enc_out[k], sizes[k])
        if k < depth - 1:
            skips.append(crop(z, dec_in[k], enc_out[k]))
            z = model.pool(crop(z, tuple(_Span(2 * s.start, 2 * s.stop) for s in enc_in[k + 1]), enc_out[k]))
    z = model.dropout(z)
    for up, dec in zip(model.ups, model.decoders, strict=True):
        k = len(skips) - 1
        coarse = dec_out[k + 1]
        if mode == "bilinear":  # the 1x1 convolution first, on the coarse grid
            z = up[0](up[1](z))
        else:
            z = up(z)
        fine = tuple(_Span(2 * s.start, 2 * s.stop) for s in coarse)
        z = crop(z, dec_in[k], fine)
        z = _block(dec, torch.cat([z, skips.pop()], dim=1), dec_in[k], dec_out[k], sizes[k])
        z = model.dropout(z)
    z = model.head(z).float()
    out = model.output_offset[:, None, None] + model.output_scale[:, None, None] * z
    if model.config.residual:
        out = out + crop(xin[:, :n_rf], dec_out[0], full).float()
    return out


# --------------------------------------------------------------------------------------------
# The per-chunk computation
# --------------------------------------------------------------------------------------------
def _tiles(n: int, tile: int) -> list[tuple[int, int]]:
    return [(s, min(tile, n - s)) for s in range(0, n, tile)]


def _forward(
    models: list[Any], batch: np.ndarray, spec: ModelSpec, halo: int = 0, phase: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean (and population std when there are several samples) of all members and passes,
    over the tiles' cores (``halo`` pixels in from every side). ``phase``: where the Landsat
    30 m pixels start in the tiles (:func:`harmonize.lowfreq.landsat_grid`)."""
    import torch

    from harmonize.lowfreq import landsat_grid

    dev = torch.device(spec.device)
    if dev.type == "cuda":
        # TF32 convolutions (torch's default for cuDNN) round differently per tile shape and
        # leave seams of ~5e-4; strict float32 makes tiles match the whole image to ~1e-7.
        # A process-wide switch: every task of one graph sets the same value.
        tf32 = spec.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev, non_blocking=True)
    if dev.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    core = (slice(halo, x.shape[-2] - halo), slice(halo, x.shape[-1] - halo))
    mean = m2 = None
    k = 0
    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16 if spec.precision == "bf16" else torch.float16)
        if spec.precision in ("bf16", "fp16")
        else None
    )
    with torch.inference_mode(), landsat_grid(phase):
        for model in models:
            for _ in range(spec.mc_passes):
                if autocast is not None:
                    with autocast:
                        y = tile_forward(model, x, core).float()
                else:
                    y = tile_forward(model, x, core)
                k += 1
                if spec.n_samples == 1:  # one sample: its output is the mean (no copy)
                    mean = y
                elif mean is None:
                    mean, m2 = y.clone(), torch.zeros_like(y)
                else:  # Welford: exact zero spread for identical samples
                    delta = y - mean
                    mean += delta / k
                    m2 += delta * (y - mean)
        std = torch.sqrt(m2 / k) if k > 1 else None
        # channels_last tensors come back as NCHW-indexed numpy views with NHWC strides: the
        # caller's crop into its output is the one copy (no .contiguous() pass in between)
        return mean.cpu().numpy(), (std.cpu().numpy() if std is not None else None)


def tile_forward(model: Any, x: Any, core: tuple[slice, slice]) -> Any:
    """The model's output over the tiles' ``core`` (cropped layer by layer where it can)."""
    if _cropped_forward_ok(model):
        return _cropped_forward(model, x, core)
    return model(x)[..., core[0], core[1]]


def _predict_block(
    block: np.ndarray,
    *,
    spec: ModelSpec,
    halo: int,
    tile: int,
    batch_size: int,
    with_std: bool,
    invalid: np.ndarray | None = None,
    extra: int = 0,
    phases: tuple[tuple[int, int], ...] | None = None,
) -> np.ndarray:
    """Run the model over one halo-extended block ``[t, c, h + 2 halo, w + 2 halo]``.

    Returns ``[t, n_out * (2 if with_std else 1) + extra, h, w]``: the prediction of the block's
    core (``extra`` trailing channels left for the caller to fill),
    computed in tiles of ``tile`` pixels (each with its own ``halo``), batched ``batch_size`` at
    a time. ``block`` holds no NaN (the caller filled invalid pixels). Tiles whose core is all
    ``invalid`` (``[t, h + 2 halo, w + 2 halo]``, e.g. under cloud) are not run and come out NaN;
    tiles are independent, so the others are unchanged. ``phases``: per time step, where the
    Landsat 30 m pixels start in the block (its pixel 0 being the first halo pixel); each tile
    gets its own, counted from its first pixel.
    """
    t, _, hb, wb = block.shape
    h, w = hb - 2 * halo, wb - 2 * halo
    n_out = len(spec.output_bands)
    out = np.empty((t, n_out * (2 if with_std else 1) + extra, h, w), dtype="float32")
    if t == 0 or h <= 0 or w <= 0:
        return out
    models = spec.models()
    # group tiles by shape so each batch is one tensor
    groups: dict[tuple[int, int, tuple[int, int]], list[tuple[int, int, int]]] = {}
    for ti in range(t):
        pr, pc = phases[ti] if phases is not None else (0, 0)
        for y0, th in _tiles(h, tile):
            for x0, tw in _tiles(w, tile):
                core = (ti, slice(halo + y0, halo + y0 + th), slice(halo + x0, halo + x0 + tw))
                if invalid is not None and invalid[core].all():
                    out[ti, :, y0 : y0 + th, x0 : x0 + tw] = np.nan
                    continue
                tile_phase = ((pr - y0) % LANDSAT_FACTOR, (pc - x0) % LANDSAT_FACTOR)
                groups.setdefault((th, tw, tile_phase), []).append((ti, y0, x0))
    for (th, tw, tile_phase), where in groups.items():
        for i in range(0, len(where), batch_size):
            chunk = where[i : i + batch_size]
            if len(chunk) == 1 and (th + 2 * halo, tw + 2 * halo) == (hb, wb):
                ti = chunk[0][0]
                batch = block[ti : ti + 1]  # the tile is the whole block: a view, not a copy
            else:
                batch = np.stack(
                    [block[ti, :, y0 : y0 + th + 2 * halo, x0 : x0 + tw + 2 * halo] for ti, y0, x0 in chunk]
                )
            mean, std = _forward(models, batch, spec, halo, tile_phase)
            for j, (ti, y0, x0) in enumerate(chunk):
                out[ti, :n_out, y0 : y0 + th, x0 : x0 + tw] = mean[j]
                if with_std:
                    spread = std[j] if std is not None else 0.0
                    out[ti, n_out : 2 * n_out, y0 : y0 + th, x0 : x0 + tw] = spread
    return out


def _predict_bands(
    *blocks: np.ndarray,
    spec: ModelSpec,
    halo: int,
    tile: int,
    batch_size: int,
    with_std: bool,
    has_clear: bool,
    phases: tuple[tuple[int, int], ...] = ((0, 0),),
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """One dask task: halo-extended ``[t, y, x]`` blocks of every input band (and ``clear``) ->
    ``[t, n_out (x2 with std) + 1, h, w]`` of the core, NaN where invalid, validity last.
    ``phases``: where the Landsat pixels start in the cube, per date of the cube (one for all)."""
    # Every pass over the block is a pass over ~30 MB (a 1024-px chunk): each band is copied
    # once into the model's input, the output is written once in place (validity included),
    # and masks are applied with ``where=`` instead of boolean indexing.
    bands = blocks[: len(spec.input_bands)]
    first = bands[0]
    x = np.empty((first.shape[0], len(bands), *first.shape[1:]), dtype="float32")
    invalid = np.zeros(first.shape, dtype=bool)
    for i, b in enumerate(bands):
        x[:, i] = b
        invalid |= ~np.isfinite(x[:, i])
    if invalid.any():
        for i, v in enumerate(spec.fill):
            np.copyto(x[:, i], np.float32(v), where=invalid)
    if has_clear:  # cloudy pixels stay as observed in the input (module docstring); masked below
        invalid |= ~blocks[-1].astype(bool, copy=False)
    out = _predict_block(
        x, spec=spec, halo=halo, tile=tile, batch_size=batch_size, with_std=with_std, invalid=invalid,
        extra=1, phases=_block_phases(phases, block_info, first.shape[0], halo),
    )
    h, w = out.shape[-2:]
    core = invalid[:, halo : halo + h, halo : halo + w]
    np.copyto(out[:, :-1], np.float32(np.nan), where=core[:, None])
    np.logical_not(core, out=out[:, -1], casting="unsafe")
    return out


def _block_phases(
    phases: tuple[tuple[int, int], ...], block_info: dict[Any, Any] | None, n_time: int, halo: int
) -> tuple[tuple[int, int], ...]:
    """Per time step of a task's block, where the Landsat pixels start in the halo-extended block
    (its first pixel is ``halo`` before the core's), from the cube's phases and the block's place."""
    (t0, _), _, (y0, _), (x0, _) = block_info[None]["array-location"] if block_info else ((0, 0),) * 4
    per_date = [phases[(t0 + i) if len(phases) > 1 else 0] for i in range(n_time)]
    return tuple(((r - y0 + halo) % LANDSAT_FACTOR, (c - x0 + halo) % LANDSAT_FACTOR) for r, c in per_date)


def predict_array(
    x: np.ndarray,
    model: ModelLike,
    *,
    clear: np.ndarray | None = None,
    halo: int | None = None,
    device: str | None = None,
    uncertainty: Uncertainty = None,
    mc_passes: int = 8,
    precision: Precision = None,
    landsat_phase: PhaseLike = None,
) -> np.ndarray:
    """Whole-image inference on an in-memory array: the reference :func:`super_resolve` matches.

    Parameters
    ----------
    x
        ``[7, H, W]`` or ``[T, 7, H, W]`` reflectance in the model's input band order, NaN
        allowed (filled with the model's input mean, then NaN in the output).
    clear
        Optional ``[H, W]`` / ``[T, H, W]`` boolean mask; false pixels go to the model as observed
        and are NaN in the output.
    model, device, uncertainty, mc_passes, precision
        As in :func:`super_resolve`.
    halo
        Mirror padding on each side (default the model's receptive halo).
    landsat_phase
        Where the Landsat 30 m pixels start in ``x`` (one ``(row, col)``, or one per image), as
        in :func:`super_resolve`.

    Returns
    -------
    numpy.ndarray
        ``[6, H, W]`` or ``[T, 6, H, W]`` (twice the bands, std after mean, with uncertainty).
    """
    spec, model_halo = _spec_for(model, resolve_device(device), uncertainty, mc_passes, precision)
    halo = model_halo if halo is None else int(halo)
    arr = np.asarray(x, dtype="float32")
    single = arr.ndim == 3
    arr = arr[None] if single else arr
    invalid = ~np.isfinite(arr).all(axis=1, keepdims=True)
    filled = np.where(invalid, np.asarray(spec.fill, "float32")[None, :, None, None], arr)
    if clear is not None:  # cloudy pixels go in as observed, and come out NaN
        invalid |= ~np.asarray(clear, bool).reshape(arr.shape[0], 1, *arr.shape[-2:])
    padded = np.pad(filled, ((0, 0), (0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    size = max(arr.shape[-2:])
    phases = _phases(landsat_phase, arr.shape[0])
    out = _predict_block(
        padded, spec=spec, halo=halo, tile=size, batch_size=1, with_std=uncertainty is not None,
        phases=_block_phases(phases, None, arr.shape[0], halo),
    )
    out = np.where(invalid, np.float32(np.nan), out)
    return out[0] if single else out


# --------------------------------------------------------------------------------------------
# The cube-level entry point
# --------------------------------------------------------------------------------------------
def _round_up(v: int, m: int) -> int:
    return -(-int(v) // m) * m


def _spatial_chunks(n: int, size: int, halo: int) -> tuple[int, ...]:
    """Chunks of ``size`` along an axis of ``n``; a last chunk shorter than the halo merges into
    its neighbour (dask would otherwise rechunk the overlap and move chunk starts off the grid)."""
    chunks = [size] * (n // size) + ([n % size] if n % size else [])
    if len(chunks) > 1 and chunks[-1] < halo:
        last = chunks.pop()
        chunks[-1] += last
    return tuple(chunks)


def _chunk_size(cube: xr.Dataset, band: str, dim: str, chunks: int | Mapping[str, int] | None) -> int | None:
    if isinstance(chunks, Mapping):
        return chunks.get(dim)
    if isinstance(chunks, int):
        return chunks
    var = cube[band]
    if var.chunks is not None:
        return int(max(var.chunks[var.dims.index(dim)]))
    return None


def _landsat_dates(cube: xr.Dataset) -> xr.Dataset:
    if "sensor" not in cube.coords:
        return cube
    sensor = cube["sensor"]
    if "time" not in sensor.dims:
        if str(sensor.values) != "landsat":
            raise HarmonizeError(f"the cube holds {sensor.values} data; super_resolve needs Landsat dates")
        return cube
    keep = np.asarray(sensor.values == "landsat")
    if not keep.any():
        raise HarmonizeError(
            "the cube has no Landsat dates (sensor == 'landsat'); load Landsat items into it "
            "(harmonize.cube.load_cube with the landsat collections) before super_resolve"
        )
    return cube.isel(time=np.flatnonzero(keep))


def _edges(chunks: tuple[int, ...], step: int | None, n: int) -> list[int]:
    """Region edges along one axis: every ``step``-th chunk edge (all of it with ``None``)."""
    edges = np.cumsum((0, *chunks)).tolist()
    edges = edges[:: max(1, int(step))] if step else [0]
    if edges[-1] != n:
        edges.append(n)
    return [int(e) for e in edges]


def stripes(ds: xr.Dataset, rows: int = 1, cols: int | None = 2) -> list[dict[str, slice]]:
    """Regions of ``ds`` ``rows`` rows of chunks high and at most ``cols`` chunks wide, full time.

    Computing (or writing) a super-resolved dataset region by region bounds memory by a region
    instead of the whole scene: given the whole graph at once, dask materialises input chunks
    far ahead of the model (measured with a null model on 2 CPUs, 1024-px chunks: peak RSS
    0.73 / 1.1 / 2.5 GB for 2048² / 4096² / 8192² at once). Full-width stripes still grew with
    the scene's width (1.16 GB at 2048², 1.66 GB at 8192² with the tiny model and a Zarr
    sink), so a region is at most ``cols`` chunks wide: every region of a large scene is then
    the size of a 2048² scene's stripe, and peak memory is flat in the scene size. Each region
    re-reads the halo of its neighbours' chunks (the input is cheap beside the model).

    Parameters
    ----------
    ds
        A chunked dataset on ``(time, y, x)`` (e.g. :func:`super_resolve`'s result).
    rows
        Rows of chunks per region.
    cols
        Chunks per region along ``x`` (``None``: the full width, one stripe per row).

    Returns
    -------
    list of dict
        ``{"time": slice, "y": slice, "x": slice}`` regions, row by row, usable with
        ``ds.isel(**region)`` and as ``write_zarr(..., region=region)``.
    """
    first = next(iter(ds.data_vars.values()))

    def chunks(dim: str) -> tuple[int, ...]:
        return first.chunks[first.dims.index(dim)] if first.chunks is not None else (ds.sizes[dim],)

    ys = _edges(chunks("y"), rows, ds.sizes["y"])
    xs = _edges(chunks("x"), cols, ds.sizes["x"]) if "x" in ds.dims else [0, 0]
    full = {"time": slice(0, ds.sizes["time"])} if "time" in ds.dims else {}
    return [
        {**full, "y": slice(y0, y1), "x": slice(x0, x1)}
        for y0, y1 in zip(ys[:-1], ys[1:], strict=True)
        for x0, x1 in zip(xs[:-1], xs[1:], strict=True)
    ]


def super_resolve(
    cube: xr.Dataset,
    model: ModelLike,
    *,
    chunks: int | Mapping[str, int] | None = None,
    halo: int | None = None,
    batch_size: int = 8,
    tile: int | None = None,
    device: str | None = None,
    uncertainty: Uncertainty = None,
    mc_passes: int = 8,
    precision: Precision = None,
    landsat_phase: PhaseLike = None,
) -> xr.Dataset:
    """Harmonize and super-resolve the Landsat dates of a cube into Sentinel-2-like 10 m bands.

    Parameters
    ----------
    cube
        Dataset on ``(time, y, x)`` with float32 reflectance ``blue, green, red, nir, swir16,
        swir22, pan`` on the 10 m grid (NaN no data), optionally a boolean ``clear`` and a
        ``sensor`` time coordinate (only ``"landsat"`` dates are used), with a CRS.
    model
        A model package path, an in-memory :class:`harmonize.model.UNet` (written to a
        temporary package so dask tasks carry a path, not the module), or a list of those
        (an ensemble: the output is the members' mean).
    chunks
        Spatial chunk size in pixels (int, or ``{"y": .., "x": ..}``); default the cube's own
        chunks, merged up to :data:`DEFAULT_CHUNK` (1024 on CPU, 2048 on CUDA) so the halo costs
        little. Rounded up to the model's ``size_multiple`` and to at least ``halo``.
    halo
        Context pixels on each side of a chunk (default and minimum sensible value:
        ``model.receptive_halo``; less gives seams, with a warning).
    batch_size
        Tiles per forward pass.
    tile
        Inner tile size in pixels (default: the whole chunk). Smaller tiles bound the
        activations' memory on a GPU; each tile carries its own halo.
    device
        ``"cuda"``, ``"cpu"`` … (default ``"cuda"`` when available).
    uncertainty
        ``"mc_dropout"``: ``mc_passes`` passes with dropout sampling; ``"ensemble"``: spread of
        the list of models (also the default with a list); ``None``: no spread. Adds a
        ``<band>_std`` variable per band.
    mc_passes
        Passes per model with ``uncertainty="mc_dropout"``.
    precision
        ``None``: strict float32 (on CUDA TF32 is switched off process-wide, so chunked and
        whole-image results agree to ~1e-7; measured on an H200). ``"tf32"``: TF32 convolutions
        (faster on Ampere+, seams up to ~5e-4). ``"bf16"`` / ``"fp16"``: autocast (GPU; ~5e-3 /
        ~8e-4 from float32 on random weights).
    landsat_phase
        Where the Landsat 30 m pixels start in the cube: ``(row, col)`` in ``0..2``
        (:func:`harmonize.lowfreq.grid_phase` of the cube's grid and the scenes' 30 m grid, with
        a co-registration shift), one for every date or a list with one per Landsat date of the
        cube. Models whose blocks are Landsat pixels (the low-frequency constraint, the
        Deep-Harmonization pre-interpolation) use it in every tile; others ignore it. Default
        ``(0, 0)``: the cube's pixel 0 begins a Landsat pixel.

    Returns
    -------
    xarray.Dataset
        Lazy (dask) float32 ``blue … swir22`` (and ``<band>_std``) on the cube's grid and Landsat
        times, with the cube's coordinates and CRS, and ``clear``: true where every input band
        was valid and clear. Outputs are NaN wherever ``clear`` is false.

    Raises
    ------
    UnknownBandError
        When the cube lacks an input band of the model.
    HarmonizeError
        When the cube has no Landsat dates or no CRS, or a setting is invalid.
    ModelError
        When a model path is not a package.

    Notes
    -----
    To write a large scene with bounded memory, write it stripe by stripe (:func:`stripes`):
    the infer stage does.
    """
    dev = resolve_device(device)
    members = model if isinstance(model, (list, tuple)) else [model]
    if uncertainty is None and len(members) > 1:
        uncertainty = "ensemble"
    spec, model_halo = _spec_for(model, dev, uncertainty, mc_passes, precision)
    halo = model_halo if halo is None else int(halo)
    if halo < model_halo:
        log.warning(
            "halo %d < the model's receptive halo %d: chunk borders will show seams", halo, model_halo
        )
    cube = _landsat_input(cube, spec)
    phases = _phases(landsat_phase, cube.sizes["time"])
    cy, cx = _chunk_plan(cube, spec, chunks, halo, DEFAULT_CHUNK["cuda" if dev.startswith("cuda") else "cpu"])
    overlapped, cy, cx = _overlapped_inputs(cube, spec, cy, cx, halo)
    with_std = uncertainty is not None
    tile_px = int(tile) if tile else max(max(cy), max(cx))
    pred = da.map_blocks(
        _predict_bands,
        *overlapped,
        spec=spec,
        halo=halo,
        tile=_round_up(max(tile_px, spec.size_multiple), spec.size_multiple),
        batch_size=int(batch_size),
        with_std=with_std,
        has_clear="clear" in cube.data_vars,
        phases=phases,
        new_axis=1,
        chunks=(overlapped[0].chunks[0], (len(spec.output_bands) * (2 if with_std else 1) + 1,), cy, cx),
        dtype="float32",
        meta=np.empty((0, 0, 0, 0), "float32"),
        # a key prefix, not the key: the hash of the arguments (model paths, input arrays) keeps
        # two results of one graph (two models, two cubes) apart
        token="harmonize-super-resolve",
    )
    return _output_dataset(cube, pred, spec, halo, uncertainty)


def _phases(landsat_phase: PhaseLike, n_time: int) -> tuple[tuple[int, int], ...]:
    """``landsat_phase`` as one ``(row, col)`` for all dates or one per date, checked."""
    if landsat_phase is None:
        return ((0, 0),)
    arr = np.asarray(landsat_phase, dtype=int)
    if arr.shape == (2,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) not in (1, n_time):
        raise HarmonizeError(
            f"landsat_phase must be one (row, col) or one per Landsat date ({n_time}), got shape "
            f"{np.shape(landsat_phase)}; compute it with harmonize.lowfreq.grid_phase"
        )
    return tuple((int(r) % LANDSAT_FACTOR, int(c) % LANDSAT_FACTOR) for r, c in arr)


def _landsat_input(cube: xr.Dataset, spec: ModelSpec) -> xr.Dataset:
    """The cube's Landsat dates as ``(time, y, x)``, after checking bands and CRS."""
    missing = [b for b in spec.input_bands if b not in cube.data_vars]
    if missing:
        raise UnknownBandError(
            f"the cube lacks bands {missing} the model needs ({list(spec.input_bands)}); "
            "load them with harmonize.cube.load_cube (pan comes from the landsat-c2l1 collection)"
        )
    if cube.rio.crs is None:
        raise CRSMismatchError("the cube carries no CRS; super_resolve keeps the cube's grid and needs one")
    cube = _landsat_dates(cube)
    if "time" not in cube.dims:
        cube = cube.expand_dims("time")
    return cube.transpose("time", "y", "x", ...)


def _chunk_plan(
    cube: xr.Dataset,
    spec: ModelSpec,
    chunks: int | Mapping[str, int] | None,
    halo: int,
    floor: int,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Spatial chunks ``(cy, cx)`` of the graph: asked for, or the cube's merged up to ``floor``;
    at least ``halo`` and on the model's ``size_multiple`` grid."""
    m = spec.size_multiple
    first = spec.input_bands[0]
    plan = []
    for dim in ("y", "x"):
        n = cube.sizes[dim]
        c = _chunk_size(cube, first, dim, chunks)
        if c is None or chunks is None:  # not asked for: the cube's chunks, merged up to the floor
            c = max(c or 0, floor)
        plan.append(_spatial_chunks(n, _round_up(max(min(c, n), halo, m), m), halo))
    return plan[0], plan[1]


def _overlapped_inputs(
    cube: xr.Dataset, spec: ModelSpec, cy: tuple[int, ...], cx: tuple[int, ...], halo: int
) -> tuple[list[da.Array], tuple[int, ...], tuple[int, ...]]:
    """Each input band (and ``clear``) as a dask array chunked ``(1, cy, cx)`` and extended by a
    mirrored ``halo``; returns them with the chunks of the cores (one chunk for a scene smaller
    than the halo)."""

    def lazy(var: xr.DataArray, dtype: str) -> da.Array:
        d = var.data if isinstance(var.data, da.Array) else da.asarray(var.data)
        return d.astype(dtype).rechunk((1, cy, cx))

    # Bands stay separate dask arrays, each overlapped on its own: filling, stacking and masking
    # happen inside the task, so no filled or stacked copy of the cube lives in the graph.
    arrays = [lazy(cube[b], "float32") for b in spec.input_bands]
    if "clear" in cube.data_vars:
        arrays.append(lazy(cube["clear"], "bool"))
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    if min(ny, nx) >= halo:
        overlapped = [
            da.overlap.overlap(
                a, depth={0: 0, 1: halo, 2: halo}, boundary={0: "none", 1: "reflect", 2: "reflect"}
            )
            for a in arrays
        ]
        return overlapped, cy, cx

    # dask cannot mirror more pixels than an axis has; numpy can (it reflects repeatedly)
    def mirror(b: np.ndarray) -> np.ndarray:
        return np.pad(b, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")

    overlapped = [
        a.rechunk((1, -1, -1)).map_blocks(
            mirror, chunks=(a.chunks[0], (ny + 2 * halo,), (nx + 2 * halo,)), dtype=a.dtype
        )
        for a in arrays
    ]
    return overlapped, (ny,), (nx,)


def _output_dataset(
    cube: xr.Dataset, pred: da.Array, spec: ModelSpec, halo: int, uncertainty: Uncertainty
) -> xr.Dataset:
    """The prediction ``[t, bands (+ std) + validity, y, x]`` as a Dataset on the cube's grid."""
    dims = ("time", "y", "x")
    n_out = len(spec.output_bands)
    data_vars: dict[str, Any] = {}
    for i, b in enumerate(spec.output_bands):
        data_vars[b] = (dims, pred[:, i], {"long_name": f"Sentinel-2-like {b} reflectance", "units": "1"})
    if uncertainty is not None:
        for i, b in enumerate(spec.output_bands):
            data_vars[f"{b}_std"] = (
                dims,
                pred[:, n_out + i],
                {"long_name": f"standard deviation of {b} ({uncertainty})", "units": "1"},
            )
    data_vars["clear"] = (dims, pred[:, -1] > 0.5, {"long_name": "valid clear input in every band"})
    coords = {k: v for k, v in cube.coords.items() if set(v.dims) <= set(dims)}
    out = xr.Dataset(data_vars, coords=coords)
    out.attrs = {
        "harmonize:models": [os.fspath(p) for p in spec.paths],
        "harmonize:halo": halo,
        "harmonize:uncertainty": uncertainty or "none",
        "harmonize:mc_passes": spec.mc_passes,
    }
    return out.rio.write_crs(cube.rio.crs)
