"""Side-by-side comparison of harmonization methods on the simulated world's held-out test blocks.

Two phases, so the expensive training can run where the geospatial stack is not installed:

``export`` (full stack, CPU)
    Create (or reuse) a simulated world, load both sensors onto the 10 m grid with **cubic**
    resampling of the Landsat scenes, co-register, build the same-day pair index and write one
    compact ``.npz`` with the train / val / test patches (input: 6 Landsat bands + pan, target:
    Sentinel-2, valid mask, truth at the Sentinel-2 date) and, for the test patches, the
    library's baselines: HLS bandpass (:func:`harmonize.bandpass.hls_adjust`) and a linear
    bandpass fitted on clear pixels of the training blocks only
    (:func:`harmonize.bandpass.fit_linear_adjustment`). The bicubic baseline is the test input
    itself.

``train-eval`` (torch + numpy only)
    Train each model preset (and each training variant of :data:`VARIANTS`: plain L1,
    adversarial, low-frequency constrained) on the train patches with the same budget through
    the library's one training loop, :func:`harmonize.train.fit` (:func:`budget_config`:
    optimizer steps, batch, learning-rate schedule; a random dihedral transform per patch; masked L1; AdamW;
    normalisation from every training patch; the weights of the epoch with the lowest
    validation L1), and score every method on the test patches against truth
    (:func:`harmonize.metrics.evaluate`, and the opensr-test style consistency and
    improvement/omission/hallucination scores). With ``--imported`` a randomly initialised
    Deep-Harmonization UNet goes through the real import path (a checkpoint in the published
    key layout, :func:`harmonize.model_import.import_model`) and is scored too, with and without
    the low-frequency constraint: the plumbing, not the paper's weights. Writes ``compare.json``
    and ``compare.md``.

Usage (``--device cuda --steps 4000`` on a GPU)::

    python -m pipelines.experiments.compare_models export --world DIR --out pairs.npz
    python -m pipelines.experiments.compare_models train-eval --data pairs.npz --out OUT
    python -m pipelines.experiments.compare_models train-eval --data pairs.npz --out OUT \
        --presets tiny --variants L1,adversarial,lowfreq --imported

The train-eval path imports numpy, torch, click, :mod:`harmonize.train`, :mod:`harmonize.model`
and :mod:`harmonize.metrics` (and what they import: pydantic, pyyaml, safetensors, tqdm, pystac
through ``harmonize/__init__``, scikit-image for SSIM), never dask, rasterio, odc-stac or zarr.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipelines.core.cli import ReportingGroup, setup_logging

log = logging.getLogger("pipelines.experiments.compare_models")  # not __main__ under python -m

__all__ = [
    "ExportSettings",
    "export_pairs",
    "paired_subcube",
    "export_from",
    "ArrayPairs",
    "budget_config",
    "fit_preset",
    "train_eval",
    "imported_rows",
    "VARIANTS",
    "markdown_tables",
    "main",
]

BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")
BASELINES: dict[str, str] = {
    "bicubic": "Landsat bicubic",
    "hls": "bicubic + HLS bandpass",
    "fitted": "bicubic + fitted linear bandpass",
}

#: Training variants (issue 15): name -> changes to the budget's TrainConfig. ``L1`` is the
#: preset as it trains by default (its row keeps the name ``UNet <preset>``).
VARIANTS: dict[str, dict[str, Any]] = {
    "L1": {},
    "adversarial": {"adversarial": {"discriminator": "patchgan", "weight": 0.01}},
    "lowfreq": {"model_overrides": {"lowfreq_constraint": True}},
    # L1 with dropout, so MC-dropout gives a spread whose coverage can be scored
    "dropout": {"model_overrides": {"dropout": 0.1}},
}
#: The published architecture the ``--imported`` rows rebuild with random weights.
IMPORTED_PRESET = "UNet-5depth-upsample"


# ---------------------------------------------------------------------------------------------
# export (full geospatial stack)


class ExportSettings(dict):
    """Pair-index settings of the export (a dict with the defaults for the demo world).

    Keys: ``max_days`` (0: same-day pairs), ``patch_size`` (64), ``stride`` (64),
    ``block_size`` (64), ``min_clear`` (0.3), ``train_fraction`` (0.7),
    ``val_fraction`` (0.1), ``test_fraction`` (0.2), ``seed`` (0), ``resampling`` ("cubic"),
    ``sharpen_target`` (True: Sentinel-2 targets with their 20 m bands sharpened to 10 m, as the
    demo trains; the ``truth`` arrays are unaffected).
    """

    DEFAULTS: dict[str, Any] = {
        "max_days": 0.0,
        "patch_size": 64,
        "stride": 64,
        "block_size": 64,
        "min_clear": 0.3,
        "train_fraction": 0.7,
        "val_fraction": 0.1,
        "test_fraction": 0.2,
        "seed": 0,
        "resampling": "cubic",
        "sharpen_target": True,
    }

    def __init__(self, **kw: Any) -> None:
        unknown = set(kw) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"unknown export settings {sorted(unknown)}; known: {sorted(self.DEFAULTS)}")
        super().__init__({**self.DEFAULTS, **kw})


#: Smaller windows for the 1.28 km six-week tiny world (tests): 16 blocks of 32 px; it has one
#: same-day pair, 85 % cloudy, so pairs within 2 days.
TINY_SETTINGS: dict[str, Any] = {
    "max_days": 2.0,
    "patch_size": 32,
    "stride": 16,
    "block_size": 32,
    "min_clear": 0.2,
}


def _f16(a: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(a, np.float32), nan=0.0).astype(np.float16)


def export_pairs(
    world_dir: str | Path,
    out: str | Path,
    *,
    tiny: bool = False,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
    preset: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Write the patches and test baselines of a simulated world to one ``.npz``.

    Parameters
    ----------
    world_dir
        Directory of the simulated world; created with ``WorldConfig()`` (the 5.12 km one-year
        demo world), the world ``preset`` (``harmonize world presets``) with ``seed``, or
        ``WorldConfig.tiny()`` when absent, reused when it holds that world.
    out
        The ``.npz`` to write (float16 arrays, compressed).
    tiny
        Use the tiny world (tests).
    settings
        Overrides of :class:`ExportSettings`.
    progress
        Progress bars.

    Returns
    -------
    dict
        Summary: window counts per split, pairs, times, fitted coefficients, timings.
    """
    from harmonize.world import WorldConfig, create_world
    from harmonize.world.presets import preset_config

    s = ExportSettings(**{**(TINY_SETTINGS if tiny else {}), **(settings or {})})
    t0 = time.perf_counter()
    if preset is None and seed is None:
        config = WorldConfig.tiny() if tiny else WorldConfig()
    else:
        config = preset_config(preset, tiny=tiny, **({} if seed is None else {"seed": seed}))
    world = create_world(world_dir, config, progress=progress)
    sub, pairs, timings = paired_subcube(world, s, progress=progress)
    meta = export_from(sub, pairs, world, out, s)
    meta["timings"] = {
        **{k: round(v, 2) for k, v in timings.items()},
        **meta["timings"],
        "total_s": round(time.perf_counter() - t0, 2),
    }
    return meta


