"""Epoch checkpoints and best weights: write, find, and load them for a resume.

Layout under a run's folder::

    checkpoints/epoch-0003/{model.safetensors, optimizer.pt, state.json}   one per epoch
    best.safetensors                                                       the best epoch's weights

``optimizer.pt`` holds plain tensors only (it loads with ``weights_only=True``); a checkpoint is
written to a temporary folder and renamed, so a run killed mid-write leaves the previous one.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path
from typing import Any, Literal

import torch

from harmonize.errors import ModelError
from harmonize.model import UNet

__all__ = [
    "BEST_WEIGHTS",
    "save_checkpoint",
    "latest_checkpoint",
    "unreadable",
    "checkpoint_to_resume",
    "load_checkpoint",
    "save_weights",
    "load_weights",
]

log = logging.getLogger(__name__)

#: File name of the best epoch's weights in a run's folder.
BEST_WEIGHTS = "best.safetensors"


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write ``model``'s state dict (on CPU, contiguous) as safetensors."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))


def load_weights(model: torch.nn.Module, path: Path, device: torch.device) -> None:
    """Load safetensors weights written by :func:`save_weights` into ``model`` on ``device``."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path), device=str(device)))


def save_checkpoint(ckpt_root: Path, epoch: int, model: UNet, opt: torch.optim.Optimizer, sched: Any,
                    scaler: Any, state: dict[str, Any], keep: int, *, adversary: Any = None) -> Path:
    """Write epoch ``epoch``'s checkpoint under ``ckpt_root`` and keep only the ``keep`` latest.

    Parameters
    ----------
    state
        JSON facts of the run at the end of the epoch (history, best epoch …), as ``state.json``.
    adversary
        The run's :class:`~harmonize.train.adversarial.Adversary`, if any: its discriminator
        goes in as ``discriminator.safetensors``, its optimizer in ``optimizer.pt``.

    Returns
    -------
    Path
        The checkpoint folder.
    """
    final = ckpt_root / f"epoch-{epoch:04d}"
    tmp = ckpt_root / f".epoch-{epoch:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    opt_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "scaler": scaler.state_dict() if scaler is not None else {}}
    if adversary is not None:
        opt_state["discriminator_optimizer"] = adversary.save(tmp)
    torch.save(opt_state, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(ckpt_root.glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The latest epoch checkpoint in a run's folder, or ``None``."""
    ckpts = sorted((out_dir / "checkpoints").glob("epoch-*"))
    return ckpts[-1] if ckpts else None


def unreadable(ckpt: Path) -> str | None:
    """Why checkpoint ``ckpt`` cannot be resumed from (a missing, truncated or corrupt file), or
    ``None`` when its three files read (``optimizer.pt`` as plain tensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        json.loads((ckpt / "state.json").read_text())
        load_file(str(ckpt / "model.safetensors"))
        torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, SafetensorError,
            pickle.UnpicklingError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _latest_readable(out_dir: Path) -> Path | None:
    """The latest checkpoint that reads; each later one that does not is named in a warning.
    With none readable, the latest (whose load then says what is wrong with it)."""
    ckpts = sorted((out_dir / "checkpoints").glob("epoch-*"))
    for ckpt in reversed(ckpts):
        why = unreadable(ckpt)
        if why is None:
            return ckpt
        log.warning("checkpoint %s cannot be resumed from (%s); trying the one before it", ckpt, why[:300])
    return ckpts[-1] if ckpts else None


def checkpoint_to_resume(out_dir: Path, resume: Literal["auto"] | str | Path | None) -> Path | None:
    """The checkpoint a run resumes from (see :func:`harmonize.train.fit`'s ``resume``).

    ``"auto"`` takes the latest checkpoint that reads: a truncated or corrupt one (a run killed
    while the disk failed) is named in a warning and the one before it is taken.
    ``None`` starts fresh: an earlier run's checkpoints and best weights in ``out_dir`` are
    removed, so that ``resume="auto"`` can never pick up its later epochs.
    """
    if resume == "auto":
        ckpt = _latest_readable(out_dir)
        if ckpt is None:
            log.info("resume='auto': no checkpoint in %s, starting fresh", out_dir / "checkpoints")
        return ckpt
    if resume is not None:
        return Path(resume)
    stale = sorted((out_dir / "checkpoints").glob("epoch-*"))
    if stale:
        log.warning("starting fresh in %s: removing %d checkpoint(s) of an earlier run", out_dir, len(stale))
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)
    (out_dir / BEST_WEIGHTS).unlink(missing_ok=True)
    return None


def _load_adversary(path: Path, adversary: Any, opt_state: dict[str, Any], device: torch.device,
                    resumes: bool) -> None:
    """The discriminator of an adversarial run from its checkpoint (a named error if it lacks one)."""
    if adversary is None:
        return
    from harmonize.train.adversarial import DISCRIMINATOR_WEIGHTS

    if not (path / DISCRIMINATOR_WEIGHTS).is_file() or "discriminator_optimizer" not in opt_state:
        raise ModelError(f"checkpoint {path} holds no discriminator ({DISCRIMINATOR_WEIGHTS}): it was "
                         "written by a run without `adversarial`; train into a new out_dir, use "
                         "resume=None, or drop `adversarial` to continue it as it was")
    try:
        adversary.load(path, opt_state["discriminator_optimizer"] if resumes else None, device)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"checkpoint {path} holds a discriminator that does not fit this run's "
                         f"`adversarial` settings ({exc}); keep them when resuming") from exc


def _same_config(saved: Any, config: Any) -> bool:
    """Whether a checkpoint's recorded model config is ``config``.

    The record is read through the config class, so a checkpoint written before a field was
    added (``lowfreq_constraint``) matches a config that leaves that field at its default.
    """
    if not isinstance(saved, dict):
        return False
    try:
        return type(config)(**saved) == config
    except (TypeError, ValueError):
        return False


def load_checkpoint(path: Path, model: UNet, opt: torch.optim.Optimizer, sched: Any, scaler: Any,
                    device: torch.device, epochs: int, *, adversary: Any = None) -> dict[str, Any]:
    """Load a checkpoint into ``model``, ``opt``, ``sched``, ``scaler`` (and ``adversary``); return its state.

    The optimizer and schedule are left alone when the checkpoint's epoch is ``epochs`` or later
    (nothing is left to train, and a schedule built for another length need not fit).

    Raises
    ------
    ModelError
        If the checkpoint cannot be read, was made for another model configuration, or holds an
        optimizer or schedule that does not fit this run.
    """
    from safetensors import SafetensorError

    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot resume from checkpoint {path}: {exc}") from exc
    if not _same_config(state.get("unet_config"), model.config):
        raise ModelError(f"checkpoint {path} was made for another model configuration "
                         f"({state.get('unet_config')}); train into a new out_dir or use resume=None")
    try:
        load_weights(model, path / "model.safetensors", device)
        opt_state = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # torch's message would advise weights_only=False: never
        raise ModelError(
            f"{path / 'optimizer.pt'} holds pickled Python objects, not plain tensors; harmonize "
            "never unpickles code from a file. Resume from another checkpoint, or start afresh "
            "(resume=None, `harmonize train --no-resume`)."
        ) from None
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        earlier = sorted(p.name for p in path.parent.iterdir() if p.is_dir() and p.name < path.name)
        hint = f"; resume from an earlier one ({', '.join(earlier[-2:])} in {path.parent})" if earlier else ""
        raise ModelError(f"cannot resume from checkpoint {path} (a file in it is corrupt or "
                         f"truncated: {exc}){hint}, or start afresh with resume=None") from exc
    _load_adversary(path, adversary, opt_state, device, resumes=state["epoch"] < epochs)
    if state["epoch"] >= epochs:
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
