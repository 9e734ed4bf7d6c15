"""Adversarial training: a discriminator beside the UNet, as Pix2Pix and SRGAN train.

With ``TrainConfig.adversarial`` set, :func:`harmonize.train.fit` trains the generator (the UNet)
on ``L1 (+ ssim_weight * (1 - SSIM)) + weight * adversarial`` and, on every batch, a
discriminator that tells the Sentinel-2 target from the generator's output:

- ``"patchgan"`` (Pix2Pix, Isola et al. 2017): a fully convolutional net scoring every
  overlapping patch (70 x 70 pixels with 3 layers) real or fake, conditioned on the Landsat
  input (it sees input and output side by side), so it judges local texture only;
- ``"srgan"`` (Ledig et al. 2017): strided convolution blocks, then a global average and a
  1x1-convolution head (SRGAN's dense layers): one score per image, unconditioned.

Invalid pixels (clouds, no data) are replaced by the target in the fake image, so they look
real and carry no signal. The discriminator trains in float32 (outside autocast) with Adam
(``betas = (0.5, 0.999)``, Pix2Pix's), at a constant learning rate. Its weights
(``discriminator.safetensors``) and optimizer (plain tensors in ``optimizer.pt``) are saved in
every epoch checkpoint and resumed with the generator; the model package holds the generator
only. The history gains ``train_g_adv`` (the generator's adversarial loss) and ``train_d_loss``
(the discriminator's), drawn in ``adversarial_curve.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = ["AdversarialConfig", "PatchDiscriminator", "SRGANDiscriminator", "Adversary",
           "plot_adversarial_curve", "DISCRIMINATOR_WEIGHTS"]

#: File name of the discriminator's weights in an epoch checkpoint.
DISCRIMINATOR_WEIGHTS = "discriminator.safetensors"


class AdversarialConfig(BaseModel):
    """The discriminator and the adversarial term of the generator's loss (frozen).

    Attributes
    ----------
    discriminator
        ``"patchgan"`` (Pix2Pix, conditioned on the input) or ``"srgan"`` (one score per image).
    weight
        Weight of the adversarial term beside the L1 loss (Pix2Pix: 1 against L1 x 100, i.e. 0.01).
    loss
        ``"bce"`` (the original GAN loss, Pix2Pix's) or ``"lsgan"`` (least squares).
    channels, layers
        Width of the first layer (doubling per layer, capped at 8x) and number of strided layers.
    lr
        Discriminator learning rate (``None``: the generator's ``lr``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    discriminator: Literal["patchgan", "srgan"] = "patchgan"
    weight: float = Field(0.01, ge=0)
    loss: Literal["bce", "lsgan"] = "bce"
    channels: int = Field(32, ge=4)
    layers: int = Field(3, ge=1, le=6)
    lr: float | None = Field(None, gt=0)


def _block(cin: int, cout: int, stride: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4 if stride == 2 else 3, stride, 1)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
    layers.append(nn.LeakyReLU(0.2))
    return layers


class PatchDiscriminator(nn.Module):
    """Pix2Pix's PatchGAN: ``layers`` strided 4x4 convolutions, one at stride 1, a 1-channel map."""

    def __init__(self, in_channels: int, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = _block(in_channels, channels, 2, norm=False)
        c = channels
        for i in range(1, layers):
            nxt = channels * min(2 ** i, 8)
            mods += _block(c, nxt, 2, norm=True)
            c = nxt
        nxt = channels * min(2 ** layers, 8)
        mods += [nn.Conv2d(c, nxt, 4, 1, 1), nn.InstanceNorm2d(nxt, affine=True), nn.LeakyReLU(0.2),
                 nn.Conv2d(nxt, 1, 4, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SRGANDiscriminator(nn.Module):
    """SRGAN's discriminator: conv blocks (stride 1 then 2 per width), global mean, 1x1 head."""

    def __init__(self, in_channels: int, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [*_block(in_channels, channels, 1, norm=False),
                                 *_block(channels, channels, 2, norm=True)]
        c = channels
        for i in range(1, layers):
            nxt = channels * min(2 ** i, 8)
            mods += _block(c, nxt, 1, norm=True) + _block(nxt, nxt, 2, norm=True)
            c = nxt
        self.features = nn.Sequential(*mods)
        self.head = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.LeakyReLU(0.2), nn.Conv2d(2 * c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((-2, -1), keepdim=True))


class Adversary:
    """The discriminator of a run, its optimizer, and the two adversarial losses.

    Parameters
    ----------
    config
        The adversarial settings.
    generator
        The UNet being trained (its input normalisation scales the discriminator's input).
    lr
        The generator's learning rate (used when ``config.lr`` is ``None``).
    device
        Where the discriminator runs.
    """

    def __init__(self, config: AdversarialConfig, generator: nn.Module, lr: float,
                 device: torch.device) -> None:
        self.config = config
        self.generator = generator
        n_in, n_out = len(generator.input_bands), len(generator.output_bands)
        cls = PatchDiscriminator if config.discriminator == "patchgan" else SRGANDiscriminator
        cond = n_in if config.discriminator == "patchgan" else 0
        self.net = cls(cond + n_out, config.channels, config.layers).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr or lr, betas=(0.5, 0.999))

    def _scaled(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """The discriminator's input: z-scored image (and input, for the conditional PatchGAN)."""
        g = self.generator
        n = img.shape[1]
        mean, std = g.input_mean[:n, None, None], g.input_std[:n, None, None]
        z = (img - mean) / std
        if self.config.discriminator != "patchgan":
            return z
        return torch.cat([(x - g.input_mean[:, None, None]) / g.input_std[:, None, None], z], 1)

    def _criterion(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.full_like(logits, 1.0 if real else 0.0)
        if self.config.loss == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def discriminator_loss(self, x: torch.Tensor, pred: torch.Tensor, y: torch.Tensor,
                           valid: torch.Tensor) -> torch.Tensor:
        """Real targets against the (detached) generator output, invalid pixels made real."""
        fake = torch.where(valid[:, None], pred.detach().float(), y)
        x = x.float()
        real_logits = self.net(self._scaled(x, y))
        fake_logits = self.net(self._scaled(x, fake))
        return 0.5 * (self._criterion(real_logits, True) + self._criterion(fake_logits, False))

    def generator_loss(self, x: torch.Tensor, pred: torch.Tensor, y: torch.Tensor,
                       valid: torch.Tensor) -> torch.Tensor:
        """How far the discriminator is from taking the output for real (no gradient into it)."""
        self.net.requires_grad_(False)
        try:
            fake = torch.where(valid[:, None], pred.float(), y)
            return self._criterion(self.net(self._scaled(x.float(), fake)), True)
        finally:
            self.net.requires_grad_(True)

    def step(self, grad_clip: float | None) -> None:
        """One discriminator update from its accumulated gradients."""
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the weights into ``folder``; the optimizer state (plain tensors) to store."""
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  str(folder / DISCRIMINATOR_WEIGHTS))
        return self.opt.state_dict()

    def load(self, folder: Path, opt_state: dict[str, Any] | None, device: torch.device) -> None:
        """Read what :meth:`save` wrote (the optimizer only when ``opt_state`` is given)."""
        from safetensors.torch import load_file

        self.net.load_state_dict(load_file(str(folder / DISCRIMINATOR_WEIGHTS), device=str(device)))
        if opt_state is not None:
            self.opt.load_state_dict(opt_state)


def plot_adversarial_curve(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Generator (L1 and adversarial) and discriminator losses per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r.get("train_l1", float("nan")) for r in history], "o-", label="generator L1 (+SSIM)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction loss")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(epochs, [r.get("train_g_adv", float("nan")) for r in history], "s--", color="tab:red",
             label="generator adversarial")
    ax2.plot(epochs, [r.get("train_d_loss", float("nan")) for r in history], "^--", color="tab:purple",
             label="discriminator")
    ax2.set_ylabel("adversarial losses")
    lines, labels = ax.get_legend_handles_labels()
    l2, lab2 = ax2.get_legend_handles_labels()
    ax.legend(lines + l2, labels + lab2, loc="best")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
