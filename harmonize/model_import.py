"""Import published Deep-Harmonization checkpoints as harmonize model packages.

``harmonize model import SRC OUT`` (:func:`import_model`) reads a downloaded snapshot (a folder
or one weights file; a hub repository id when ``huggingface_hub`` is installed and the network
is there), matches its state-dict keys to a
:class:`~harmonize.deep_harmonization.DeepHarmonizationUNet` through the data of
:func:`~harmonize.deep_harmonization.key_map`, and writes a package (safetensors + STAC MLM).

Nothing from the snapshot is executed: weights are read from ``*.safetensors``, or from
``*.bin`` / ``*.pt`` / ``*.pth`` with ``torch.load(weights_only=True)`` (plain tensors only);
the snapshot's own model code and ``trust_remote_code`` are never used. A checkpoint whose keys
or shapes do not all match is refused with the lists of unmatched, missing and mis-shaped keys,
never loaded in part.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from harmonize.deep_harmonization import (
    DH_PRESETS,
    SOURCE_PREFIXES,
    DeepHarmonizationUNet,
    DHConfig,
    infer_config,
    key_map,
)
from harmonize.errors import ModelError
from harmonize.model import save_model_package

__all__ = ["KeyMismatchError", "read_checkpoint", "match_state", "import_model", "input_description"]

log = logging.getLogger(__name__)

_TORCH_SUFFIXES = (".bin", ".pt", ".pth")

def input_description(pre_interpolation: str) -> str:
    """The ``mlm:input`` text of an imported package: the paper's input conventions."""
    interp = ("the package reduces the six reflectance bands to their 30 m block means and "
              "redoes the paper's bicubic x3 interpolation itself (feed the cube as loaded, any "
              "resampling)" if pre_interpolation == "bicubic" else
              "the reflectance bands are used as given (load the cube with resampling='cubic' to "
              "match the paper's bicubic x3)")
    return (
        "l8MS + l8pan of Sambandham et al. (2024): Landsat C2 L2 bottom-of-atmosphere reflectance "
        "(blue, green, red, nir08, swir16, swir22; DN * 2.75e-5 - 0.2) and C2 L1 "
        "top-of-atmosphere pan reflectance (REFLECTANCE_MULT/ADD_BAND_8 of the MTL), physical "
        "reflectance on the 10 m grid, no NaN (fill before, mask after), no z-score scaling; "
        f"{interp}. Pan is used as loaded onto the 10 m grid (the paper: bicubic from 15 m)."
    )


