"""Training throughput: :func:`benchmark_training` times optimizer steps on random reflectance."""

from __future__ import annotations

import time
from typing import Any

import torch

from harmonize.model import PRESETS, UNet, UNetConfig, count_parameters
from harmonize.train.device import autocast_dtype, resolve_device
from harmonize.train.losses import masked_l1

__all__ = ["benchmark_training"]


def benchmark_training(
    model: str | UNetConfig = "tiny",
    *,
    batch_size: int = 8,
    size: int = 128,
    steps: int = 5,
    warmup: int = 2,
    device: str = "auto",
    amp: bool = True,
) -> dict[str, Any]:
    """Time optimizer steps (forward, L1 backward, AdamW) on random reflectance.

    Parameters
    ----------
    model
        A preset name or an architecture.
    batch_size, size
        Samples per step and their side in pixels.
    steps, warmup
        Steps timed, after ``warmup`` untimed ones.
    device, amp
        As in :class:`~harmonize.train.TrainConfig`.

    Returns
    -------
    dict
        ``steps_per_s``, ``samples_per_s``, ``megapixels_per_s``, ``device``, ``dtype``,
        ``threads``, ``parameters`` and, on CUDA, ``peak_memory_gib``.
    """
    dev = resolve_device(device)
    amp_dtype = autocast_dtype(dev, amp)
    cfg = PRESETS[model] if isinstance(model, str) else model
    torch.manual_seed(0)
    net = UNet(cfg).to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.rand(batch_size, len(cfg.input_bands), size, size, device=dev) * 0.3
    y = torch.rand(batch_size, len(cfg.output_bands), size, size, device=dev) * 0.3
    valid = torch.ones(batch_size, size, size, dtype=torch.bool, device=dev)

    def step() -> None:
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = net(x)
        loss = masked_l1(pred.float(), y, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    out: dict[str, Any] = {
        "model": model if isinstance(model, str) else "custom", "batch_size": batch_size, "size": size,
        "steps_per_s": 1 / dt, "samples_per_s": batch_size / dt,
        "megapixels_per_s": batch_size * size * size / dt / 1e6, "device": str(dev),
        "dtype": str(amp_dtype or torch.float32).replace("torch.", ""),
        "threads": torch.get_num_threads(), "parameters": count_parameters(net),
    }
    if dev.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


# ---------------------------------------------------------------------------------------------
