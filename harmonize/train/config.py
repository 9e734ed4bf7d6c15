"""The settings of a training run: :class:`TrainConfig` (pydantic, loaded from YAML)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from harmonize.errors import HarmonizeError, ModelError
from harmonize.model import PRESETS, UNetConfig
from harmonize.overrides import apply_overrides
from harmonize.train.adversarial import AdversarialConfig

__all__ = ["TrainConfig"]


class TrainConfig(BaseModel):
    """Everything a training run needs besides the data (pydantic; load with :meth:`from_yaml`).

    Attributes
    ----------
    model
        Preset name (``"tiny"``, ``"base"``, ``"paper-5depth"``) or a dict of
        :class:`~harmonize.model.UNetConfig` fields.
    model_overrides
        Config fields replacing the preset's (``{"dropout": 0.2}``).
    epochs, batch_size, grad_accum
        Passes over the training set; samples per step; steps accumulated per optimizer update.
    lr, weight_decay, schedule, warmup_fraction
        AdamW peak learning rate and weight decay; ``"onecycle"`` (warm-up fraction
        ``warmup_fraction``), ``"cosine"`` (linear warm-up then cosine decay) or ``"constant"``.
    ssim_weight
        Loss is ``L1 + ssim_weight * (1 - SSIM)`` on valid pixels (0 = plain L1).
    detail_weight, detail_sizes, band_weights
        Add ``detail_weight`` times an L1 on the detail below the Landsat pixel
        (:func:`harmonize.train.losses.detail_l1`, averaged over the window sides
        ``detail_sizes``); weight the output bands in the L1 terms (default equal). See
        :func:`harmonize.train.losses.training_loss`.
    gradient_weight
        Add this times an L1 on neighbour differences (:func:`harmonize.train.losses.gradient_l1`).
    adversarial
        Train adversarially beside that loss (a PatchGAN or SRGAN discriminator;
        :class:`~harmonize.train.adversarial.AdversarialConfig`, e.g. ``{"weight": 0.01}``);
        ``None`` (the default) trains on the loss alone.
    grad_clip
        Max gradient norm (``None`` disables clipping).
    device, amp
        ``"auto"`` uses the GPU when present; ``amp`` enables mixed precision there (CPU always
        trains in float32).
    seed
        Seeds model initialisation, shuffling and dropout.
    patience, min_delta
        Early stopping: stop when validation loss has not improved by ``min_delta`` for
        ``patience`` epochs (``None`` disables).
    normalization_samples
        Training samples read to estimate per-band normalisation statistics (0 keeps defaults).
    max_batches_per_epoch
        Cap on training batches per epoch (``None``: the whole set).
    eval_samples
        Validation samples scored with the full metric set for the model package.
    keep_checkpoints
        Number of epoch checkpoints kept (older ones are deleted).
    figures
        Write ``loss_curve.png`` and ``results.png`` at the end.
    num_workers
        DataLoader worker processes.
    threads
        torch's CPU threads while training (restored afterwards; ``None``: torch's setting).
        One thread suits small batches of a small model: on two cores a batch of 4 patches of
        the ``tiny`` UNet gains no wall time from a second thread, which spins instead (and, on
        a busy machine, waits for the other many times per step).
    out_dir
        Output folder when run through :func:`train_from_config` / the CLI.
    dataset
        Free-form parameters of the dataset factory; ``factory: "module:function"`` names it.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | dict[str, Any] = "tiny"
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    ssim_weight: float = Field(0.0, ge=0)
    detail_weight: float = Field(0.0, ge=0)
    band_weights: list[float] | None = None
    detail_sizes: list[int] = Field(default_factory=lambda: [3], min_length=1)
    gradient_weight: float = Field(0.0, ge=0)
    adversarial: AdversarialConfig | None = None
    grad_clip: float | None = 1.0
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    patience: int | None = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)
    normalization_samples: int = Field(32, ge=0)
    max_batches_per_epoch: int | None = Field(None, ge=1)
    eval_samples: int = Field(64, ge=0)
    keep_checkpoints: int = Field(2, ge=1)
    figures: bool = True
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1)
    out_dir: str | None = None
    dataset: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | Sequence[str] | None = None
                  ) -> TrainConfig:
        """Read a YAML file and apply overrides.

        Parameters
        ----------
        overrides
            A dict of fields, or ``"key=value"`` strings where ``key`` may be dotted
            (``"dataset.patch_size=128"``) and ``value`` is parsed as YAML (``lr=3e-4``).
        """
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise HarmonizeError(f"{path} must hold a YAML mapping of training settings")
        return cls.model_validate(apply_overrides(data, overrides))

    def unet_config(self) -> UNetConfig:
        """The model architecture this config asks for."""
        if isinstance(self.model, str):
            if self.model not in PRESETS:
                raise ModelError(f"unknown model preset {self.model!r}; choose one of {sorted(PRESETS)}")
            base = PRESETS[self.model].model_dump()
        else:
            base = dict(self.model)
        return UNetConfig(**{**base, **self.model_overrides})