def paired_subcube(world: Any, settings: dict[str, Any], *, progress: bool = False) -> tuple[Any, Any, dict]:
    """Load (``settings["resampling"]``) co-registered, and compute the paired acquisitions of a world.

    Co-registration is one way: a probe measures the shift table and each Landsat scene is loaded
    once on its corrected grid (:func:`harmonize.coregister.load_coregistered`).

    Returns the in-memory cube of the Landsat and Sentinel-2 times that make pairs within
    ``settings["max_days"]``, the pair table, and timings.
    """
    from harmonize.catalog import search
    from harmonize.coregister import load_coregistered
    from harmonize.pairs import match_pairs

    s = settings
    timings: dict[str, float] = {}
    t = time.perf_counter()
    items = search(world.items_path, provider="local", include_pan=True)
    cube = load_coregistered(items, geobox=world.geobox, resampling=s["resampling"])
    timings["coregister_s"] = time.perf_counter() - t

    # only the paired dates are needed: compute those once, in memory
    t = time.perf_counter()
    pairs = match_pairs(cube, max_days=s["max_days"])
    if pairs.empty:
        raise RuntimeError(f"the world has no Landsat/Sentinel-2 pairs within {s['max_days']} days")
    times = np.union1d(pairs["landsat_time"].values, pairs["s2_time"].values)
    sub = cube.isel(time=np.flatnonzero(np.isin(cube["time"].values, times)))
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            sub = sub.compute()
    else:
        sub = sub.compute()
    timings["compute_pairs_s"] = time.perf_counter() - t
    return sub, pairs, timings


