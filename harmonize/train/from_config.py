"""The config entry point: :func:`train_from_config` (``harmonize train CONFIG.yaml``).

A YAML file of :class:`~harmonize.train.TrainConfig` fields and ``key=value`` overrides make the
config; a dataset factory named in it (``dataset.factory: "module:function"``, by default
:func:`harmonize.pairs.datasets_from_config`) makes the datasets; :func:`~harmonize.train.fit`
trains.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from harmonize.errors import HarmonizeError
from harmonize.train.config import TrainConfig
from harmonize.train.loop import TrainResult, fit

__all__ = ["DatasetFactory", "DEFAULT_FACTORY", "resolve_factory", "train_from_config"]

#: ``factory(config) -> (train_dataset, val_dataset or None)``.
DatasetFactory = Callable[[TrainConfig], "tuple[Any, Any | None]"]
#: The factory used when the config names none.
DEFAULT_FACTORY = "harmonize.pairs:datasets_from_config"


def resolve_factory(spec: str) -> DatasetFactory:
    """The dataset factory named ``"package.module:function"``.

    Raises
    ------
    HarmonizeError
        If ``spec`` is malformed or names nothing importable.
    """
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise HarmonizeError(f"dataset factory {spec!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise HarmonizeError(f"cannot import dataset factory {spec!r}: {exc}") from exc


def train_from_config(
    path: str | Path,
    overrides: dict[str, Any] | Sequence[str] | None = None,
    *,
    dataset_factory: DatasetFactory | None = None,
    out_dir: str | Path | None = None,
    resume: Literal["auto"] | str | Path | None = "auto",
    progress: bool = True,
) -> TrainResult:
    """Run :func:`fit` from a YAML config (the ``harmonize train CONFIG.yaml`` command).

    Parameters
    ----------
    path
        YAML file of :class:`TrainConfig` fields.
    overrides
        ``"key=value"`` strings or a dict (see :meth:`TrainConfig.from_yaml`).
    dataset_factory
        ``factory(config) -> (train_dataset, val_dataset)``. Without it, ``config.dataset["factory"]``
        names one as ``"module:function"``; else ``harmonize.pairs:datasets_from_config``.
    out_dir
        Output folder; defaults to ``config.out_dir``, else ``runs/<yaml stem>``.
    resume
        As in :func:`fit`; ``"auto"`` makes a re-run of the same command continue.
    progress
        Show a tqdm bar per epoch.

    Returns
    -------
    TrainResult
    """
    cfg = TrainConfig.from_yaml(path, overrides)
    if dataset_factory is None:
        dataset_factory = resolve_factory(cfg.dataset.get("factory", DEFAULT_FACTORY))
    train_ds, val_ds = dataset_factory(cfg)
    target = Path(out_dir or cfg.out_dir or Path("runs") / Path(path).stem)
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return fit(cfg, train_ds, val_ds, out_dir=target, resume=resume, progress=progress)
