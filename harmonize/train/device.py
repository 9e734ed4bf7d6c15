"""Where training runs: the torch device and the mixed-precision dtype it supports."""

from __future__ import annotations

import torch

from harmonize.errors import HarmonizeError

__all__ = ["resolve_device", "autocast_dtype"]


def resolve_device(name: str) -> torch.device:
    """The device ``name`` asks for: ``"auto"`` is the GPU when one is visible, else the CPU.

    Raises
    ------
    HarmonizeError
        If a CUDA device is asked for and none is visible.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HarmonizeError("device 'cuda' requested but no GPU is visible; use device: auto or cpu")
    return dev


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype on ``device`` (bfloat16 where supported, else float16; ``None`` on CPU
    or without ``amp``)."""
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
