"""Training of the harmonization UNet: ``fit()``, checkpoints, resume, early stopping, LR finder.

Datasets are any ``torch.utils.data.Dataset`` whose items are dicts::

    {"input":  float32 [7, H, W]   Landsat blue green red nir swir16 swir22 pan, 10 m grid,
     "target": float32 [6, H, W]   Sentinel-2 reflectance, same band order,
     "valid":  bool    [H, W]      optional, pixels to score (clear in both sensors),
     "truth":  float32 [6, H, W]   optional, noise-free truth (simulated archives only)}

NaN in ``target`` (or ``valid == False``) excludes a pixel from the loss and the metrics; NaN in
``input`` is filled with the model's per-band input mean and the pixel is excluded as well.

Outputs in ``out_dir``::

    checkpoints/epoch-0003/{model.safetensors, optimizer.pt, state.json}   one per epoch
    best.safetensors        weights of the best validation epoch
    history.csv             epoch, train_loss, val_loss, val_psnr, val_ssim, lr, seconds
    loss_curve.png, results.png, model/ (the model package: model.safetensors + mlm.json)

Reproducibility: on CPU the same seed gives identical losses, and a run resumed from a
checkpoint gives the same losses and weights as an uninterrupted one (each epoch reseeds the
global RNG and the shuffling from ``seed`` and the epoch number). GPU runs use mixed precision
(bfloat16 where supported) and are not bit-reproducible.
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset

from harmonize.errors import HarmonizeError, ModelError
from harmonize.metrics import evaluate
from harmonize.metrics import ssim as ssim_metric
from harmonize.model import PRESETS, UNet, UNetConfig, count_parameters, save_model_package
from harmonize.overrides import apply_overrides
from harmonize.plot_training import plot_loss_curve, plot_lr_find, show_results

__all__ = [
    "TrainConfig",
    "TrainResult",
    "LRFindResult",
    "fit",
    "lr_find",
    "show_results",
    "train_from_config",
    "estimate_normalization",
    "masked_l1",
    "SyntheticPairs",
    "synthetic_datasets",
    "benchmark_training",
]

log = logging.getLogger(__name__)

DatasetFactory = Callable[["TrainConfig"], "tuple[Dataset, Dataset | None]"]


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
        Full validation metrics of the best model (and of the identity baseline, ``identity_*``).
    out_dir
        Where everything was written.
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


# ---------------------------------------------------------------------------------------------
# losses and batches
# ---------------------------------------------------------------------------------------------
def _prepare_batch(batch: dict[str, torch.Tensor], model: UNet, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move a batch to ``device``, fill NaN inputs, and build the ``[N, H, W]`` validity mask."""
    x = batch["input"].to(device, non_blocking=True).float()
    y = batch["target"].to(device, non_blocking=True).float()
    valid = torch.isfinite(y).all(1) & torch.isfinite(x).all(1)
    if "valid" in batch:
        valid &= batch["valid"].to(device).bool()
    x = torch.where(torch.isfinite(x), x, model.input_mean[None, :, None, None].to(x.dtype))
    y = torch.where(valid[:, None], y, torch.zeros((), device=device))
    return x, y, valid


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over valid pixels and all bands (0 when nothing is valid)."""
    w = valid[:, None].to(pred.dtype).expand_as(pred)
    return ((pred - target).abs() * w).sum() / w.sum().clamp_min(1.0)


def _ssim_map(a: torch.Tensor, b: torch.Tensor, win: int = 7) -> torch.Tensor:
    """Differentiable SSIM map with a uniform window (data range 1), per band."""
    c1, c2 = 0.01**2, 0.03**2
    pad = win // 2
    mu_a = F.avg_pool2d(a, win, 1, pad, count_include_pad=False)
    mu_b = F.avg_pool2d(b, win, 1, pad, count_include_pad=False)
    saa = F.avg_pool2d(a * a, win, 1, pad, count_include_pad=False) - mu_a**2
    sbb = F.avg_pool2d(b * b, win, 1, pad, count_include_pad=False) - mu_b**2
    sab = F.avg_pool2d(a * b, win, 1, pad, count_include_pad=False) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))


def _loss(pred: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    loss = masked_l1(pred, y, valid)
    if ssim_weight > 0:
        # Invalid pixels take the target's value in both images so windows see no fake edge.
        p = torch.where(valid[:, None], pred, y)
        m = _ssim_map(p.float(), y.float())
        w = valid[:, None].expand_as(m).float()
        loss = loss + ssim_weight * (1 - (m * w).sum() / w.sum().clamp_min(1.0))
    return loss


# ---------------------------------------------------------------------------------------------
# normalisation statistics
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def estimate_normalization(dataset: Dataset, n: int = 32) -> dict[str, list[float]]:
    """Per-band statistics over valid pixels of ``n`` evenly spread training samples.

    Returns
    -------
    dict
        ``input_mean``, ``input_std`` (7 values) and ``output_offset``, ``output_scale``
        (mean and standard deviation of ``target - input`` for the 6 reflectance bands).
    """
    idx = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int))
    xs, rs = [], []
    for i in idx:
        s = dataset[int(i)]
        x = torch.as_tensor(s["input"]).double()
        y = torch.as_tensor(s["target"]).double()
        valid = torch.isfinite(x).all(0) & torch.isfinite(y).all(0)
        if "valid" in s:
            valid &= torch.as_tensor(s["valid"]).bool()
        xs.append(x[:, valid])
        rs.append(y[:, valid] - x[: y.shape[0], valid])
    x = torch.cat(xs, 1)
    r = torch.cat(rs, 1)
    if x.shape[1] < 2:
        raise HarmonizeError("no valid pixels in the training samples: check masks and targets")
    return {
        "input_mean": x.mean(1).tolist(),
        "input_std": x.std(1).clamp_min(1e-4).tolist(),
        "output_offset": r.mean(1).tolist(),
        "output_scale": r.std(1).clamp_min(1e-4).tolist(),
    }


# ---------------------------------------------------------------------------------------------
# device, optimizer, schedule
# ---------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HarmonizeError("device 'cuda' requested but no GPU is visible; use device: auto or cpu")
    return dev


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int):  # noqa: ANN202
    total_steps = max(total_steps, 1)
    if cfg.schedule == "onecycle" and total_steps >= 4:
        # OneCycleLR needs at least one step in each phase
        pct = min(max(cfg.warmup_fraction, 1.5 / total_steps), 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct,
            anneal_strategy="cos", cycle_momentum=False)
    warm = int(round(cfg.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if cfg.schedule != "cosine":  # constant, or a onecycle too short to have phases
            return 1.0
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(total_steps - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _loader(dataset: Dataset, cfg: TrainConfig, *, shuffle: bool, epoch: int) -> DataLoader:
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, generator=g,
                      num_workers=cfg.num_workers, drop_last=False,
                      pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_seed_worker if cfg.num_workers else None)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def _steps_per_epoch(n_batches: int, cfg: TrainConfig) -> int:
    if cfg.max_batches_per_epoch:
        n_batches = min(n_batches, cfg.max_batches_per_epoch)
    return math.ceil(n_batches / cfg.grad_accum)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def _save_checkpoint(ckpt_root: Path, epoch: int, model: UNet, opt: torch.optim.Optimizer, sched: Any,
                     scaler: Any, state: dict[str, Any], keep: int) -> Path:
    from safetensors.torch import save_file

    final = ckpt_root / f"epoch-{epoch:04d}"
    tmp = ckpt_root / f".epoch-{epoch:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(ckpt_root.glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted((out_dir / "checkpoints").glob("epoch-*"))
    return ckpts[-1] if ckpts else None


def _load_checkpoint(path: Path, model: UNet, opt: torch.optim.Optimizer, sched: Any, scaler: Any,
                     device: torch.device, epochs: int) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot resume from checkpoint {path}: {exc}") from exc
    if state.get("unet_config") != model.config.model_dump(mode="json"):
        raise ModelError(f"checkpoint {path} was made for another model configuration "
                         f"({state.get('unet_config')}); train into a new out_dir or use resume=None")
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)))
        opt_state = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot resume from checkpoint {path}: {exc}") from exc
    if state["epoch"] >= epochs:
        # Nothing left to train (e.g. `epochs` lowered to stop at this checkpoint): the optimizer
        # and a schedule built for another length are not needed.
        return state
    try:
        opt.load_state_dict(opt_state["optimizer"])
        sched.load_state_dict(opt_state["scheduler"])
        if scaler is not None and opt_state.get("scaler"):
            scaler.load_state_dict(opt_state["scaler"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"checkpoint {path} holds an optimizer or LR schedule that does not fit this "
                         f"config ({exc}); keep schedule, epochs and batch settings when resuming") from exc
    return state


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _validate(model: UNet, dataset: Dataset, cfg: TrainConfig, device: torch.device,
              amp_dtype: torch.dtype | None) -> dict[str, float]:
    model.eval()
    abs_sum = sq_sum = n_val = 0.0
    ssim_sum = ssim_n = 0.0
    loss_sum = n_pix = 0.0
    for batch in _loader(dataset, cfg, shuffle=False, epoch=0):
        x, y, valid = _prepare_batch(batch, model, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(x)
        pred = pred.float()
        pixels = float(valid.sum())
        loss_sum += float(_loss(pred, y, valid, cfg.ssim_weight)) * pixels
        n_pix += pixels
        w = valid[:, None].float().expand_as(pred)
        abs_sum += float(((pred - y).abs() * w).sum())
        sq_sum += float((((pred - y) ** 2) * w).sum())
        n = float(w.sum())
        n_val += n
        v = valid.cpu().numpy()
        if v.any():
            s = ssim_metric(pred.cpu().numpy(), y.cpu().numpy(), v)
            ssim_sum += s * n
            ssim_n += n
    if n_val == 0:
        return {"val_loss": float("nan"), "val_psnr": float("nan"), "val_ssim": float("nan")}
    mse = sq_sum / n_val
    return {
        "val_loss": loss_sum / n_pix,
        "val_mae": abs_sum / n_val,
        "val_psnr": float(10 * math.log10(1.0 / mse)) if mse > 0 else float("inf"),
        "val_ssim": ssim_sum / ssim_n if ssim_n else float("nan"),
    }


@torch.no_grad()
def _full_metrics(model: UNet, dataset: Dataset, n: int, device: torch.device) -> dict[str, float]:
    """All metrics of :func:`harmonize.metrics.evaluate` on up to ``n`` samples, and the identity
    baseline (the Landsat input's reflectance bands) as ``identity_*``, and against truth."""
    if dataset is None or n == 0 or len(dataset) == 0:
        return {}
    model.eval()
    idx = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int))
    preds, targets, inputs, masks, truths = [], [], [], [], []
    for i in idx:
        s = dataset[int(i)]
        batch = {k: torch.as_tensor(np.asarray(v))[None] for k, v in s.items()
                 if k in ("input", "target", "valid")}
        x, y, valid = _prepare_batch(batch, model, device)
        preds.append(model(x).float().cpu().numpy()[0])
        targets.append(np.asarray(s["target"], dtype=np.float32))
        inputs.append(x.cpu().numpy()[0, : preds[-1].shape[0]])
        masks.append(valid.cpu().numpy()[0])
        if "truth" in s:
            truths.append(np.asarray(s["truth"], dtype=np.float32))
    p, t, xi, m = (np.stack(a) for a in (preds, targets, inputs, masks))
    out = evaluate(p, t, m)
    out.update({f"identity_{k}": v for k, v in evaluate(xi, t, m).items()
                if k in ("psnr", "ssim", "sam", "ergas", "rmse", "nrmse", "ndvi_mae", "ndvi_r")})
    if len(truths) == len(preds):
        tr = np.stack(truths)
        out.update({f"truth_{k}": v for k, v in evaluate(p, tr, m).items()
                    if k in ("psnr", "ssim", "sam", "ergas", "rmse", "nrmse", "ndvi_mae", "ndvi_r")})
    return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------
