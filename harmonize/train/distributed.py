"""Training past one device: PyTorch DDP, launched by ``torchrun`` (gloo on CPU, NCCL on GPUs).

:func:`harmonize.train.fit` runs distributed when ``torchrun`` (or any launcher setting
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous variables) starts it in several
processes: the same config, on one process or on N. Why DDP: it is PyTorch's own engine, needs
no other dependency or trainer, and keeps the one training loop (Lightning/Fabric would replace
it).

What each process does:

- every process builds the same model (same seed) and reads the checkpoint when resuming;
- each global batch of ``batch_size`` samples (the single-process batch, same seeded order) is
  split into ``world_size`` equal parts, one per process (``batch_size`` must divide by the
  number of processes);
- the loss of each part is scaled by its share of the batch's valid pixels, so DDP's gradient
  average is the gradient of the global batch's masked loss, as on one process (clouds and no
  data differ between the parts);
- every process validates (the same weights, so the same scores and the same early stopping);
  only rank 0 writes checkpoints, history, figures and the model package.

Batch-norm statistics are per process on CPU (gloo has no SyncBatchNorm); on GPUs the model's
batch norms become :class:`torch.nn.SyncBatchNorm`. Adversarial runs train on one process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from harmonize.errors import HarmonizeError

__all__ = ["Distributed", "from_environment", "split_batches", "batch_loader"]

log = logging.getLogger(__name__)


@dataclass
class Distributed:
    """The process group of a run: this process's rank, their number, and who started it."""

    rank: int
    world_size: int
    local_rank: int
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` inside :class:`~torch.nn.parallel.DistributedDataParallel` (SyncBN on GPUs)."""
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[device.index or 0])
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            log.warning("batch norm on CPU with %d processes: statistics are per process "
                        "(use norm='group' for the single-process result)", self.world_size)
        return DistributedDataParallel(model)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the processes (a copy)."""
        out = value.detach().clone()
        dist.all_reduce(out)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        """Leave the process group if this run joined it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: str) -> Distributed | None:
    """The process group ``torchrun`` asks for (``WORLD_SIZE`` > 1), or ``None`` for one process.

    Joins it (gloo, or NCCL on CUDA) unless the caller already did, and on CUDA moves this
    process to GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return None
    if not dist.is_available():
        raise HarmonizeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    owns = not dist.is_initialized()
    if owns:
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.get_world_size() == 1:
        return Distributed(0, 1, local, owns) if owns else None
    log.info("distributed training: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(),
             dist.get_backend())
    return Distributed(dist.get_rank(), dist.get_world_size(), local, owns)


def split_batches(n: int, batch_size: int, generator: torch.Generator, rank: int,
                  world_size: int) -> list[list[int]]:
    """This process's part of each shuffled global batch (``world_size`` 1: the whole batches).

    One seeded permutation, cut into batches of ``batch_size`` and each batch into
    ``world_size`` parts, so every process count sees the same global batches.

    Raises
    ------
    HarmonizeError
        If ``batch_size`` does not divide by ``world_size``.
    """
    if batch_size % world_size:
        raise HarmonizeError(f"batch_size {batch_size} does not divide by the {world_size} processes: "
                             "choose a multiple of the process count (it is the global batch)")
    order = torch.randperm(n, generator=generator).tolist()
    out = []
    for start in range(0, n, batch_size):
        parts = torch.tensor_split(torch.tensor(order[start:start + batch_size]), world_size)
        if min(len(p) for p in parts) == 0:  # a last batch smaller than the process count
            log.info("dropping the last batch (%d samples for %d processes)", n - start, world_size)
            break
        out.append(parts[rank].tolist())
    return out


def batch_loader(dataset: Any, batches: list[list[int]], num_workers: int) -> Any:
    """A DataLoader yielding ``batches`` (lists of indices) in order."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_seed_numpy if num_workers else None)


def _seed_numpy(worker_id: int) -> None:
    """Seed numpy in a loader worker from its torch seed (itself from the epoch's seed)."""
    import numpy as np

    np.random.seed(torch.initial_seed() % 2**32)
