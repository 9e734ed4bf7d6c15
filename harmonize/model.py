"""The harmonization UNet: Landsat (6 reflectance bands + pan on the 10 m grid) -> Sentinel-2-like.

The network is a plain UNet whose output is *residual over its input*: it predicts a correction
that is added to the six Landsat reflectance bands, so an untrained model (the last layer starts at
zero) is the identity on those bands. It normalises its own inputs and outputs with registered
buffers, so callers pass reflectance in and get reflectance out.

Contract for callers
--------------------
- Input: float32 tensor ``[N, 7, H, W]``, bands ``blue, green, red, nir, swir16, swir22, pan``
  (:attr:`UNet.input_bands`), physical reflectance resampled onto the 10 m grid.
- Output: float32 tensor ``[N, 6, H, W]``, bands ``blue … swir22`` (:attr:`UNet.output_bands`).
- NaN is not allowed in the input (a NaN spreads over the whole receptive field): the caller fills
  no-data first (e.g. with the band mean or a nearest valid value) and masks the output afterwards.
  :meth:`UNet.forward` raises :class:`~harmonize.errors.ModelError` on non-finite input.
- Any ``H, W`` works; sizes that are not a multiple of :attr:`UNet.size_multiple`
  (``2 ** (depth - 1)``) are padded internally (edge replication) and cropped back.
- Seamless tiling: in ``eval()`` mode with ``norm="batch"`` or ``"none"``, a tile computed with
  :attr:`UNet.receptive_halo` pixels of context on every side, whose origin lies on a multiple of
  :attr:`UNet.size_multiple`, equals the same pixels computed on the whole image.
  ``"group"``/``"instance"`` normalisation depend on tile statistics and are not tile-invariant
  (:attr:`UNet.tile_invariant` is ``False``).

Model packages (:func:`save_model_package` / :func:`load_model_package`) are a directory with the
weights as safetensors and a STAC Item in the Machine Learning Model (MLM) extension's terms; they
never hold pickled objects.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from harmonize.band_io import BandIO
from harmonize.bands import PAN, REFLECTANCE_BANDS
from harmonize.errors import ModelError, NonFiniteWeightsError, WeightsChecksumError
from harmonize.lowfreq import LANDSAT_FACTOR, lowfreq_project

__all__ = [
    "UNetConfig",
    "UNet",
    "UNET_ARCHITECTURE",
    "PRESETS",
    "build_model",
    "count_parameters",
    "save_model_package",
    "load_model_package",
    "MLM_SCHEMA",
    "WEIGHTS_FILE",
    "METADATA_FILE",
]

log = logging.getLogger(__name__)

#: ``harmonize:architecture`` of :class:`UNet` packages (packages without the property are these).
UNET_ARCHITECTURE = "harmonize-unet"
MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "mlm.json"

#: Typical land reflectance statistics, used until :meth:`UNet.set_normalization` is called with
#: statistics of the training data (``fit`` does this).
_DEFAULT_MEAN = {"blue": 0.06, "green": 0.09, "red": 0.10, "nir": 0.25, "swir16": 0.22,
                 "swir22": 0.15, "pan": 0.09}
_DEFAULT_STD = {"blue": 0.04, "green": 0.05, "red": 0.07, "nir": 0.10, "swir16": 0.09,
                "swir22": 0.08, "pan": 0.06}
#: Typical size of a Landsat -> Sentinel-2 correction in reflectance (scales the network's output).
_DEFAULT_OUTPUT_SCALE = 0.02


class UNetConfig(BaseModel):
    """Architecture of a :class:`UNet` (frozen; build one with :func:`build_model`).

    Attributes
    ----------
    depth
        Number of resolution levels including the bottleneck (``depth - 1`` poolings by 2).
    base_channels
        Channels at full resolution; doubled at every level down.
    upsample
        ``"bilinear"`` (bilinear up-sampling then a 1x1 convolution halving the channels) or
        ``"pixelshuffle"`` (1x1 convolution to 4x the channels then ``PixelShuffle(2)``).
    norm
        ``"batch"``, ``"group"``, ``"instance"`` or ``"none"`` after each 3x3 convolution.
    activation
        ``"relu"`` or ``"prelu"`` (one learned slope per channel).
    dropout
        ``Dropout2d`` probability after the bottleneck and each decoder block (0 disables);
        usable at inference for MC-dropout through :meth:`UNet.enable_mc_dropout`.
    residual
        Add the prediction to the input's reflectance bands (``True``) or predict reflectance
        directly around the output offset.
    groups
        Number of groups for ``norm="group"`` (capped by the channel count).
    input_bands, output_bands
        Canonical band names of the input and output channels; the output bands must be the
        first input bands when ``residual`` is set.
    lowfreq_constraint
        Replace the output's 30 m (3 x 3 pixel) block means by those of the bandpass-adjusted
        input (:mod:`harmonize.lowfreq`, after SEN2SR): radiometry kept by construction, the
        network adds only detail below the Landsat pixel. The model then pads to a multiple of
        3 as well (:attr:`UNet.size_multiple`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    depth: int = Field(4, ge=2, le=7)
    base_channels: int = Field(32, ge=4, le=256)
    upsample: Literal["bilinear", "pixelshuffle"] = "bilinear"
    norm: Literal["batch", "group", "instance", "none"] = "batch"
    activation: Literal["relu", "prelu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    residual: bool = True
    groups: int = Field(8, ge=1)
    input_bands: tuple[str, ...] = REFLECTANCE_BANDS + (PAN,)
    output_bands: tuple[str, ...] = REFLECTANCE_BANDS
    lowfreq_constraint: bool = False

    @field_validator("output_bands")
    @classmethod
    def _outputs_lead_inputs(cls, v: tuple[str, ...], info: Any) -> tuple[str, ...]:
        inputs = info.data.get("input_bands", ())
        if info.data.get("residual", True) and tuple(inputs[: len(v)]) != tuple(v):
            raise ValueError(
                f"residual model needs output_bands {v} to be the first input_bands {inputs}"
            )
        return v


#: Named configurations. ``paper-5depth`` follows the published Deep-Harmonization description:
#: 5 levels, 64 base channels doubling per level (64 … 1024), PReLU, about 29 M parameters.
PRESETS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(depth=3, base_channels=16, activation="relu", norm="batch", dropout=0.0),
    "base": UNetConfig(depth=4, base_channels=32, activation="prelu", norm="batch", dropout=0.1),
    "paper-5depth": UNetConfig(depth=5, base_channels=64, activation="prelu", norm="batch",
                               dropout=0.0),
}


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(groups, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def _act(kind: str, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else nn.ReLU(inplace=True)


class _ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and activation."""

    def __init__(self, cin: int, cout: int, cfg: UNetConfig) -> None:
        bias = cfg.norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
            _norm(cfg.norm, cout, cfg.groups),
            _act(cfg.activation, cout),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
            _norm(cfg.norm, cout, cfg.groups),
            _act(cfg.activation, cout),
        )


class _Up(nn.Sequential):
    """Up-sample by 2 and halve the channels."""

    def __init__(self, cin: int, cout: int, mode: str) -> None:
        if mode == "bilinear":
            super().__init__(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(cin, cout, 1),
            )
        else:
            super().__init__(nn.Conv2d(cin, cout * 4, 1), nn.PixelShuffle(2))


def _size_multiple(pool: int, lowfreq: bool) -> int:
    """The pooling grid, and the 30 m block grid of the low-frequency constraint when it is on."""
    return math.lcm(pool, LANDSAT_FACTOR) if lowfreq else pool


def _receptive_field(depth: int, upsample: str) -> int:
    """Theoretical receptive field (pixels) of the deepest path through the UNet."""
    rf, jump = 1, 1
    for level in range(depth):
        rf += 2 * 2 * jump  # two 3x3 convolutions
        if level < depth - 1:
            rf += jump  # 2x2 max-pool
            jump *= 2
    for _ in range(depth - 1):
        if upsample == "bilinear":
            # A fine pixel mixes two coarse neighbours, left or right depending on its parity:
            # bound it by a 3-wide kernel on the coarse grid.
            rf += 2 * jump
        jump //= 2
        rf += 2 * 2 * jump
    return rf


class UNet(BandIO, nn.Module):
    """Residual UNet mapping Landsat reflectance (+ pan) to Sentinel-2-like reflectance.

    Build it with :func:`build_model`. See the module docstring for the input contract.

    Attributes
    ----------
    config
        The :class:`UNetConfig` it was built from.
    input_bands, output_bands
        Canonical band names of the input and output channels.
    size_multiple
        ``2 ** (depth - 1)``; inputs of other sizes are padded internally.
    receptive_halo
        Pixels of context a tile needs on each side for seamless tiling (a multiple of
        :attr:`size_multiple`, at least 32).
    tile_invariant
        Whether tiling with :attr:`receptive_halo` reproduces whole-image results exactly in
        ``eval()`` mode (``False`` for group/instance normalisation).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        n_in, n_out = len(cfg.input_bands), len(cfg.output_bands)
        chans = [cfg.base_channels * 2**i for i in range(cfg.depth)]

        self.encoders = nn.ModuleList()
        cin = n_in
        for c in chans:
            self.encoders.append(_ConvBlock(cin, c, cfg))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(cfg.depth - 2, -1, -1):
            self.ups.append(_Up(chans[i + 1], chans[i], cfg.upsample))
            self.decoders.append(_ConvBlock(2 * chans[i], chans[i], cfg))
        self.dropout = nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(chans[0], n_out, 1)
        # A zero head makes the untrained model the identity on the reflectance bands.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

        mean = torch.tensor([_DEFAULT_MEAN.get(b, 0.1) for b in cfg.input_bands])
        std = torch.tensor([_DEFAULT_STD.get(b, 0.05) for b in cfg.input_bands])
        if cfg.residual:
            offset = torch.zeros(n_out)
            scale = torch.full((n_out,), _DEFAULT_OUTPUT_SCALE)
        else:
            offset = torch.tensor([_DEFAULT_MEAN.get(b, 0.1) for b in cfg.output_bands])
            scale = torch.tensor([_DEFAULT_STD.get(b, 0.05) for b in cfg.output_bands])
        self.register_buffer("input_mean", mean.float())
        self.register_buffer("input_std", std.float())
        self.register_buffer("output_offset", offset.float())
        self.register_buffer("output_scale", scale.float())
        if cfg.lowfreq_constraint:
            # the bandpass adjustment of the constraint's reference (identity until set)
            self.register_buffer("bandpass_slope", torch.ones(n_out))
            self.register_buffer("bandpass_offset", torch.zeros(n_out))

    # -- properties -------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        return _size_multiple(2 ** (self.config.depth - 1), self.config.lowfreq_constraint)

    @property
    def receptive_field(self) -> int:
        """Theoretical receptive field in pixels (odd; the halo is half of it, rounded up)."""
        return _receptive_field(self.config.depth, self.config.upsample)

    @property
    def receptive_halo(self) -> int:
        half = self.receptive_field // 2 + (LANDSAT_FACTOR if self.config.lowfreq_constraint else 0)
        m = self.size_multiple
        return max(32, -(-half // m) * m)

    @property
    def tile_invariant(self) -> bool:
        return self.config.norm in ("batch", "none")

    # -- normalisation ----------------------------------------------------------------------
    @torch.no_grad()
    def set_normalization(
        self,
        input_mean: Any | None = None,
        input_std: Any | None = None,
        *,
        output_offset: Any | None = None,
        output_scale: Any | None = None,
        bandpass_slope: Any | None = None,
        bandpass_offset: Any | None = None,
    ) -> None:
        """Set per-band statistics (reflectance units) used to normalise inputs and outputs.

        Parameters
        ----------
        input_mean, input_std
            One value per input band (``None`` keeps the current values, as for the others).
        output_offset, output_scale
            One value per output band: the prediction is
            ``base + output_offset + output_scale * network(x)`` with ``base`` the input's
            reflectance bands (residual) or 0. Typically the mean and standard deviation of
            ``target - input`` (residual) or of the target.
        bandpass_slope, bandpass_offset
            One value per output band (models with ``lowfreq_constraint`` only): the
            constraint's reference is ``slope * input + offset`` on the reflectance bands.
        """
        pairs = [("input_mean", input_mean), ("input_std", input_std),
                 ("output_offset", output_offset), ("output_scale", output_scale)]
        if bandpass_slope is not None or bandpass_offset is not None:
            if not self.config.lowfreq_constraint:
                raise ModelError("bandpass_slope/offset need a model built with lowfreq_constraint=True")
            pairs += [("bandpass_slope", bandpass_slope), ("bandpass_offset", bandpass_offset)]
        for name, value in pairs:
            if value is None:
                continue
            buf = getattr(self, name)
            t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
            if t.numel() != buf.numel():
                raise ModelError(f"{name} needs {buf.numel()} values, got {t.numel()}.")
            if name.endswith(("std", "scale")) and name != "bandpass_slope":
                t = t.clamp_min(1e-6)
            buf.copy_(t.to(buf.device))

    # -- MC-dropout ---------------------------------------------------------------------------
    def enable_mc_dropout(self) -> UNet:
        """Put the model in eval mode but keep its dropout layers sampling (MC-dropout).

        Repeated forward passes then give samples of the prediction; their spread estimates the
        model's uncertainty. Calling ``eval()`` afterwards switches dropout off again.
        """
        self.eval()
        n = 0
        for m in self.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train()
                n += 1
        if n == 0:
            log.warning("enable_mc_dropout: model has dropout=0, predictions stay deterministic")
        return self

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict Sentinel-2-like reflectance ``[N, 6, H, W]`` from ``[N, 7, H, W]``."""
        if x.ndim != 4 or x.shape[1] != len(self.config.input_bands):
            raise ModelError(
                f"expected input [N, {len(self.config.input_bands)}, H, W] with bands "
                f"{self.config.input_bands}, got shape {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise ModelError("input holds NaN/inf: fill no-data before calling the model "
                             "and mask the output afterwards")
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        xin = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x

        z = (xin - self.input_mean[:, None, None]) / self.input_std[:, None, None]
        skips = []
        for i, enc in enumerate(self.encoders):
            z = enc(z)
            if i < len(self.encoders) - 1:
                skips.append(z)
                z = self.pool(z)
        z = self.dropout(z)
        for up, dec in zip(self.ups, self.decoders, strict=True):
            z = up(z)
            z = dec(torch.cat([z, skips.pop()], dim=1))
            z = self.dropout(z)
        z = self.head(z).float()

        out = self.output_offset[:, None, None] + self.output_scale[:, None, None] * z
        if self.config.residual:
            out = out + xin[:, : len(self.config.output_bands)].float()
        if self.config.lowfreq_constraint:
            out = lowfreq_project(out, self.lowfreq_reference(xin))
        return out[..., :h, :w]

    def lowfreq_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The bandpass-adjusted reflectance bands of ``x`` (the constraint's 30 m reference)."""
        n = len(self.config.output_bands)
        return (self.bandpass_slope[:, None, None] * x[:, :n].float()
                + self.bandpass_offset[:, None, None])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _dh_presets() -> dict[str, Any]:
    from harmonize.deep_harmonization import DH_PRESETS

    return DH_PRESETS


def build_model(preset_or_config: str | UNetConfig | dict[str, Any] = "base", **overrides: Any) -> Any:
    """Build a :class:`UNet` from a preset name, a :class:`UNetConfig` or a dict.

    Parameters
    ----------
    preset_or_config
        ``"tiny"`` (depth 3, 16 channels; trains in minutes on 2 CPU cores), ``"base"`` (depth 4,
        32 channels, PReLU, dropout 0.1; the default for real use), ``"paper-5depth"`` (depth 5,
        64 channels, PReLU; about 29 M parameters), one of the four published
        Deep-Harmonization UNets (``"UNet-5depth-upsample"`` … ``"UNet-6depth-shuffle"``, also
        with a ``dh-`` prefix: a :class:`~harmonize.deep_harmonization.DeepHarmonizationUNet`
        with their state-dict keys), a config, or a dict of config fields.
    **overrides
        Config fields replacing those of the preset (``dropout=0.2``, ``norm="group"``,
        ``lowfreq_constraint=True`` …).

    Raises
    ------
    ModelError
        For an unknown preset name.
    """
    if isinstance(preset_or_config, str) and preset_or_config.removeprefix("dh-") in _dh_presets():
        from harmonize.deep_harmonization import DeepHarmonizationUNet, DHConfig

        dh = _dh_presets()[preset_or_config.removeprefix("dh-")]
        return DeepHarmonizationUNet(DHConfig(**{**dh.model_dump(), **overrides}))
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ModelError(f"unknown model preset {preset_or_config!r}; choose one of {sorted(PRESETS)}")
        cfg = PRESETS[preset_or_config]
    elif isinstance(preset_or_config, dict):
        cfg = UNetConfig(**preset_or_config)
    else:
        cfg = preset_or_config
    if overrides:
        cfg = UNetConfig(**{**cfg.model_dump(), **overrides})
    return UNet(cfg)


# ---------------------------------------------------------------------------------------------
# Model package: safetensors weights + STAC MLM item
# ---------------------------------------------------------------------------------------------
def _preset_name(cfg: UNetConfig) -> str | None:
    return next((k for k, v in PRESETS.items() if v == cfg), None)


#: Keys of ``metadata`` that :func:`_mlm_document` maps to their own properties.
_KNOWN_METADATA = {"name", "datetime", "description", "pretrained", "pretrained_source", "preset",
                   "input_description",
                   "batch_size_suggestion", "accelerator", "hyperparameters", "training_data", "metrics"}


def _mlm_document(model: nn.Module, metadata: dict[str, Any], weights: Path) -> dict[str, Any]:
    """The STAC MLM item of a model package: properties, and the weights asset."""
    preset = _preset_name(model.config) if isinstance(model, UNet) else None
    name = metadata.get("name") or f"harmonize-unet-{preset or 'custom'}"
    props = _mlm_properties(model, metadata, name, weights.stat().st_size)
    for k, v in metadata.items():
        if k not in _KNOWN_METADATA:
            props[f"harmonize:{k}"] = v
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM_SCHEMA, "https://stac-extensions.github.io/file/v2.1.0/schema.json"],
        "id": name,
        "geometry": None,
        "properties": props,
        "links": [],
        "assets": {
            "weights": {
                "href": f"./{WEIGHTS_FILE}",
                "title": "UNet weights and normalisation buffers (safetensors)",
                "type": "application/octet-stream; application=safetensors",
                "roles": ["mlm:model", "mlm:weights"],
                "mlm:artifact_type": "safetensors",
                "file:size": weights.stat().st_size,
                "file:checksum": "1220" + sha,  # multihash: sha2-256, 32 bytes
            }
        },
    }


#: Buffers recorded under ``harmonize:normalization`` when the model has them.
_NORMALIZATION_BUFFERS = ("input_mean", "input_std", "output_offset", "output_scale",
                          "bandpass_slope", "bandpass_offset")


def _mlm_properties(model: nn.Module, metadata: dict[str, Any], name: str, size: int) -> dict[str, Any]:
    """The item's ``mlm:*`` and ``harmonize:*`` properties (without the free ``metadata`` keys)."""
    cfg = model.config
    norm = {b: [float(v) for v in getattr(model, b).cpu()] for b in _NORMALIZATION_BUFFERS
            if hasattr(model, b)}
    scaling = None
    if "input_std" in norm:
        scaling = [{"type": "z-score", "mean": m, "stddev": s}
                   for m, s in zip(norm["input_mean"], norm["input_std"], strict=True)]
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "datetime": metadata.get("datetime", now),
        "description": metadata.get(
            "description",
            "Residual UNet harmonizing Landsat-8/9 OLI reflectance (30 m + 15 m pan, resampled "
            "to 10 m) to Sentinel-2 MSI-like 10 m reflectance.",
        ),
        "mlm:name": name,
        "mlm:architecture": "U-Net",
        "mlm:tasks": ["super-resolution", "regression"],
        "mlm:framework": "pytorch",
        "mlm:framework_version": torch.__version__.split("+")[0],
        "mlm:total_parameters": count_parameters(model),
        "mlm:pretrained": bool(metadata.get("pretrained", True)),
        "mlm:pretrained_source": metadata.get("pretrained_source"),
        "mlm:batch_size_suggestion": int(metadata.get("batch_size_suggestion", 8)),
        "mlm:accelerator": "cuda" if metadata.get("accelerator") == "cuda" else "amd64",
        "mlm:accelerator_constrained": False,
        "mlm:memory_size": size,
        "mlm:input": [_mlm_input(cfg, scaling, metadata.get("input_description"))],
        "mlm:output": [_mlm_output(cfg)],
        "mlm:hyperparameters": metadata.get("hyperparameters", {}),
        "harmonize:architecture": getattr(model, "architecture", UNET_ARCHITECTURE),
        "harmonize:preset": metadata.get("preset", _preset_name(cfg) if isinstance(model, UNet) else None),
        "harmonize:config": cfg.model_dump(mode="json"),
        "harmonize:normalization": norm,
        "harmonize:receptive_halo": model.receptive_halo,
        "harmonize:size_multiple": model.size_multiple,
        "harmonize:training_data": metadata.get("training_data", {}),
        "harmonize:metrics": metadata.get("metrics", {}),
    }


def _mlm_input(cfg: Any, scaling: list[dict[str, Any]] | None, description: str | None) -> dict[str, Any]:
    """The ``mlm:input`` entry: Landsat reflectance and pan, with the model's own scaling."""
    return {
        "name": "landsat_reflectance",
        "bands": list(cfg.input_bands),
        "input": {
            "shape": [-1, len(cfg.input_bands), -1, -1],
            "dim_order": ["batch", "bands", "height", "width"],
            "data_type": "float32",
        },
        "description": description or (
            "Landsat C2 L2 surface reflectance (blue … swir22) and C2 L1 TOA pan, physical "
            "reflectance on the 10 m grid; no NaN (fill before, mask after). The model "
            "applies the z-score scaling below itself: pass reflectance as is."
        ),
        "value_scaling": scaling,
        "resize_type": None,
        "pre_processing_function": None,
    }


def _mlm_output(cfg: UNetConfig) -> dict[str, Any]:
    """The ``mlm:output`` entry: Sentinel-2-like reflectance."""
    return {
        "name": "sentinel2_like_reflectance",
        "tasks": ["super-resolution", "regression"],
        "result": {
            "shape": [-1, len(cfg.output_bands), -1, -1],
            "dim_order": ["batch", "bands", "height", "width"],
            "data_type": "float32",
        },
        "bands": list(cfg.output_bands),
        "description": "Sentinel-2 L2A-like surface reflectance (B02 B03 B04 B8A B11 B12).",
        "post_processing_function": None,
    }


def save_model_package(model: nn.Module, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a package directory: ``model.safetensors`` + ``mlm.json`` (STAC MLM).

    Parameters
    ----------
    model
        The model to save (its weights, batch-norm statistics and normalisation buffers): a
        :class:`UNet` or a :class:`~harmonize.deep_harmonization.DeepHarmonizationUNet`.
    path
        Directory to write (created if needed; files in it are replaced).
    metadata
        JSON-serialisable facts recorded in the item: ``name``, ``description``,
        ``training_data`` (summary of the pairs), ``metrics`` (validation scores),
        ``hyperparameters`` (training config), ``preset``, ``input_description`` (the
        ``mlm:input`` text); any other key goes in as ``harmonize:<key>``.

    Returns
    -------
    Path
        The path of the ``mlm.json`` document.
    """
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = out / WEIGHTS_FILE
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "pt",
                                         "harmonize_config": model.config.model_dump_json()})
    tmp.replace(weights)
    doc = _mlm_document(model, dict(metadata or {}), weights)
    doc_path = out / METADATA_FILE
    doc_path.write_text(json.dumps(doc, indent=2, default=_json_default))
    log.info("saved model package %s (%d parameters)", out, doc["properties"]["mlm:total_parameters"])
    return doc_path


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _check_weights_checksum(weights: Path, checksum: str | None, doc_path: Path) -> None:
    """Compare ``weights`` with the package's ``file:checksum`` (multihash; sha2-256 is checked)."""
    if not checksum or not str(checksum).startswith("1220"):  # absent or another hash: nothing to check
        return
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != str(checksum)[4:].lower():
        raise WeightsChecksumError(
            f"model weights {weights} do not match the file:checksum in {doc_path} (the file was "
            "changed, truncated or replaced); restore the package or write it again with "
            "save_model_package / `harmonize train`."
        )


def _check_finite(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Refuse weights holding NaN or infinite values: they would make every output NaN."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteWeightsError(
            f"model weights {weights} hold NaN or infinite values in {len(bad)} tensor(s) "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): the training diverged. Use an "
            "earlier checkpoint or retrain (a lower learning rate, gradient clipping)."
        )


def load_model_package(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[UNet, dict[str, Any]]:
    """Load a package written by :func:`save_model_package` (no unpickling).

    Parameters
    ----------
    path
        The package directory or its ``mlm.json``.
    device
        Where to put the model.

    Returns
    -------
    (UNet, dict)
        The model in ``eval()`` mode and the STAC MLM item (a dict).

    Raises
    ------
    ModelError
        If the directory, the document or the weights are missing or do not fit together.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    doc_path = p if p.is_file() else p / METADATA_FILE
    if not doc_path.is_file():
        raise ModelError(f"no model package at {p}: expected {METADATA_FILE} (write one with "
                         "save_model_package or `harmonize train`)")
    try:
        doc = json.loads(doc_path.read_text())
        props = doc["properties"]
        model = _model_for(props.get("harmonize:architecture", UNET_ARCHITECTURE), props["harmonize:config"])
        href = doc["assets"]["weights"]["href"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{doc_path} is not a harmonize model package: {exc}") from exc
    weights = (doc_path.parent / href).resolve()
    if not weights.is_file():
        raise ModelError(f"model weights {weights} listed in {doc_path} are missing")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"cannot read weights {weights}: {exc}") from exc
    _check_weights_checksum(weights, doc["assets"]["weights"].get("file:checksum"), doc_path)
    _check_finite(state, weights)
    try:
        model.load_state_dict(state, strict=True, assign=True)  # every tensor: the meta ones go
    except RuntimeError as exc:
        raise ModelError(f"weights in {weights} do not match the config in {doc_path}: {exc}") from exc
    model.to(device).eval()
    return model, doc


def _model_for(architecture: str, config: dict[str, Any]) -> nn.Module:
    """A model of a package's architecture and config on the meta device (no storage, no
    initialisation: the package's weights replace every tensor, which for the 29-226 M
    parameters of the Deep-Harmonization UNets saves seconds per load)."""
    with torch.device("meta"):
        if architecture == UNET_ARCHITECTURE:
            return UNet(UNetConfig(**config))
        from harmonize.deep_harmonization import ARCHITECTURE, DeepHarmonizationUNet, DHConfig

        if architecture == ARCHITECTURE:
            return DeepHarmonizationUNet(DHConfig(**config))
    raise ValueError(f"unknown architecture {architecture!r}")
