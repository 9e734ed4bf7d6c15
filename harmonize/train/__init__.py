"""Training of the harmonization UNet: ``fit()``, checkpoints, resume, early stopping, LR finder.

The parts, each with one job:

- :mod:`~harmonize.train.config`: :class:`TrainConfig`, the settings of a run (YAML).
- :mod:`~harmonize.train.loop`: :func:`fit`, the one training loop (also used by the
  experiments), :class:`TrainResult`, :class:`StopTraining` for callbacks that end a run.
- :mod:`~harmonize.train.losses`: :func:`masked_l1` and the L1 + SSIM training loss.
- :mod:`~harmonize.train.adversarial`: the PatchGAN / SRGAN discriminator of adversarial runs
  (``TrainConfig.adversarial``).
- :mod:`~harmonize.train.data`: the seeded DataLoader and :func:`estimate_normalization`.
- :mod:`~harmonize.train.optim`, :mod:`~harmonize.train.device`: AdamW, the LR schedules, the
  device and its mixed precision.
- :mod:`~harmonize.train.checkpoints`, :mod:`~harmonize.train.history`,
  :mod:`~harmonize.train.validation`: what a run writes and how it is scored.
- :mod:`~harmonize.train.lr_finder`: :func:`lr_find`; :mod:`~harmonize.train.benchmark`:
  :func:`benchmark_training`; :mod:`~harmonize.train.from_config`: :func:`train_from_config`
  (``harmonize train CONFIG.yaml``).

Datasets are any map-style object of sample dicts (``input``, ``target``, optional ``valid``
and ``reference``; see :mod:`harmonize.train.data`): :class:`harmonize.pairs.PairDataset`, or
:class:`harmonize.testing.SyntheticPairs` for tests and smoke runs.
"""

from __future__ import annotations

from harmonize.plot_training import show_results
from harmonize.train.adversarial import AdversarialConfig
from harmonize.train.benchmark import benchmark_training
from harmonize.train.config import TrainConfig
from harmonize.train.data import estimate_normalization
from harmonize.train.from_config import train_from_config
from harmonize.train.loop import StopTraining, TrainResult, fit
from harmonize.train.losses import masked_l1
from harmonize.train.lr_finder import LRFindResult, lr_find

__all__ = [
    "TrainConfig",
    "AdversarialConfig",
    "TrainResult",
    "LRFindResult",
    "StopTraining",
    "fit",
    "lr_find",
    "show_results",
    "train_from_config",
    "estimate_normalization",
    "masked_l1",
    "benchmark_training",
]
