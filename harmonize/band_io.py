"""The band surface every harmonize model shares: which bands go in, which come out.

:class:`harmonize.model.UNet` and :class:`harmonize.deep_harmonization.DeepHarmonizationUNet`
both read them from their pydantic config; inference (:mod:`harmonize.infer`) and the model
packages (``mlm.json``) read them from the model.
"""

from __future__ import annotations

from typing import Any

import torch

from harmonize.errors import ModelError

__all__ = ["BandIO"]


class BandIO:
    """Mixin for an ``nn.Module`` whose ``config`` has ``input_bands`` and ``output_bands``.

    Attributes
    ----------
    input_bands, output_bands
        Canonical band names of the input and output channels, as the config lists them.
    """

    config: Any

    @property
    def input_bands(self) -> tuple[str, ...]:
        """Canonical names of the input channels, in order."""
        return tuple(self.config.input_bands)

    @property
    def output_bands(self) -> tuple[str, ...]:
        """Canonical names of the output channels, in order."""
        return tuple(self.config.output_bands)

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse an input that is not ``[N, len(input_bands), H, W]`` and finite.

        Raises
        ------
        harmonize.errors.ModelError
            Saying which shape and bands were expected, or that no-data must be filled first.
        """
        if x.ndim != 4 or x.shape[1] != len(self.input_bands):
            raise ModelError(f"expected input [N, {len(self.input_bands)}, H, W] with bands "
                             f"{self.input_bands}, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ModelError("input holds NaN/inf: fill no-data before calling the model "
                             "and mask the output afterwards")
