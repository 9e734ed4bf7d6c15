"""The training loop: :func:`fit` trains a UNet, checkpoints each epoch and exports a package.

``fit`` is a chain of named steps: set up the model, optimizer and schedule; resume from a
checkpoint or estimate the normalisation; then per epoch train, validate, and end the epoch
(best weights, early stopping, checkpoint, history, callbacks); finally load the best weights,
score them and export the model package.

Outputs in ``out_dir``::

    checkpoints/epoch-0003/{model.safetensors, optimizer.pt, state.json}   one per epoch
    best.safetensors        weights of the best validation epoch
    history.csv             epoch, train_loss, val_loss, val_psnr, val_ssim, lr, seconds
                            (+ train_l1, train_g_adv, train_d_loss when adversarial)
    loss_curve.png, results.png, model/ (the model package: model.safetensors + mlm.json)
    adversarial_curve.png   generator and discriminator losses (adversarial runs)

NaN in ``target`` (or ``valid == False``) excludes a pixel from the loss and the metrics; NaN in
``input`` is filled with the model's per-band input mean and the pixel is excluded as well.

Reproducibility: on CPU the same seed gives identical losses, and a run resumed from a
checkpoint gives the same losses and weights as an uninterrupted one (each epoch reseeds the
global RNG and the shuffling from ``seed`` and the epoch number). GPU runs use mixed precision
(bfloat16 where supported) and are not bit-reproducible.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from harmonize.errors import HarmonizeError
from harmonize.model import UNet, UNetConfig, count_parameters, save_model_package
from harmonize.plot_training import plot_loss_curve, show_results
from harmonize.train.adversarial import Adversary, plot_adversarial_curve
from harmonize.train.checkpoints import (
    BEST_WEIGHTS,
    checkpoint_to_resume,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from harmonize.train.config import TrainConfig
from harmonize.train.data import estimate_normalization, steps_per_epoch
from harmonize.train.device import autocast_dtype, resolve_device
from harmonize.train.distributed import Distributed, batch_loader, from_environment, split_batches
from harmonize.train.history import log_row, write_history
from harmonize.train.losses import loss_options, prepare_batch, training_loss
from harmonize.train.optim import make_optimizer, make_scheduler
from harmonize.train.validation import full_metrics, validate

__all__ = ["TrainResult", "StopTraining", "fit"]

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, float]], None]


class StopTraining(Exception):  # noqa: N818 - a signal, like StopIteration, not an error
    """Raised by a :func:`fit` callback to end the run after the current epoch.

    The epoch's checkpoint and history are already written; ``fit`` then finishes as after its
    last epoch (best weights, metrics, model package) and records the epoch in
    :attr:`TrainResult.stopped_at`. A later ``fit(..., resume="auto")`` continues the run.
    """


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model
        The model with the best validation weights, in eval mode, on CPU.
    history
        One dict per epoch (the rows of ``history.csv``).
    best_epoch, best_val_loss
        The epoch whose weights were kept, and its validation loss.
    stopped_early
        Whether early stopping ended the run.
    global_step
        Optimizer updates done in total.
    package_path
        The exported model package's ``mlm.json``.
    metrics
        Full validation metrics of the best model (and of the identity baseline, ``identity_*``,
        and against the validation samples' reference, ``reference_*``, when they carry one).
    out_dir
        Where everything was written.
    stopped_at
        The epoch after which a callback's :class:`StopTraining` ended the run (``None`` if none
        did).
    """

    model: UNet
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    global_step: int
    package_path: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    stopped_at: int | None = None


