"""Deep-Harmonization UNets (Sambandham et al. 2024) with the published state-dict keys.

The paper's four trained models (``UNet-6depth-upsample``, ``UNet-5depth-upsample``,
``UNet-6depth-shuffle``, ``UNet-5depth-shuffle``) are plain UNets on 10 m inputs: a 7-channel
input (``l8MS`` = Landsat C2 L2 surface reflectance blue, green, red, nir08, swir16, swir22,
bicubic-interpolated from 30 m to 10 m, then ``l8pan`` = C2 L1 TOA pan reflectance interpolated
onto the same grid), encoder levels of ``2 ** (growth_factor + i)`` channels (64 … 1024 at depth
5, 64 … 2048 at depth 6) of two 3x3 convolutions + PReLU (one shared slope), 2x2 average pooling,
decoder levels that up-sample (``upsample``: bilinear x2 + 1x1 convolution; ``shuffle``: a 3x3
convolution to 4x the channels, PReLU, ``PixelShuffle(2)``, a 3x3 convolution), concatenate the
skip and run the same two convolutions, and a final 1x1 convolution to the 6 Sentinel-2-like
bands. The output is reflectance itself (not a
residual) and the network has no input normalisation.

This module is harmonize's own implementation of that structure, with the same module names, so
that a checkpoint's keys map onto it through :func:`key_map` (plain data, no code from the
checkpoint is ever run). :class:`DeepHarmonizationUNet` wraps the network as ``model`` (the hub
models' key prefix) and takes harmonize's input (``[N, 7, H, W]``: ``blue … swir22, pan`` on the
10 m grid, as :func:`harmonize.infer.super_resolve` passes it): it redoes the paper's
pre-interpolation (30 m block means, then bicubic x3) so a cube resampled bilinearly or by
nearest neighbour feeds it as the paper did, and can apply the low-frequency constraint
(:mod:`harmonize.lowfreq`).

The hub models are the repository's attention UNet with attention and channel attention off
(``training/models/AttenUNet/AUNet.py``; the printed hub model has exactly the modules above):
its ``shuffle`` up-sampling is the layout above (``Upsize.0`` 3x3 to 4x channels, ``Upsize.1``
PReLU, ``Upsize.3`` 3x3), which ``training/models/UNet.py`` lacks (it has ``upsample`` and a
transposed-convolution ``upconv``). The hub snapshots' own code is not readable here, so
:func:`harmonize.model_import.import_model` refuses a checkpoint whose keys or shapes differ,
listing them: a different layout is reported, never half loaded.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from harmonize.band_io import BandIO
from harmonize.bands import PAN, REFLECTANCE_BANDS
from harmonize.errors import ModelError
from harmonize.lowfreq import LANDSAT_FACTOR, current_phase, hls_oli_to_msi, lowfreq_project

__all__ = ["DHConfig", "DeepHarmonizationUNet", "DH_PRESETS", "ARCHITECTURE", "key_map",
           "SOURCE_PREFIXES"]

#: ``harmonize:architecture`` of these models in a model package.
ARCHITECTURE = "deep-harmonization"

#: Prefixes the published and training checkpoints put before the network's own keys: the hub
#: wrapper (``model.``), a DataParallel copy of it, a bare network from the training repository.
SOURCE_PREFIXES: tuple[str, ...] = ("model.", "module.model.", "module.", "")

#: Reflectance means used to fill no-data before the model (the caller masks the output after).
_FILL = {"blue": 0.06, "green": 0.09, "red": 0.10, "nir": 0.25, "swir16": 0.22, "swir22": 0.15,
         "pan": 0.09}


class DHConfig(BaseModel):
    """Architecture of a :class:`DeepHarmonizationUNet` (frozen).

    Attributes
    ----------
    depth
        Encoder levels (``depth - 1`` poolings).
    growth_factor
        Level ``i`` has ``2 ** (growth_factor + i)`` channels (6: 64 at full resolution).
    up_mode
        ``"upsample"`` (bilinear x2 + 1x1 convolution) or ``"shuffle"`` (3x3 convolution to 4x
        the channels, PReLU, ``PixelShuffle(2)``, 3x3 convolution).
    pre_interpolation
        ``"bicubic"``: the 6 reflectance bands are reduced to their 30 m block means and
        bicubic-interpolated x3 before the network (the paper's input); ``"none"``: passed as
        loaded (the cube must then be loaded with ``resampling="cubic"``).
    lowfreq_constraint
        Replace the output's 30 m means by the HLS-adjusted input's (:mod:`harmonize.lowfreq`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Literal["deep-harmonization"] = ARCHITECTURE
    depth: int = Field(5, ge=2, le=7)
    growth_factor: int = Field(6, ge=1, le=8)
    up_mode: Literal["upsample", "shuffle"] = "upsample"
    pre_interpolation: Literal["bicubic", "none"] = "bicubic"
    lowfreq_constraint: bool = False
    input_bands: tuple[str, ...] = REFLECTANCE_BANDS + (PAN,)
    output_bands: tuple[str, ...] = REFLECTANCE_BANDS


#: The four published models, by their hub names (``venkatesh-thiru/s2l8h-<name>``).
DH_PRESETS: dict[str, DHConfig] = {
    f"UNet-{d}depth-{m}": DHConfig(depth=d, up_mode=m)
    for d in (6, 5) for m in ("upsample", "shuffle")
}


class UNetConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by a PReLU with one shared slope."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.PReLU(),
                                   nn.Conv2d(cout, cout, 3, padding=1), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNetUpConvBlock(nn.Module):
    """Up-sample by 2 (``Upsize``), concatenate the skip, two convolutions (``conv``)."""

    def __init__(self, cin: int, cout: int, up_mode: str) -> None:
        super().__init__()
        if up_mode == "upsample":
            self.Upsize = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                        nn.Conv2d(cin, cout, 1))
        else:
            self.Upsize = nn.Sequential(nn.Conv2d(cin, cout * 4, 3, padding=1), nn.PReLU(),
                                        nn.PixelShuffle(2), nn.Conv2d(cout, cout, 3, padding=1))
        self.conv = UNetConvBlock(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.Upsize(x)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class SRUNet(nn.Module):
    """The network itself: ``encoding_module``, ``decoding_module``, ``final``."""

    def __init__(self, cfg: DHConfig) -> None:
        super().__init__()
        chans = [2 ** (cfg.growth_factor + i) for i in range(cfg.depth)]
        self.encoding_module = nn.ModuleList()
        prev = len(cfg.input_bands)
        for c in chans:
            self.encoding_module.append(UNetConvBlock(prev, c))
            prev = c
        self.decoding_module = nn.ModuleList()
        for c in reversed(chans[:-1]):
            self.decoding_module.append(UNetUpConvBlock(prev, c, cfg.up_mode))
            prev = c
        self.final = nn.Conv2d(prev, len(cfg.output_bands), 1)

    def forward(self, ms: torch.Tensor, pan: torch.Tensor) -> torch.Tensor:
        x = torch.cat([ms, pan], dim=1)
        skips = []
        for i, enc in enumerate(self.encoding_module):
            x = enc(x)
            if i < len(self.encoding_module) - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for dec in self.decoding_module:
            x = dec(x, skips.pop())
        return self.final(x)


def _receptive_field(cfg: DHConfig) -> int:
    """Theoretical receptive field (pixels) of the deepest path through :class:`SRUNet`."""
    rf, jump = 1, 1
    for level in range(cfg.depth):
        rf += 2 * 2 * jump  # two 3x3 convolutions
        if level < cfg.depth - 1:
            rf += jump  # 2x2 average pool
            jump *= 2
    for _ in range(cfg.depth - 1):
        # bilinear x2 mixes a 3-wide coarse neighbourhood; shuffle adds a coarse 3x3 convolution
        rf += 2 * jump
        jump //= 2
        rf += 2 * 2 * jump + (2 * jump if cfg.up_mode == "shuffle" else 0)
    return rf


class DeepHarmonizationUNet(BandIO, nn.Module):
    """A Deep-Harmonization UNet behind harmonize's model contract (see the module docstring).

    Same surface as :class:`harmonize.model.UNet` for inference: ``input_bands``,
    ``output_bands``, ``size_multiple``, ``receptive_halo``, ``tile_invariant``, ``input_mean``
    (the no-data fill), ``enable_mc_dropout``.
    """

    architecture = ARCHITECTURE

    def __init__(self, config: DHConfig) -> None:
        super().__init__()
        self.config = config
        self.model = SRUNet(config)
        for name, value in self.own_buffers().items():
            self.register_buffer(name, value)

    def own_buffers(self) -> dict[str, torch.Tensor]:
        """The buffers that come from the config, not a checkpoint (on the CPU): the no-data
        fill, and the HLS bandpass of the low-frequency constraint."""
        cfg = self.config
        out = {"input_mean": torch.tensor([_FILL.get(b, 0.1) for b in cfg.input_bands], device="cpu")}
        if cfg.lowfreq_constraint:
            slope, offset = hls_oli_to_msi(cfg.output_bands)
            out["bandpass_slope"] = torch.tensor(slope, device="cpu")
            out["bandpass_offset"] = torch.tensor(offset, device="cpu")
        return out

    @property
    def size_multiple(self) -> int:
        pool = 2 ** (self.config.depth - 1)
        needs_blocks = self.config.lowfreq_constraint or self.config.pre_interpolation == "bicubic"
        return math.lcm(pool, LANDSAT_FACTOR) if needs_blocks else pool

    @property
    def receptive_halo(self) -> int:
        # + two 30 m pixels for the bicubic pre-interpolation's 4-tap kernel
        half = _receptive_field(self.config) // 2 + 2 * LANDSAT_FACTOR
        m = self.size_multiple
        return max(32, -(-half // m) * m)

    @property
    def tile_invariant(self) -> bool:
        return True

    def enable_mc_dropout(self) -> DeepHarmonizationUNet:
        """The published UNets have no dropout: eval mode, deterministic (ensemble them instead)."""
        return self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sentinel-2-like reflectance ``[N, 6, H, W]`` from harmonize's ``[N, 7, H, W]`` input."""
        n_ms = len(self.output_bands)
        self.check_input(x)
        h, w = x.shape[-2:]
        m = self.size_multiple
        # the pre-interpolation's and the constraint's blocks are the Landsat pixels: pad so they
        # start at pixel 0 (lowfreq.landsat_grid), then to the pooling grid
        pr, pc = current_phase() if m % LANDSAT_FACTOR == 0 else (0, 0)
        top, left = (-pr) % LANDSAT_FACTOR, (-pc) % LANDSAT_FACTOR
        ph, pw = (-(h + top)) % m, (-(w + left)) % m
        xin = F.pad(x, (left, pw, top, ph), mode="replicate") if (ph or pw or top or left) else x
        ms, pan = xin[:, :n_ms], xin[:, n_ms:]
        if self.config.pre_interpolation == "bicubic":
            ms = F.interpolate(F.avg_pool2d(ms, LANDSAT_FACTOR), scale_factor=LANDSAT_FACTOR,
                               mode="bicubic", align_corners=False)
        out = self.model(ms, pan)
        if self.config.lowfreq_constraint:
            ref = self.bandpass_slope[:, None, None] * xin[:, :n_ms] + self.bandpass_offset[:, None, None]
            out = lowfreq_project(out, ref, phase=(0, 0))
        return out[..., top : top + h, left : left + w]


def key_map(config: DHConfig, prefix: str = "model.") -> dict[str, str]:
    """Checkpoint key -> key of :class:`DeepHarmonizationUNet` for the network's weights.

    Parameters
    ----------
    config
        The architecture the checkpoint should hold.
    prefix
        What the checkpoint puts before the network's keys (one of :data:`SOURCE_PREFIXES`).
    """
    with torch.device("meta"):
        ours = [k for k in DeepHarmonizationUNet(config).state_dict() if k.startswith("model.")]
    return {prefix + k.removeprefix("model."): k for k in ours}


def infer_config(state: dict[str, Any], prefix: str, **fields: Any) -> DHConfig:
    """The :class:`DHConfig` a checkpoint's keys and shapes describe (depth, width, up-sampling)."""
    enc = {k.removeprefix(prefix).split(".")[1] for k in state
           if k.removeprefix(prefix).startswith("encoding_module.")}
    first = state.get(f"{prefix}encoding_module.0.block.0.weight")
    if not enc or first is None:
        raise ModelError("the checkpoint holds no 'encoding_module.0.block.0.weight': not a "
                         "Deep-Harmonization UNet (name a preset with --preset to see the key list)")
    growth = int(round(math.log2(first.shape[0])))
    shuffle = any(k.removeprefix(prefix).startswith("decoding_module.0.Upsize.0.") for k in state)
    return DHConfig(depth=len(enc), growth_factor=growth, up_mode="shuffle" if shuffle else "upsample",
                    **fields)