class KeyMismatchError(ModelError):
    """A checkpoint's keys or shapes do not match the architecture; nothing was loaded.

    Attributes
    ----------
    unmatched, missing, misshaped
        Checkpoint keys with no place in the model; model keys the checkpoint lacks;
        ``(key, checkpoint shape, model shape)`` for keys whose shapes differ.
    """

    def __init__(self, source: str, unmatched: list[str], missing: list[str],
                 misshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        self.unmatched, self.missing, self.misshaped = unmatched, missing, misshaped
        lines = [f"{source} does not match the architecture; nothing was loaded."]
        if unmatched:
            lines.append(f"unmatched checkpoint keys ({len(unmatched)}): " + ", ".join(unmatched))
        if missing:
            lines.append(f"missing model keys ({len(missing)}): " + ", ".join(missing))
        if misshaped:
            lines.append(f"mis-shaped keys ({len(misshaped)}): " + ", ".join(
                f"{k} {list(a)} vs {list(b)}" for k, a, b in misshaped))
        lines.append("Name the right preset with --preset (one of " + ", ".join(DH_PRESETS) + ").")
        super().__init__("\n".join(lines))


def _hub_snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelError(f"{repo_id!r} is no local folder or file, and huggingface_hub is not "
                         "installed to fetch it: download the snapshot (e.g. `huggingface-cli "
                         f"download {repo_id} --local-dir DIR`) and import DIR") from exc
    patterns = ["*.safetensors", "*.bin", "*.pt", "*.pth", "*.json", "*.md"]
    return Path(snapshot_download(repo_id, allow_patterns=patterns))


def _weight_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    files = sorted(src.rglob("*.safetensors"))
    if not files:
        files = sorted(p for p in src.rglob("*") if p.suffix in _TORCH_SUFFIXES)
    if not files:
        raise ModelError(f"no weights in {src}: expected *.safetensors (or *.bin/*.pt/*.pth)")
    return files


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"cannot read weights {path}: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler refuses code with many error types
        raise ModelError(f"cannot read {path} as plain tensors (weights_only=True): {exc}") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    return obj


def read_checkpoint(src: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The merged state dict of a snapshot folder, a weights file or a hub repository id.

    Returns
    -------
    (dict, str)
        Key -> tensor, and where it came from (folder, file or repository id).
    """
    path = Path(src)
    source = str(src)
    if not path.exists():
        if str(src).count("/") != 1:
            raise ModelError(f"{src} does not exist (give a snapshot folder, a weights file or a "
                             "hub repository id 'owner/name')")
        path = _hub_snapshot(str(src))
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(path):
        state.update(_read_one(f))
    return state, source


def _best_prefix(state: dict[str, Any]) -> str:
    """The :data:`SOURCE_PREFIXES` entry under which the checkpoint's encoder keys are found."""
    for prefix in SOURCE_PREFIXES:
        if f"{prefix}encoding_module.0.block.0.weight" in state:
            return prefix
    return SOURCE_PREFIXES[0]


def match_state(state: dict[str, torch.Tensor], config: DHConfig, source: str = "the checkpoint"
                ) -> tuple[DeepHarmonizationUNet, str]:
    """A model of ``config`` holding all of ``state``'s weights, and the key prefix found.

    Raises
    ------
    KeyMismatchError
        When a key is unmatched, missing or mis-shaped (the model is not built from a part).
    """
    prefix = _best_prefix(state)
    mapping = key_map(config, prefix)
    with torch.device("meta"):  # shapes only: the checkpoint fills every weight
        ours = DeepHarmonizationUNet(config).state_dict()
    unmatched = sorted(k for k in state if k not in mapping)
    missing = sorted(v for k, v in mapping.items() if k not in state)
    misshaped = [(k, tuple(state[k].shape), tuple(ours[v].shape)) for k, v in mapping.items()
                 if k in state and tuple(state[k].shape) != tuple(ours[v].shape)]
    if unmatched or missing or misshaped:
        raise KeyMismatchError(source, unmatched, missing, misshaped)
    with torch.device("meta"):
        model = DeepHarmonizationUNet(config)
    weights = {v: state[k].to(ours[v].dtype) for k, v in mapping.items()}
    model.load_state_dict({**model.own_buffers(), **weights}, strict=True, assign=True)
    return model.eval(), prefix


def import_model(src: str | Path, out: str | Path, *, preset: str | None = None,
                 lowfreq_constraint: bool = False, pre_interpolation: str = "bicubic",
                 name: str | None = None) -> Path:
    """Turn a Deep-Harmonization snapshot into a harmonize model package.

    Parameters
    ----------
    src
        Snapshot folder, weights file, or hub repository id (``venkatesh-thiru/s2l8h-UNet-5depth-upsample``).
    out
        Package folder to write.
    preset
        One of :data:`~harmonize.deep_harmonization.DH_PRESETS`; by default read from the
        checkpoint's keys and shapes (depth, width, up-sampling).
    lowfreq_constraint, pre_interpolation
        :class:`~harmonize.deep_harmonization.DHConfig` options of the package.
    name
        The package's ``mlm:name`` (default ``deep-harmonization-<preset>``).

    Returns
    -------
    Path
        The package's ``mlm.json``.

    Raises
    ------
    KeyMismatchError
        When the checkpoint does not match the architecture (with the key lists).
    ModelError
        When ``src`` cannot be found or read.
    """
    state, source = read_checkpoint(src)
    options = {"lowfreq_constraint": lowfreq_constraint, "pre_interpolation": pre_interpolation}
    if preset is not None:
        if preset.removeprefix("dh-") not in DH_PRESETS:
            raise ModelError(f"unknown Deep-Harmonization preset {preset!r}; "
                             f"choose one of {list(DH_PRESETS)}")
        config = DHConfig(**{**DH_PRESETS[preset.removeprefix("dh-")].model_dump(), **options})
    else:
        config = infer_config(state, _best_prefix(state), **options)
    model, prefix = match_state(state, config, source)
    label = preset or next((k for k, v in DH_PRESETS.items()
                            if v.model_copy(update=options) == config), "custom")
    log.info("imported %d tensors from %s (prefix %r) as %s", len(state), source, prefix, label)
    return save_model_package(model, out, metadata={
        "name": name or f"deep-harmonization-{label}",
        "preset": label,
        "description": ("Deep-Harmonization UNet (Sambandham et al. 2024) imported from "
                        f"{source}: Landsat-8/9 l8MS + l8pan on the 10 m grid -> Sentinel-2-like "
                        "reflectance."),
        "pretrained": True,
        "pretrained_source": source,
        "input_description": input_description(pre_interpolation),
        "source_key_prefix": prefix,
    })