@dataclass
class _Run:
    """The fixed parts of a run: settings, model, optimizer, schedule, device, folders."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    model: UNet
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    n_batches: int
    steps_per_epoch: int
    adversary: Adversary | None = None
    dist: Distributed | None = None
    train_model: torch.nn.Module | None = None  # what the training step calls (DDP-wrapped)

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"


@dataclass
class _Progress:
    """What changes as a run goes: the epoch to start at, steps, history, best epoch, stopping."""

    start_epoch: int = 1
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    stopped_at: int | None = None

    def checkpoint_state(self, epoch: int, run: _Run) -> dict[str, Any]:
        """The ``state.json`` of epoch ``epoch``'s checkpoint."""
        return {"epoch": epoch, "global_step": self.global_step, "history": self.history,
                "best_val_loss": self.best_loss, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "stopped_early": self.stopped_early,
                "config": run.cfg.model_dump(mode="json"),
                "unet_config": run.model.config.model_dump(mode="json")}


def fit(
    config: TrainConfig | dict[str, Any],
    train_dataset: Any,
    val_dataset: Any | None = None,
    *,
    out_dir: str | Path,
    resume: Literal["auto"] | str | Path | None = None,
    model: UNet | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    dataset_summary: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a UNet, checkpoint every epoch, keep the best validation weights, export a package.

    Parameters
    ----------
    config
        A :class:`TrainConfig` (or a dict of its fields).
    train_dataset, val_dataset
        Map-style datasets of sample dicts (see :mod:`harmonize.train.data`). Without
        ``val_dataset`` the training loss chooses the best epoch and early stopping is off.
    out_dir
        Folder for checkpoints, history, figures and the model package.
    resume
        ``None`` starts fresh (existing checkpoints in ``out_dir`` are replaced as epochs finish),
        ``"auto"`` continues from the latest checkpoint in ``out_dir`` if there is one, a path
        continues from that checkpoint folder.
    model
        A model to train instead of building ``config.model`` (its config is used for export).
    callbacks
        Called after each epoch's checkpoint with that epoch's row. Raising
        :class:`StopTraining` ends the run after this epoch (the other callbacks still see the
        row) and ``fit`` finishes normally; raising anything else stops the run at once (the
        checkpoint stays, so ``resume="auto"`` continues).
    progress
        Show a tqdm bar per epoch.
    dataset_summary
        JSON facts about the training data, stored in the model package.

    Returns
    -------
    TrainResult
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    dist = from_environment(cfg.device)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(cfg, dist, train_dataset, val_dataset, Path(out_dir), resume, model, callbacks,
                    progress, dataset_summary)
    finally:
        torch.set_num_threads(threads)
        if dist is not None:
            dist.close()


def _fit(cfg: TrainConfig, dist: Distributed | None, train_dataset: Any, val_dataset: Any | None,
         out_dir: Path, resume: Literal["auto"] | str | Path | None, model: UNet | None,
         callbacks: Sequence[Callback], progress: bool, dataset_summary: dict[str, Any] | None
         ) -> TrainResult:
    """:func:`fit` in this process (one of ``dist.world_size`` when distributed)."""
    run = _set_up(cfg, train_dataset, out_dir, model, dist)
    state = _resume_or_normalise(run, train_dataset, resume)
    log.info("training %s (%d parameters) on %s%s: %d samples, %d steps/epoch, %d epochs",
             _describe(run.model.config), count_parameters(run.model), run.device,
             f" with {run.amp_dtype}" if run.amp_dtype else "", len(train_dataset), run.steps_per_epoch,
             cfg.epochs)
    for epoch in range(state.start_epoch, cfg.epochs + 1):
        if state.stopped_early:
            break
        t0 = time.perf_counter()
        row = _train_epoch(run, state, train_dataset, epoch, progress=progress)
        monitor = _validate_epoch(run, row, val_dataset)
        row["seconds"] = time.perf_counter() - t0
        state.history.append(row)
        log_row(row, header=len(state.history) == 1 or epoch == state.start_epoch)
        _end_epoch(run, state, epoch, monitor, has_val=val_dataset is not None)
        if _call_back(callbacks, row):
            log.info("training stopped by a callback after epoch %d", epoch)
            state.stopped_at = epoch
            break
    return _finish(run, state, train_dataset, val_dataset, dataset_summary)


def _set_up(cfg: TrainConfig, train_dataset: Any, out: Path, model: UNet | None,
            dist: Distributed | None = None) -> _Run:
    """Folders, device, the (seeded) model, optimizer, LR schedule and gradient scaler."""
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if dist is not None and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if dist is not None and cfg.adversarial is not None:
        raise HarmonizeError("adversarial training runs on one process: start it without torchrun "
                             "(or drop `adversarial` to train on several)")
    amp_dtype = autocast_dtype(device, cfg.amp)
    if len(train_dataset) == 0:
        raise HarmonizeError("the training dataset is empty: widen the pair search or lower the "
                             "clear-fraction threshold")
    torch.manual_seed(cfg.seed)
    if model is None:
        model = UNet(cfg.unet_config())
    model.to(device)
    opt = make_optimizer(model, cfg)
    n_batches = math.ceil(len(train_dataset) / cfg.batch_size)
    per_epoch = steps_per_epoch(n_batches, cfg)
    sched = make_scheduler(cfg, opt, per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    adversary = None
    if cfg.adversarial is not None:
        torch.manual_seed(cfg.seed + 1)  # the discriminator's initialisation, apart from the UNet's
        adversary = Adversary(cfg.adversarial, model, cfg.lr, device)
    return _Run(cfg=cfg, out=out, device=device, amp_dtype=amp_dtype, model=model, opt=opt, sched=sched,
                scaler=scaler, n_batches=n_batches, steps_per_epoch=per_epoch, adversary=adversary,
                dist=dist, train_model=dist.wrap(model, device) if dist is not None else model)


def _resume_or_normalise(run: _Run, train_dataset: Any, resume: Literal["auto"] | str | Path | None
                         ) -> _Progress:
    """Continue from a checkpoint, or start fresh with normalisation from the training data."""
    cfg, model = run.cfg, run.model
    ckpt = checkpoint_to_resume(run.out, resume)
    if ckpt is not None:
        saved = load_checkpoint(ckpt, model, run.opt, run.sched, run.scaler, run.device, cfg.epochs,
                                adversary=run.adversary)
        state = _Progress(start_epoch=saved["epoch"] + 1, global_step=saved["global_step"],
                          history=saved["history"], best_loss=saved["best_val_loss"],
                          best_epoch=saved["best_epoch"], bad_epochs=saved["bad_epochs"],
                          stopped_early=saved["stopped_early"])
        log.info("resuming from %s at epoch %d (step %d)", ckpt, state.start_epoch, state.global_step)
        return state
    if cfg.normalization_samples > 0:
        stats = estimate_normalization(train_dataset, cfg.normalization_samples)
        model.set_normalization(stats["input_mean"], stats["input_std"],
                                output_offset=stats["output_offset"] if model.config.residual else None,
                                output_scale=stats["output_scale"] if model.config.residual else None)
        log.info("normalisation from %d samples: input mean %s", cfg.normalization_samples,
                 np.round(stats["input_mean"], 3).tolist())
    if getattr(model.config, "lowfreq_constraint", False):
        from harmonize.lowfreq import fit_bandpass

        slope, offset = fit_bandpass(train_dataset, cfg.normalization_samples or 32,
                                     n_bands=len(model.config.output_bands))
        model.set_normalization(bandpass_slope=slope, bandpass_offset=offset)
        log.info("low-frequency constraint: 30 m bandpass slope %s, offset %s",
                 np.round(slope, 3).tolist(), np.round(offset, 4).tolist())
    return _Progress()


def _train_epoch(run: _Run, state: _Progress, train_dataset: Any, epoch: int, *, progress: bool
                 ) -> dict[str, float]:
    """One pass (at most ``max_batches_per_epoch`` batches); the epoch's row so far."""
    from tqdm.auto import tqdm

    cfg, model, opt, scaler = run.cfg, run.model, run.opt, run.scaler
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout etc.: identical after a resume
    model.train()
    loader = _loader(run, train_dataset, epoch)
    total = min(len(loader), cfg.max_batches_per_epoch or len(loader))
    loss_sum, loss_n = 0.0, 0
    sums = {"train_l1": 0.0, "train_g_adv": 0.0, "train_d_loss": 0.0}
    last_lr = opt.param_groups[0]["lr"]
    opt.zero_grad(set_to_none=True)
    bar = tqdm(loader, total=total, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
    for i, batch in enumerate(bar):
        if i >= total:
            break
        x, y, valid = prepare_batch(batch, model, run.device)
        with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            pred = run.train_model(x)
        loss = training_loss(pred.float(), y, valid, **loss_options(cfg))
        group_end = min(total, (i // cfg.grad_accum + 1) * cfg.grad_accum)
        share = 1.0 / (group_end - (i // cfg.grad_accum) * cfg.grad_accum)
        if run.adversary is not None:
            loss = _adversarial_terms(run, x, pred, y, valid, loss, share, sums)
        logged = float(loss.detach())
        if run.dist is not None:
            loss, logged = _global_share(run.dist, loss, valid)
        scaled = loss * share
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if i + 1 == group_end:
            _update(run)
            if run.adversary is not None:
                run.adversary.step(cfg.grad_clip)
            last_lr = opt.param_groups[0]["lr"]  # the LR this update used
            run.sched.step()
            state.global_step += 1
        loss_sum += logged
        loss_n += 1
        bar.set_postfix(loss=f"{loss_sum / loss_n:.5f}")
    bar.close()
    row = {"epoch": epoch, "train_loss": loss_sum / max(loss_n, 1), "lr": last_lr, "step": state.global_step}
    if run.adversary is not None:
        row.update({k: v / max(loss_n, 1) for k, v in sums.items()})
    return row


def _loader(run: _Run, dataset: Any, epoch: int) -> Any:
    """The epoch's batches, seeded by ``seed`` and the epoch; with several processes, this
    process's part of each (the same global batches on any number of processes)."""
    g = torch.Generator().manual_seed(run.cfg.seed * 100_003 + epoch)
    rank, world = (run.dist.rank, run.dist.world_size) if run.dist is not None else (0, 1)
    batches = split_batches(len(dataset), run.cfg.batch_size, g, rank, world)
    return batch_loader(dataset, batches, run.cfg.num_workers)


def _global_share(dist: Distributed, loss: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This process's loss weighted by its share of the global batch's valid pixels.

    DDP averages gradients over the processes, so ``world_size * n_local / n_global`` times the
    local masked mean gives the gradient of the global batch's masked mean; the second value is
    that global loss (the same on every process, and the single-process figure).
    """
    n_local = valid.sum().to(torch.float64)
    n_global = dist.sum(n_local).clamp_min(1.0)
    scaled = loss * (n_local * dist.world_size / n_global).to(loss.dtype)
    return scaled, float(dist.sum(scaled.detach()) / dist.world_size)


def _adversarial_terms(run: _Run, x: torch.Tensor, pred: torch.Tensor, y: torch.Tensor,
                       valid: torch.Tensor, loss: torch.Tensor, share: float,
                       sums: dict[str, float]) -> torch.Tensor:
    """Accumulate the discriminator's gradients; the generator's loss with its adversarial term."""
    adv = run.adversary
    assert adv is not None
    d_loss = adv.discriminator_loss(x, pred, y, valid)
    (d_loss * share).backward()
    g_adv = adv.generator_loss(x, pred, y, valid)
    sums["train_l1"] += float(loss.detach())
    sums["train_g_adv"] += float(g_adv.detach())
    sums["train_d_loss"] += float(d_loss.detach())
    return loss + adv.config.weight * g_adv


def _update(run: _Run) -> None:
    """One optimizer update from the accumulated gradients (unscaled and clipped first)."""
    cfg, model, opt, scaler = run.cfg, run.model, run.opt, run.scaler
    if scaler is not None:
        scaler.unscale_(opt)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)


def _validate_epoch(run: _Run, row: dict[str, float], val_dataset: Any | None) -> float:
    """Add the validation scores to ``row``; the loss that chooses the best epoch."""
    if val_dataset is not None and len(val_dataset) > 0:
        row.update(validate(run.model, val_dataset, run.cfg, run.device, run.amp_dtype))
        return row["val_loss"]
    return row["train_loss"]


def _end_epoch(run: _Run, state: _Progress, epoch: int, monitor: float, *, has_val: bool) -> None:
    """Keep the best weights, count epochs without improvement, write checkpoint and history."""
    cfg = run.cfg
    if monitor < state.best_loss - cfg.min_delta:
        state.best_loss, state.best_epoch, state.bad_epochs = monitor, epoch, 0
        if run.is_main:
            save_weights(run.model, run.out / BEST_WEIGHTS)
    else:
        state.bad_epochs += 1
        if has_val and cfg.patience is not None and state.bad_epochs >= cfg.patience:
            state.stopped_early = True
            log.info("early stopping: no improvement for %d epochs (best epoch %d)", state.bad_epochs,
                     state.best_epoch)
    if run.is_main:
        save_checkpoint(run.ckpt_root, epoch, run.model, run.opt, run.sched, run.scaler,
                        state.checkpoint_state(epoch, run), cfg.keep_checkpoints, adversary=run.adversary)
        write_history(state.history, run.out / "history.csv")
    if run.dist is not None:
        run.dist.barrier()


def _call_back(callbacks: Sequence[Callback], row: dict[str, float]) -> bool:
    """Call every callback with ``row``; whether one raised :class:`StopTraining`."""
    stop = False
    for cb in callbacks:
        try:
            cb(row)
        except StopTraining:
            stop = True
    return stop


def _describe(cfg: UNetConfig) -> str:
    return f"UNet(depth={cfg.depth}, width={cfg.base_channels}, {cfg.upsample}, {cfg.norm}, {cfg.activation})"


def _finish(run: _Run, state: _Progress, train_ds: Any, val_ds: Any | None,
            dataset_summary: dict[str, Any] | None) -> TrainResult:
    """Load the best weights, score them, draw the figures and export the model package."""
    cfg, model, out, device = run.cfg, run.model, run.out, run.device
    best = out / BEST_WEIGHTS
    if best.is_file():
        load_weights(model, best, device)
    model.eval()
    if not run.is_main:  # rank 0 scores and exports
        return TrainResult(model=model.cpu(), history=state.history, best_epoch=state.best_epoch,
                           best_val_loss=state.best_loss, stopped_early=state.stopped_early,
                           global_step=state.global_step, package_path=None, out_dir=out,
                           stopped_at=state.stopped_at)
    metrics = full_metrics(model, val_ds, cfg.eval_samples, device) if val_ds is not None else {}
    if cfg.figures:
        if state.history:
            plot_loss_curve(state.history, out / "loss_curve.png")
            if run.adversary is not None:
                plot_adversarial_curve(state.history, out / "adversarial_curve.png")
        show_results(model, val_ds if val_ds is not None and len(val_ds) else train_ds,
                     out / "results.png", n=4, device=str(device))
    sample = train_ds[0]
    summary = {"n_train": len(train_ds), "n_val": len(val_ds) if val_ds is not None else 0,
               "patch_shape": list(np.asarray(sample["input"]).shape), **(dataset_summary or {})}
    model.cpu()
    pkg = save_model_package(model, out / "model", metadata={
        "training_data": summary,
        "metrics": {"best_epoch": state.best_epoch, "best_val_loss": state.best_loss, **metrics},
        "hyperparameters": cfg.model_dump(mode="json"),
        "accelerator": device.type,
        "batch_size_suggestion": cfg.batch_size,
    })
    log.info("best epoch %d (val loss %.6f); model package %s", state.best_epoch, state.best_loss, pkg.parent)
    return TrainResult(model=model, history=state.history, best_epoch=state.best_epoch,
                       best_val_loss=state.best_loss, stopped_early=state.stopped_early,
                       global_step=state.global_step, package_path=pkg, metrics=metrics, out_dir=out,
                       stopped_at=state.stopped_at)