_COLUMNS = ["epoch", "train_loss", "val_loss", "val_psnr", "val_ssim", "lr", "seconds"]


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    keys = _COLUMNS + sorted({k for r in history for k in r} - set(_COLUMNS))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in history:
            w.writerow({k: r.get(k, "") for k in keys})


def _log_row(row: dict[str, float], header: bool) -> None:
    if header:
        log.info("%5s %11s %11s %8s %7s %9s %8s", *_COLUMNS)
    log.info("%5d %11.6f %11.6f %8.3f %7.4f %9.2e %8.1f", row["epoch"], row["train_loss"],
             row.get("val_loss", float("nan")), row.get("val_psnr", float("nan")),
             row.get("val_ssim", float("nan")), row["lr"], row["seconds"])


def fit(
    config: TrainConfig | dict[str, Any],
    train_dataset: Dataset,
    val_dataset: Dataset | None = None,
    *,
    out_dir: str | Path,
    resume: Literal["auto"] | str | Path | None = None,
    model: UNet | None = None,
    callbacks: Sequence[Callable[[dict[str, float]], None]] = (),
    progress: bool = True,
    dataset_summary: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a UNet, checkpoint every epoch, keep the best validation weights, export a package.

    Parameters
    ----------
    config
        A :class:`TrainConfig` (or a dict of its fields).
    train_dataset, val_dataset
        Datasets of dicts (see the module docstring). Without ``val_dataset`` the training loss
        chooses the best epoch and early stopping is off.
    out_dir
        Folder for checkpoints, history, figures and the model package.
    resume
        ``None`` starts fresh (existing checkpoints in ``out_dir`` are replaced as epochs finish),
        ``"auto"`` continues from the latest checkpoint in ``out_dir`` if there is one, a path
        continues from that checkpoint folder.
    model
        A model to train instead of building ``config.model`` (its config is used for export).
    callbacks
        Called after each epoch's checkpoint with that epoch's row; raising stops the run (the
        checkpoint stays, so ``resume="auto"`` continues).
    progress
        Show a tqdm bar per epoch.
    dataset_summary
        JSON facts about the training data, stored in the model package.

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    device = _device(cfg.device)
    amp_dtype = _amp_dtype(device, cfg.amp)
    if len(train_dataset) == 0:
        raise HarmonizeError("the training dataset is empty: widen the pair search or lower the "
                             "clear-fraction threshold")

    torch.manual_seed(cfg.seed)
    if model is None:
        model = UNet(cfg.unet_config())
    model.to(device)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    n_batches = math.ceil(len(train_dataset) / cfg.batch_size)
    steps_per_epoch = _steps_per_epoch(n_batches, cfg)
    sched = _scheduler(cfg, opt, steps_per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    start_epoch, global_step = 1, 0
    history: list[dict[str, float]] = []
    best_loss, best_epoch, bad_epochs, stopped_early = float("inf"), 0, 0, False
    ckpt = None
    if resume == "auto":
        ckpt = _latest_checkpoint(out)
        if ckpt is None:
            log.info("resume='auto': no checkpoint in %s, starting fresh", ckpt_root)
    elif resume is not None:
        ckpt = Path(resume)
    else:
        stale = sorted(ckpt_root.glob("epoch-*"))
        if stale:
            # A fresh run must not leave an older run's later epochs for resume="auto" to pick up.
            log.warning("starting fresh in %s: removing %d checkpoint(s) of an earlier run", out, len(stale))
            for old in stale:
                shutil.rmtree(old, ignore_errors=True)
        (out / "best.safetensors").unlink(missing_ok=True)
    if ckpt is not None:
        state = _load_checkpoint(ckpt, model, opt, sched, scaler, device, cfg.epochs)
        start_epoch = state["epoch"] + 1
        global_step = state["global_step"]
        history = state["history"]
        best_loss, best_epoch = state["best_val_loss"], state["best_epoch"]
        bad_epochs, stopped_early = state["bad_epochs"], state["stopped_early"]
        log.info("resuming from %s at epoch %d (step %d)", ckpt, start_epoch, global_step)
    elif cfg.normalization_samples > 0:
        stats = estimate_normalization(train_dataset, cfg.normalization_samples)
        model.set_normalization(stats["input_mean"], stats["input_std"],
                                output_offset=stats["output_offset"] if model.config.residual else None,
                                output_scale=stats["output_scale"] if model.config.residual else None)
        log.info("normalisation from %d samples: input mean %s", cfg.normalization_samples,
                 np.round(stats["input_mean"], 3).tolist())

    log.info("training %s (%d parameters) on %s%s: %d samples, %d steps/epoch, %d epochs",
             _describe(model.config), count_parameters(model), device,
             f" with {amp_dtype}" if amp_dtype else "", len(train_dataset), steps_per_epoch, cfg.epochs)

    for epoch in range(start_epoch, cfg.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout etc.: identical after a resume
        model.train()
        loader = _loader(train_dataset, cfg, shuffle=True, epoch=epoch)
        total = min(n_batches, cfg.max_batches_per_epoch or n_batches)
        loss_sum, loss_n = 0.0, 0
        last_lr = opt.param_groups[0]["lr"]
        opt.zero_grad(set_to_none=True)
        bar = tqdm(loader, total=total, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for i, batch in enumerate(bar):
            if i >= total:
                break
            x, y, valid = _prepare_batch(batch, model, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pred = model(x)
            loss = _loss(pred.float(), y, valid, cfg.ssim_weight)
            group_end = min(total, (i // cfg.grad_accum + 1) * cfg.grad_accum)
            scaled = loss / (group_end - (i // cfg.grad_accum) * cfg.grad_accum)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if i + 1 == group_end:
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
                last_lr = opt.param_groups[0]["lr"]  # the LR this update used
                sched.step()
                global_step += 1
            loss_sum += float(loss.detach())
            loss_n += 1
            bar.set_postfix(loss=f"{loss_sum / loss_n:.5f}")
        bar.close()

        row: dict[str, float] = {"epoch": epoch, "train_loss": loss_sum / max(loss_n, 1),
                                 "lr": last_lr, "step": global_step}
        if val_dataset is not None and len(val_dataset) > 0:
            row.update(_validate(model, val_dataset, cfg, device, amp_dtype))
            monitor = row["val_loss"]
        else:
            monitor = row["train_loss"]
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        _log_row(row, header=len(history) == 1 or epoch == start_epoch)

        if monitor < best_loss - cfg.min_delta:
            best_loss, best_epoch, bad_epochs = monitor, epoch, 0
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      str(out / "best.safetensors"))
        else:
            bad_epochs += 1
            if val_dataset is not None and cfg.patience is not None and bad_epochs >= cfg.patience:
                stopped_early = True
                log.info("early stopping: no improvement for %d epochs (best epoch %d)", bad_epochs,
                         best_epoch)
        state = {"epoch": epoch, "global_step": global_step, "history": history,
                 "best_val_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                 "stopped_early": stopped_early, "config": cfg.model_dump(mode="json"),
                 "unet_config": model.config.model_dump(mode="json")}
        _save_checkpoint(ckpt_root, epoch, model, opt, sched, scaler, state, cfg.keep_checkpoints)
        _write_history(history, out / "history.csv")
        for cb in callbacks:
            cb(row)

    return _finish(model, cfg, train_dataset, val_dataset, out, history, best_epoch, best_loss,
                   stopped_early, global_step, device, dataset_summary)


def _describe(cfg: UNetConfig) -> str:
    return f"UNet(depth={cfg.depth}, width={cfg.base_channels}, {cfg.upsample}, {cfg.norm}, {cfg.activation})"


def _finish(model: UNet, cfg: TrainConfig, train_ds: Dataset, val_ds: Dataset | None, out: Path,
            history: list[dict[str, float]], best_epoch: int, best_loss: float, stopped_early: bool,
            global_step: int, device: torch.device, dataset_summary: dict[str, Any] | None
            ) -> TrainResult:
    from safetensors.torch import load_file

    best = out / "best.safetensors"
    if best.is_file():
        model.load_state_dict(load_file(str(best), device=str(device)))
    model.eval()
    metrics = _full_metrics(model, val_ds, cfg.eval_samples, device) if val_ds is not None else {}
    if cfg.figures:
        if history:
            plot_loss_curve(history, out / "loss_curve.png")
        show_results(model, val_ds if val_ds is not None and len(val_ds) else train_ds,
                     out / "results.png", n=4, device=str(device))
    sample = train_ds[0]
    summary = {"n_train": len(train_ds), "n_val": len(val_ds) if val_ds is not None else 0,
               "patch_shape": list(np.asarray(sample["input"]).shape), **(dataset_summary or {})}
    model.cpu()
    pkg = save_model_package(model, out / "model", metadata={
        "training_data": summary,
        "metrics": {"best_epoch": best_epoch, "best_val_loss": best_loss, **metrics},
        "hyperparameters": cfg.model_dump(mode="json"),
        "accelerator": device.type,
        "batch_size_suggestion": cfg.batch_size,
    })
    log.info("best epoch %d (val loss %.6f); model package %s", best_epoch, best_loss, pkg.parent)
    return TrainResult(model=model, history=history, best_epoch=best_epoch, best_val_loss=best_loss,
                       stopped_early=stopped_early, global_step=global_step, package_path=pkg,
                       metrics=metrics, out_dir=out)


# ---------------------------------------------------------------------------------------------
# learning-rate finder
# ---------------------------------------------------------------------------------------------
@dataclass
class LRFindResult:
    """Learning rates tried, their smoothed losses, the suggestion and the plot."""

    lrs: list[float]
    losses: list[float]
    suggested_lr: float
    plot_path: Path | None


def lr_find(
    config: TrainConfig | dict[str, Any],
    dataset: Dataset,
    *,
    model: UNet | None = None,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    num_steps: int = 60,
    plot_path: str | Path | None = None,
    smoothing: float = 0.9,
) -> LRFindResult:
    """Learning-rate range test: raise the LR exponentially each step and record the loss.

    The model is a copy (``model`` or one built from ``config``); the original is untouched. The
    suggestion is the LR of the steepest descent of the smoothed loss, capped at a tenth of the
    LR of the minimum loss. Stops early once the loss exceeds 4x its minimum.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = copy.deepcopy(model) if model is not None else UNet(cfg.unet_config())
    if model is None and cfg.normalization_samples > 0:
        stats = estimate_normalization(dataset, cfg.normalization_samples)
        net.set_normalization(stats["input_mean"], stats["input_std"],
                              output_offset=stats["output_offset"], output_scale=stats["output_scale"])
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=start_lr, weight_decay=cfg.weight_decay)
    gamma = (end_lr / start_lr) ** (1 / max(num_steps - 1, 1))
    lrs, losses = [], []
    avg, best = 0.0, float("inf")
    step = 0
    while step < num_steps:
        for batch in _loader(dataset, cfg, shuffle=True, epoch=step):
            if step >= num_steps:
                break
            lr = start_lr * gamma**step
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, valid = _prepare_batch(batch, net, device)
            loss = _loss(net(x).float(), y, valid, cfg.ssim_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg = smoothing * avg + (1 - smoothing) * float(loss.detach())
            smooth = avg / (1 - smoothing ** (step + 1))
            lrs.append(lr)
            losses.append(smooth)
            best = min(best, smooth)
            step += 1
            if not math.isfinite(smooth) or smooth > 4 * best:
                step = num_steps
                break
    suggested = _suggest_lr(lrs, losses)
    path = plot_lr_find(lrs, losses, suggested, plot_path) if plot_path else None
    log.info("lr_find: suggested learning rate %.2e", suggested)
    return LRFindResult(lrs=lrs, losses=losses, suggested_lr=suggested, plot_path=path)


def _suggest_lr(lrs: list[float], losses: list[float]) -> float:
    if len(lrs) < 3:
        return lrs[0] if lrs else 1e-3
    log_lr = np.log10(lrs)
    loss = np.asarray(losses)
    i_min = int(np.argmin(loss))
    grad = np.gradient(loss[: i_min + 1], log_lr[: i_min + 1]) if i_min >= 2 else np.gradient(loss, log_lr)
    steepest = lrs[int(np.argmin(grad))]
    return float(min(steepest, lrs[i_min] / 10) if i_min > 0 else steepest)


# ---------------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------------
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

    Returns
    -------
    dict
        ``steps_per_s``, ``samples_per_s``, ``megapixels_per_s``, ``device``, ``dtype``,
        ``threads``, ``parameters`` and, on CUDA, ``peak_memory_gib``.
    """
    dev = _device(device)
    amp_dtype = _amp_dtype(dev, amp)
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
# config-driven entry point
# ---------------------------------------------------------------------------------------------
def _resolve_factory(spec: str) -> DatasetFactory:
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
    """
    cfg = TrainConfig.from_yaml(path, overrides)
    if dataset_factory is None:
        dataset_factory = _resolve_factory(cfg.dataset.get("factory",
                                                           "harmonize.pairs:datasets_from_config"))
    train_ds, val_ds = dataset_factory(cfg)
    target = Path(out_dir or cfg.out_dir or Path("runs") / Path(path).stem)
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return fit(cfg, train_ds, val_ds, out_dir=target, resume=resume, progress=progress)


# ---------------------------------------------------------------------------------------------
# a small learnable synthetic dataset (tests, smoke runs, benchmarks)
# ---------------------------------------------------------------------------------------------
class SyntheticPairs(Dataset):
    """Learnable Landsat -> Sentinel-2 pairs with a known mapping, for tests and smoke runs.

    Truth: piecewise-constant fields with sharp edges (6 bands). Sentinel-2 target: the truth
    plus small noise, with a cloud-like blob marked invalid (NaN) in some samples. Landsat input:
    the truth blurred (Gaussian, ``blur`` = 1.5 px: a 30 m footprint on the 10 m grid) and mapped
    per band by a known ``gain`` and ``offset`` (the bandpass difference); pan: the mean of the
    visible truth bands with less blur (15 m), which carries the sharp detail.
    """

    GAIN = (0.95, 1.03, 0.97, 1.05, 0.98, 1.02)
    OFFSET = (0.01, -0.005, 0.008, -0.01, 0.004, 0.006)

    def __init__(self, n: int = 32, size: int = 32, *, seed: int = 0, noise: float = 0.002,
                 cloud_fraction: float = 0.3, blur: float = 1.5,
                 gain: Sequence[float] | None = None, offset: Sequence[float] | None = None) -> None:
        self.n, self.size, self.seed = n, size, seed
        self.noise, self.cloud_fraction, self.blur = noise, cloud_fraction, blur
        self.gain = np.asarray(gain if gain is not None else self.GAIN, dtype=np.float64)
        self.offset = np.asarray(offset if offset is not None else self.OFFSET, dtype=np.float64)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from scipy.ndimage import gaussian_filter

        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        s = self.size
        # Voronoi fields: each pixel takes the spectrum of its nearest seed point.
        k = int(rng.integers(4, 10))
        pts = rng.uniform(0, s, size=(k, 2))
        spectra = rng.uniform([0.02, 0.04, 0.03, 0.15, 0.10, 0.05], [0.10, 0.14, 0.18, 0.45, 0.35, 0.25],
                              size=(k, 6))
        yy, xx = np.mgrid[0:s, 0:s]
        d = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
        truth = spectra[np.argmin(d, axis=0)].transpose(2, 0, 1)
        gain = self.gain[:, None, None]
        off = self.offset[:, None, None]
        blurred = np.stack([gaussian_filter(b, self.blur, mode="reflect") for b in truth])
        landsat = blurred * gain + off
        pan = gaussian_filter(truth[:3].mean(0), 0.6, mode="reflect")
        x = np.concatenate([landsat, pan[None]]).astype(np.float32)
        target = (truth + rng.normal(0, self.noise, truth.shape)).astype(np.float32)
        valid = np.ones((s, s), dtype=bool)
        if rng.uniform() < self.cloud_fraction:
            cy, cx, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(s / 8, s / 4)
            valid = (yy - cy) ** 2 + (xx - cx) ** 2 > r**2
            target[:, ~valid] = np.nan
        return {"input": torch.from_numpy(x), "target": torch.from_numpy(target),
                "valid": torch.from_numpy(valid), "truth": torch.from_numpy(truth.astype(np.float32))}


def synthetic_datasets(config: TrainConfig) -> tuple[Dataset, Dataset]:
    """Dataset factory for smoke runs: ``dataset: {factory: "harmonize.train:synthetic_datasets",
    n_train: 64, n_val: 16, size: 64}``."""
    d = config.dataset
    size = int(d.get("size", 64))
    return (SyntheticPairs(int(d.get("n_train", 64)), size, seed=int(d.get("seed", 0))),
            SyntheticPairs(int(d.get("n_val", 16)), size, seed=int(d.get("seed", 0)) + 1))