def export_from(
    sub: Any, pairs: Any, world: Any, out: str | Path, settings: dict[str, Any]
) -> dict[str, Any]:
    """Index the windows of ``sub`` (see :func:`paired_subcube`) and write the ``.npz``."""
    import xarray as xr

    from harmonize.bandpass import fit_linear_adjustment, hls_adjust
    from harmonize.pairs import PairConfig, PairDataset, build_pair_index
    from pipelines.evaluation.harmonization import train_block_mask

    s = ExportSettings(**settings)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    pcfg = PairConfig(
        max_days=s["max_days"],
        min_clear=s["min_clear"],
        patch_size=s["patch_size"],
        stride=s["stride"],
        block_size=s["block_size"],
        train_fraction=s["train_fraction"],
        val_fraction=s["val_fraction"],
        test_fraction=s["test_fraction"],
        seed=s["seed"],
        sharpen_target=bool(s["sharpen_target"]),
    )
    index = build_pair_index(sub, pcfg, pairs=pairs)
    counts = {k: int(v) for k, v in index["split"].value_counts().items()}
    log.info("pair index: %d pairs, windows %s", len(pairs), counts)
    for split in ("train", "val", "test"):
        if counts.get(split, 0) == 0:
            raise RuntimeError(f"no {split} windows ({counts}); lower min_clear or patch_size")

    # fitted linear bandpass: clear pixels of the training blocks only (no test pixel leaks in)
    ny, nx = sub.sizes["y"], sub.sizes["x"]
    train_mask = xr.DataArray(train_block_mask(index, (ny, nx), s["patch_size"]), dims=("y", "x"))
    fitted = fit_linear_adjustment(sub.assign(clear=sub["clear"] & train_mask), max_days=s["max_days"])
    hls = hls_adjust(sub, to="sentinel-2")
    lin = fitted.apply(sub)

    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        ds = PairDataset(sub, index, split, augment=False, reference=world.truth)
        samples = [ds.load(i) for i in range(len(ds))]
        arrays[f"{split}_input"] = _f16(np.stack([x["input"] for x in samples]))
        arrays[f"{split}_target"] = _f16(np.stack([x["target"] for x in samples]))
        arrays[f"{split}_truth"] = _f16(np.stack([x["reference"] for x in samples]))
        arrays[f"{split}_valid"] = np.stack([x["valid"] for x in samples]).astype(bool)
        arrays[f"{split}_y0"] = ds.rows["y0"].to_numpy(np.int32)
        arrays[f"{split}_x0"] = ds.rows["x0"].to_numpy(np.int32)
        if split == "test":
            for name, cube_b in (("hls", hls), ("fitted", lin)):
                patches = []
                for r in ds.rows.itertuples():
                    ys = slice(int(r.y0), int(r.y0) + int(r.patch_size))
                    xs = slice(int(r.x0), int(r.x0) + int(r.patch_size))
                    w = cube_b.sel(time=r.landsat_time).isel(y=ys, x=xs)
                    patches.append(np.stack([np.asarray(w[b].values, np.float32) for b in BANDS]))
                arrays[f"test_{name}"] = _f16(np.stack(patches))
    timings["patches_s"] = time.perf_counter() - t

    meta = {
        "world": str(world.root),
        "world_config": json.loads(world.config.model_dump_json()),
        "settings": dict(s),
        "pairs": int(len(pairs)),
        "pairs_with_windows": int(index[["landsat_time", "s2_time"]].drop_duplicates().shape[0]),
        "windows": counts,
        "bicubic": f"the test input: Landsat loaded with resampling={s['resampling']!r} and co-registered",
        "fitted_linear": fitted.to_dict(),
        "bands": list(BANDS),
        "input_bands": list(BANDS) + ["pan"],
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(out)
    meta["bytes"] = out.stat().st_size
    return meta


# ---------------------------------------------------------------------------------------------
# train-eval (torch + numpy only)


def _load(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    return arrays, meta


class ArrayPairs:
    """One split of the exported patches as :func:`harmonize.train.fit`'s sample dicts, in memory.

    Parameters
    ----------
    data
        The arrays of the ``.npz`` (``{split}_input``, ``{split}_target``, ``{split}_valid``).
    split
        ``"train"``, ``"val"`` or ``"test"``.
    augment
        Apply a random dihedral transform (flips / 90° rotations, drawn from torch's RNG, which
        ``fit`` seeds per epoch) to each sample.
    length
        Serve this many samples, sample ``i`` being patch ``i % n`` (an epoch of any number of
        batches over the same patches); default: each patch once.
    """

    def __init__(
        self, data: dict[str, np.ndarray], split: str, *, augment: bool = False, length: int | None = None
    ) -> None:
        self.input = data[f"{split}_input"]
        self.target = data[f"{split}_target"]
        self.valid = data[f"{split}_valid"]
        self.n = len(self.input)
        self.augment = augment
        self.length = self.n if length is None else int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        from harmonize.pairs.augment import N_DIHEDRAL, dihedral

        if not 0 <= i < self.length:
            raise IndexError(i)
        j = int(i) % self.n
        arrays = {
            "input": self.input[j].astype(np.float32),
            "target": self.target[j].astype(np.float32),
            "valid": np.asarray(self.valid[j], dtype=bool),
        }
        if self.augment:
            arrays = dihedral(arrays, int(torch.randint(N_DIHEDRAL, (1,)).item()))
        return {k: torch.from_numpy(v) for k, v in arrays.items()}


#: Validations per training run: the budget of steps is cut into this many epochs.
VALIDATIONS = 20


def budget_config(
    preset: str, *, steps: int, batch: int, lr: float, device: str, amp: bool, seed: int,
    variant: str = "L1",
) -> Any:
    """The :class:`harmonize.train.TrainConfig` of the shared budget.

    ``min(steps, VALIDATIONS)`` epochs of ``ceil(steps / epochs)`` batches (so at least ``steps``
    AdamW steps of ``batch`` patches), cosine schedule after a linear warm-up over 5 % of the
    steps, masked L1, no clipping, no early stopping; validation after every epoch chooses the
    weights. Normalisation, figures and the final metrics are left to the caller. ``variant``
    (a key of :data:`VARIANTS`) adds its changes.
    """
    from harmonize.train import TrainConfig

    if variant not in VARIANTS:
        raise click.BadParameter(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    epochs = max(1, min(steps, VALIDATIONS))
    return TrainConfig(
        **VARIANTS[variant],
        model=preset,
        epochs=epochs,
        batch_size=batch,
        max_batches_per_epoch=math.ceil(steps / epochs),
        lr=lr,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_fraction=0.05,
        grad_clip=None,
        device=device,
        amp=amp,
        seed=seed,
        patience=None,
        normalization_samples=0,
        eval_samples=0,
        figures=False,
        keep_checkpoints=1,
    )


def fit_preset(
    preset: str,
    data: dict[str, np.ndarray],
    out: Path,
    *,
    steps: int,
    batch: int = 8,
    lr: float = 1e-3,
    device: str = "cpu",
    amp: bool = True,
    seed: int = 0,
    variant: str = "L1",
) -> tuple[Any, dict[str, Any]]:
    """Train one preset (as ``variant`` of :data:`VARIANTS`) with the shared budget, through ``fit``.

    The model is normalised from every training patch (:func:`harmonize.train.estimate_normalization`),
    trained on randomly flipped/rotated patches, and the weights of the epoch with the lowest
    validation L1 are kept. ``fit`` writes its checkpoints and model package under ``out``.

    Returns
    -------
    tuple
        The best-validation model (on CPU) and a record of the run (parameters, steps, timings,
        best validation L1, one history row per epoch).
    """
    import torch

    from harmonize.model import build_model, count_parameters
    from harmonize.train import estimate_normalization, fit

    cfg = budget_config(preset, steps=steps, batch=batch, lr=lr, device=device, amp=amp, seed=seed,
                        variant=variant)
    per_epoch = int(cfg.max_batches_per_epoch or 1)
    train = ArrayPairs(data, "train", augment=True, length=per_epoch * batch)
    torch.manual_seed(seed)
    model = build_model(preset, **cfg.model_overrides)
    stats = estimate_normalization(ArrayPairs(data, "train"), train.n)
    model.set_normalization(
        stats["input_mean"],
        stats["input_std"],
        output_offset=stats["output_offset"],
        output_scale=stats["output_scale"],
    )
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    result = fit(
        cfg,
        train,
        ArrayPairs(data, "val"),
        out_dir=out,
        model=model,
        progress=False,
        callbacks=[_log_epoch(preset, steps)],
        dataset_summary={"n_train": train.n, "samples_per_epoch": len(train), "experiment": "compare_models"},
    )
    train_s = sum(r["seconds"] for r in result.history)
    record = {
        "preset": preset,
        "variant": variant,
        "parameters": count_parameters(result.model),
        "steps": result.global_step,
        "batch": batch,
        "patch": int(data["train_input"].shape[-1]),
        "train_s": round(train_s, 2),
        "steps_per_s": round(result.global_step / train_s, 2),
        "samples_per_s": round(result.global_step * batch / train_s, 1),
        "best_val_l1": result.best_val_loss,
        "best_step": result.best_epoch * per_epoch,
        "history": [
            {"step": r["step"], "train_l1": r.get("train_l1", r["train_loss"]), "val_l1": r["val_loss"],
             "lr": r["lr"], **{k: r[k] for k in ("train_g_adv", "train_d_loss") if k in r}}
            for r in result.history
        ],
    }
    return result.model, record


def _log_epoch(preset: str, steps: int) -> Any:
    """A ``fit`` callback logging each epoch as steps of the budget."""

    def log_row(row: dict[str, float]) -> None:
        log.info(
            "%s step %d/%d train L1 %.5f val L1 %.5f (%.1f s)",
            preset,
            row["step"],
            steps,
            row["train_loss"],
            row.get("val_loss", float("nan")),
            row["seconds"],
        )

    return log_row


def _predict(model: Any, x: np.ndarray, device: Any, batch: int, amp: Any) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i : i + batch].astype(np.float32)).to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out.append(model(xb).float().cpu().numpy())
    return np.concatenate(out)


def _scores(
    pred: np.ndarray, truth: np.ndarray, valid: np.ndarray, data: dict[str, np.ndarray] | None = None
) -> dict[str, float]:
    """:func:`harmonize.metrics.evaluate`, and with ``data`` the opensr-test style metrics.

    Consistency is against the HLS-adjusted test input (``test_hls``: the bandpass change is
    intended, not an error); correctness against the test input itself (``test_input``).
    """
    from harmonize.metrics import consistency, correctness, evaluate

    p = pred.astype(np.float32)
    out = evaluate(p, truth.astype(np.float32), valid)
    if data is not None:
        low = data["test_input"][:, : len(BANDS)].astype(np.float32)
        cons = consistency(p, data["test_hls"].astype(np.float32), valid)
        out.update({f"cons_{k}": v for k, v in cons.items()})
        out.update(correctness(p, low, truth.astype(np.float32), valid))
    return out


def train_eval(
    data_path: str | Path,
    out: str | Path,
    *,
    presets: Sequence[str] = ("tiny", "base", "paper-5depth"),
    steps: int = 2000,
    batch: int = 8,
    lr: float = 1e-3,
    device: str = "cpu",
    amp: bool = True,
    seed: int = 0,
    save_models: bool = False,
    variants: Sequence[str] = ("L1",),
    imported: bool = False,
) -> dict[str, Any]:
    """Train ``presets`` with one budget and score them and the baselines on the test patches.

    Each preset trains through :func:`fit_preset` (that is :func:`harmonize.train.fit`) once per
    training variant (keys of :data:`VARIANTS`; rows ``UNet <preset>`` for ``L1``, ``UNet
    <preset> <variant>`` otherwise). With ``imported``, rows for a randomly initialised
    Deep-Harmonization UNet imported through :func:`harmonize.model_import.import_model`
    (:func:`imported_rows`). Writes ``compare.json`` and ``compare.md`` under ``out`` after each
    model (a run cut short keeps what it finished); with ``save_models`` also each model package
    (safetensors + MLM item) as ``out/model-<preset>[-<variant>]``.

    Returns
    -------
    dict
        ``methods`` (name -> metrics), ``training`` (preset -> record), ``data`` (export meta).
    """
    data, meta = _load(data_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth = data["test_truth"]
    valid = data["test_valid"] & np.isfinite(truth.astype(np.float32)).all(axis=1)
    result = _baseline_result(data, meta, valid, steps=steps, batch=batch, lr=lr, device=device, amp=amp)
    _write(result, out)
    members: dict[str, dict[str, np.ndarray]] = {}  # test and val predictions, for the ensemble
    for preset in presets:
        for variant in variants:
            key = preset if variant == "L1" else f"{preset} {variant}"
            with tempfile.TemporaryDirectory(prefix=f".train-{preset}-", dir=out) as run_dir:
                model, record = fit_preset(preset, data, Path(run_dir), steps=steps, batch=batch, lr=lr,
                                           device=device, amp=amp, seed=seed, variant=variant)
                if save_models:
                    package = out / f"model-{key.replace(' ', '-')}"
                    shutil.rmtree(package, ignore_errors=True)
                    shutil.move(str(Path(run_dir) / "model"), package)
                    record["package"] = str(package / "mlm.json")
            t = time.perf_counter()
            pred = _predict_test(model, data["test_input"], device=device, batch=batch, amp=amp)
            record["predict_s"] = round(time.perf_counter() - t, 2)
            result["methods"][f"UNet {key}"] = _scores(pred, truth, valid, data)
            members[f"UNet {key}"] = {
                "test": pred[:, : len(BANDS)],
                "val": _predict_test(model, data["val_input"], device=device, batch=batch, amp=amp),
            }
            if float(getattr(model.config, "dropout", 0.0)) > 0:
                result.setdefault("uncertainty", {})[f"UNet {key} MC-dropout"] = _mc_calibration(model, data)
            result["training"][key] = record
            _write(result, out)
            del model
            if device == "cuda":
                import torch

                torch.cuda.empty_cache()
    if len(members) >= 2:
        ensemble = _ensemble_calibration(members, data)
        result.setdefault("uncertainty", {})["ensemble of the trained rows"] = ensemble
        _write(result, out)
    if imported:
        for name, pred in imported_rows(data, out, device=device, batch=batch, seed=seed).items():
            result["methods"][name] = _scores(pred, truth, valid, data)
            _write(result, out)
    return result


def imported_rows(data: dict[str, np.ndarray], out: Path, *, device: str = "cpu", batch: int = 8,
                  seed: int = 0, preset: str = IMPORTED_PRESET) -> dict[str, np.ndarray]:
    """Test predictions of a random-weight Deep-Harmonization UNet, imported as a user would.

    The network's weights are written as a checkpoint in the published key layout (the hub
    wrapper's ``model.`` prefix), imported by :func:`harmonize.model_import.import_model` into a
    package with and without the low-frequency constraint, loaded back and run on the test inputs.
    """
    import torch
    from safetensors.torch import save_file

    from harmonize.deep_harmonization import DH_PRESETS, DeepHarmonizationUNet
    from harmonize.model import load_model_package
    from harmonize.model_import import import_model

    torch.manual_seed(seed)
    net = DeepHarmonizationUNet(DH_PRESETS[preset])
    rows = {}
    with tempfile.TemporaryDirectory(prefix=".import-", dir=out) as tmp:
        ckpt = Path(tmp) / "snapshot" / "model.safetensors"
        ckpt.parent.mkdir()
        weights = {k: v.contiguous() for k, v in net.state_dict().items() if k.startswith("model.")}
        save_file(weights, str(ckpt))
        for lowfreq in (False, True):
            pkg = Path(tmp) / f"pkg-{lowfreq}"
            import_model(ckpt.parent, pkg, preset=preset, lowfreq_constraint=lowfreq)
            model, _ = load_model_package(pkg)
            name = f"DH {preset} (random weights, imported){' + lowfreq' if lowfreq else ''}"
            rows[name] = _predict_test(model, data["test_input"], device=device, batch=batch, amp=False)
            del model
    return rows


def _mc_calibration(model: Any, data: dict[str, np.ndarray], passes: int = 8) -> dict[str, Any]:
    """MC-dropout ±1σ/±2σ coverage on the test windows, before and after a σ scale fitted on val."""
    from harmonize.infer import predict_array

    def mc(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = data[f"{split}_input"].astype(np.float32)
        y = predict_array(x, model, device="cpu", uncertainty="mc_dropout", mc_passes=passes)
        truth = data[f"{split}_truth"].astype(np.float32)
        valid = data[f"{split}_valid"] & np.isfinite(truth).all(axis=1)
        return y[:, : len(BANDS)], y[:, len(BANDS) :], truth, valid

    m, s, t, v = mc("test")
    if not np.any(s[np.broadcast_to(v[:, None], s.shape)] > 0):
        return {"passes": passes, "error": "MC-dropout gave zero spread on every test pixel"}
    return {"passes": passes, **_coverage_record((m, s, t, v), lambda: mc("val"))}


def _coverage_record(test: tuple[np.ndarray, ...], val: Any) -> dict[str, Any]:
    """Coverage of ``(mean, std, truth, valid)`` on the test windows, and after a σ scale fitted
    on ``val()``'s when it is off by more than 5 points."""
    from harmonize.calibration import coverage, fit_scale, needs_recalibration

    m, s, t, v = test
    cov = coverage(m, s, t, v)
    rec: dict[str, Any] = {"test": cov, "recalibrated": needs_recalibration(cov)}
    if rec["recalibrated"]:
        scale = fit_scale(*val())
        rec["scale"] = [float(x) for x in scale]
        rec["test_after"] = coverage(m, s * scale[None, :, None, None], t, v)
    return rec


def _ensemble_calibration(
    preds: dict[str, dict[str, np.ndarray]], data: dict[str, np.ndarray]
) -> dict[str, Any]:
    """±1σ/±2σ coverage of the trained models as one ensemble (mean and population σ)."""

    def split(name: str) -> tuple[np.ndarray, ...]:
        stack = np.stack([p[name] for p in preds.values()])
        truth = data[f"{name}_truth"].astype(np.float32)
        valid = data[f"{name}_valid"] & np.isfinite(truth).all(axis=1)
        return stack.mean(0), stack.std(0), truth, valid

    return {"members": list(preds), **_coverage_record(split("test"), lambda: split("val"))}


def _baseline_result(
    data: dict[str, np.ndarray],
    meta: dict[str, Any],
    valid: np.ndarray,
    *,
    steps: int,
    batch: int,
    lr: float,
    device: str,
    amp: bool,
) -> dict[str, Any]:
    """The result before any model: the budget, the data, and the baselines' scores."""
    import torch

    truth = data["test_truth"]
    baselines = {
        "bicubic": data["test_input"][:, : len(BANDS)],
        "hls": data["test_hls"],
        "fitted": data["test_fitted"],
    }
    methods = {BASELINES[key]: _scores(pred, truth, valid, data) for key, pred in baselines.items()}
    epochs = max(1, min(steps, VALIDATIONS))
    return {
        "device": torch.cuda.get_device_name(0)
        if device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "budget": {
            "steps": epochs * math.ceil(steps / epochs),
            "batch": batch,
            "lr": lr,
            "optimizer": "AdamW(wd=1e-4, none on biases and norms)",
            "schedule": "linear warm-up 5% then cosine to 0",
            "loss": "L1 on valid pixels",
            "augmentation": "random dihedral (flips/90° rotations) per patch",
            "amp": "bf16" if (amp and device == "cuda") else "fp32",
            "selection": f"weights with the lowest validation L1 (checked after each of {epochs} epochs)",
            "trainer": "harmonize.train.fit",
        },
        "data": {
            k: meta[k]
            for k in ("windows", "pairs", "pairs_with_windows", "settings", "fitted_linear", "bicubic")
            if k in meta
        },
        "test_pixels": int(valid.sum()),
        "test_windows": int(len(truth)),
        "methods": methods,
        # not a method: how close the training target itself (Sentinel-2, 20 m nir/swir) is to truth
        "reference": {"Sentinel-2 same day (training target)": _scores(data["test_target"], truth, valid)},
        "training": {},
    }


def _predict_test(model: Any, x: np.ndarray, *, device: str, batch: int, amp: bool) -> np.ndarray:
    """The model's prediction of the test inputs, on ``device`` (bf16 autocast on CUDA with ``amp``)."""
    import torch

    dev = torch.device(device)
    return _predict(model.to(dev), x, dev, batch, torch.bfloat16 if (amp and dev.type == "cuda") else None)


def markdown_tables(result: dict[str, Any]) -> str:
    """The overall table (one row per method) and the per-band table, in Markdown."""
    tr = result.get("training", {})
    head = (
        "| method | params | PSNR (dB) | SSIM | SAM (°) | NRMSE | NDVI r | "
        + " | ".join(f"PSNR {b}" for b in BANDS)
        + " | train s | steps/s |"
    )
    lines = [head, "|" + "---|" * (9 + len(BANDS))]
    rows = {**result["methods"], **{f"*{k}*": v for k, v in result.get("reference", {}).items()}}
    for name, m in rows.items():
        rec = tr.get(name.removeprefix("UNet "), {}) if name.startswith("UNet ") else {}
        params = f"{rec['parameters'] / 1e6:.2f} M" if rec else "-"
        cells = [
            name,
            params,
            f"{m['psnr']:.2f}",
            f"{m['ssim']:.4f}",
            f"{m['sam']:.3f}",
            f"{m['nrmse']:.4f}",
            f"{m['ndvi_r']:.4f}",
            *(f"{m[f'psnr_{b}']:.2f}" for b in BANDS),
            f"{rec['train_s']:.1f}" if rec else "-",
            f"{rec['steps_per_s']:.1f}" if rec else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | 30 m MAE | 30 m pbias % | 30 m SAM (°) | shift (m) | improvement | omission "
        "| hallucination |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result["methods"].items():
        if "cons_reflectance_mae" in m:
            lines.append(
                f"| {name} | {m['cons_reflectance_mae']:.4f} | {m['cons_reflectance_pbias']:.2f} | "
                f"{m['cons_spectral_angle']:.3f} | {m['cons_shift_m']:.1f} | {m['improvement']:.3f} | "
                f"{m['omission']:.3f} | {m['hallucination']:.3f} |"
            )
    unc = result.get("uncertainty", {})
    if unc:
        lines += ["", "| uncertainty (test windows) | ±1σ | ±2σ | σ scale (val) | ±1σ after | ±2σ after |",
                  "|---|---|---|---|---|---|"]
    for name, rec in unc.items():
        if "test" not in rec:
            lines.append(f"| {name} | {rec.get('error', '-')} | | | | |")
            continue
        after = rec.get("test_after", rec["test"])
        scale = f"{np.mean(rec['scale']):.2f}" if "scale" in rec else "1 (not needed)"
        lines.append(f"| {name} | {rec['test']['cov1']:.1%} | {rec['test']['cov2']:.1%} | {scale} | "
                     f"{after['cov1']:.1%} | {after['cov2']:.1%} |")
    lines += [
        "",
        "| method | " + " | ".join(f"{b} PSNR / SSIM / NRMSE" for b in BANDS) + " |",
        "|" + "---|" * (1 + len(BANDS)),
    ]
    for name, m in rows.items():
        cells = [f"{m[f'psnr_{b}']:.2f} / {m[f'ssim_{b}']:.4f} / {m[f'nrmse_{b}']:.4f}" for b in BANDS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(result: dict[str, Any], out: Path) -> None:
    (out / "compare.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out / "compare.md").write_text(markdown_tables(result))


# ---------------------------------------------------------------------------------------------
# CLI


def _section(config: Path | None, name: str) -> dict[str, Any]:
    """The ``name`` mapping of the YAML ``config`` (empty without one)."""
    if config is None:
        return {}
    import yaml

    return dict((yaml.safe_load(config.read_text()) or {}).get(name) or {})


@click.group(cls=ReportingGroup, name="python -m pipelines.experiments.compare_models")
def main() -> None:
    """Harmonization methods side by side on a simulated world's test blocks: export, then train-eval."""


@main.command("export")
@click.option(
    "--world", required=True, type=click.Path(path_type=Path), help="World directory (created if absent)."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The .npz to write.")
@click.option("--tiny", is_flag=True, help="Use the tiny world (tests).")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with an 'export' mapping of ExportSettings.",
)
@click.option("--world-preset", default=None, help="A named world (`harmonize world presets`; default demo).")
@click.option("--seed", type=int, default=None, help="The world's seed (default the preset's).")
def export_command(world: Path, out: Path, tiny: bool, config: Path | None, world_preset: str | None,
                   seed: int | None) -> None:
    """World -> pairs .npz (needs the full geospatial stack)."""
    setup_logging()
    meta = export_pairs(world, out, tiny=tiny, settings=_section(config, "export"), preset=world_preset,
                        seed=seed)
    click.echo(json.dumps(meta, indent=1, default=str))


@main.command("train-eval")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with a 'train_eval' mapping (presets, steps, batch, lr).",
)
@click.option("--presets", help="Comma-separated (default tiny,base,paper-5depth).")
@click.option("--steps", type=int, help="Optimizer steps per preset (default 2000).")
@click.option("--batch", type=int, help="Patches per step (default 8).")
@click.option("--lr", type=float, help="Peak learning rate (default 1e-3).")
@click.option("--device", default="cpu", type=click.Choice(["cpu", "cuda"]), show_default=True)
@click.option("--no-amp", is_flag=True, help="Train in float32 on CUDA too.")
@click.option("--seed", default=0, type=int, show_default=True)
@click.option("--save-models", is_flag=True, help="Write each trained model package to OUT.")
@click.option("--variants", help=f"Comma-separated training variants of {list(VARIANTS)} (default L1).")
@click.option("--imported", is_flag=True,
              help=f"Also score a random-weight {IMPORTED_PRESET} imported through `harmonize model import`.")
def train_eval_command(
    data: Path,
    out: Path,
    config: Path | None,
    presets: str | None,
    steps: int | None,
    batch: int | None,
    lr: float | None,
    device: str,
    no_amp: bool,
    seed: int,
    save_models: bool,
    variants: str | None,
    imported: bool,
) -> None:
    """Train presets and score all methods (torch and numpy only)."""
    setup_logging()
    opts = {"presets": ["tiny", "base", "paper-5depth"], "steps": 2000, "batch": 8, "lr": 1e-3,
            "variants": ["L1"], "imported": False}
    opts.update(_section(config, "train_eval"))
    opts.update({k: v for k, v in (("steps", steps), ("batch", batch), ("lr", lr)) if v is not None})
    if presets:
        opts["presets"] = [p for p in presets.split(",") if p]
    if variants:
        opts["variants"] = [v for v in variants.split(",") if v]
    result = train_eval(
        data,
        out,
        presets=opts["presets"],
        steps=int(opts["steps"]),
        batch=int(opts["batch"]),
        lr=float(opts["lr"]),
        device=device,
        amp=not no_amp,
        seed=seed,
        save_models=save_models,
        variants=opts["variants"],
        imported=imported or bool(opts["imported"]),
    )
    click.echo(markdown_tables(result))
    runs = {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in result["training"].items()}
    click.echo(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
