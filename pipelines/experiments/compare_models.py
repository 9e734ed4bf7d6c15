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
    Train each model preset on the train patches with the same budget (optimizer steps, batch,
    patch, learning-rate schedule, augmentation; masked L1; AdamW; normalisation from the train
    data), keep the weights with the lowest validation loss, and score every method on the test
    patches against truth (:func:`harmonize.metrics.evaluate`). Writes ``compare.json`` and
    ``compare.md``.

``python -m pipelines.experiments.compare_models export --world DIR --out pairs.npz``
``python -m pipelines.experiments.compare_models train-eval --data pairs.npz --device cuda --steps 4000 --out OUT``

The train-eval path imports only numpy, torch, :mod:`harmonize.model` and
:mod:`harmonize.metrics` (and what they import: pydantic, pystac through ``harmonize/__init__``,
scikit-image for SSIM).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("pipelines.experiments.compare_models")  # not __main__ under python -m

__all__ = [
    "ExportSettings",
    "export_pairs",
    "paired_subcube",
    "export_from",
    "train_eval",
    "markdown_tables",
    "main",
]

BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir16", "swir22")
BASELINES: dict[str, str] = {
    "bicubic": "Landsat bicubic",
    "hls": "bicubic + HLS bandpass",
    "fitted": "bicubic + fitted linear bandpass",
}


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
) -> dict[str, Any]:
    """Write the patches and test baselines of a simulated world to one ``.npz``.

    Parameters
    ----------
    world_dir
        Directory of the simulated world; created with ``WorldConfig()`` (the 5.12 km one-year
        demo world) or ``WorldConfig.tiny()`` when absent, reused when it holds that world.
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

    s = ExportSettings(**{**(TINY_SETTINGS if tiny else {}), **(settings or {})})
    t0 = time.perf_counter()
    world = create_world(world_dir, WorldConfig.tiny() if tiny else WorldConfig(), progress=progress)
    sub, pairs, timings = paired_subcube(world, s, progress=progress)
    meta = export_from(sub, pairs, world, out, s)
    meta["timings"] = {
        **{k: round(v, 2) for k, v in timings.items()},
        **meta["timings"],
        "total_s": round(time.perf_counter() - t0, 2),
    }
    return meta


def paired_subcube(world: Any, settings: dict[str, Any], *, progress: bool = False) -> tuple[Any, Any, dict]:
    """Load (``settings["resampling"]``), co-register and compute the paired acquisitions of a world.

    Returns the in-memory cube of the Landsat and Sentinel-2 times that make pairs within
    ``settings["max_days"]``, the pair table, and timings.
    """
    from harmonize.catalog import search
    from harmonize.coregister import coregister
    from harmonize.cube import load_cube
    from harmonize.pairs import match_pairs

    s = settings
    timings: dict[str, float] = {}
    t = time.perf_counter()
    items = search(world.items_path, provider="local", include_pan=True)
    cube = load_cube(items, geobox=world.geobox, resampling=s["resampling"])
    cube = coregister(cube)
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
    from pipelines.evaluation.scores import train_block_mask

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
        ds = PairDataset(sub, index, split, augment=False, truth=world.truth)
        samples = [ds.load(i) for i in range(len(ds))]
        arrays[f"{split}_input"] = _f16(np.stack([x["input"] for x in samples]))
        arrays[f"{split}_target"] = _f16(np.stack([x["target"] for x in samples]))
        arrays[f"{split}_truth"] = _f16(np.stack([x["truth"] for x in samples]))
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


def _dihedral(x: Any, op: int) -> Any:
    import torch

    if op & 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, op & 3, dims=(-2, -1))


def _masked_l1(pred: Any, target: Any, valid: Any) -> Any:
    w = valid.unsqueeze(1).to(pred.dtype)
    return ((pred - target).abs() * w).sum() / (w.sum() * pred.shape[1]).clamp_min(1.0)


def _normalization(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """Per-band input mean/std and residual (target - input) mean/std over valid train pixels."""
    m = valid[:, None].repeat(x.shape[1], 1)
    xs = np.moveaxis(x.astype(np.float32), 1, 0)[np.moveaxis(m, 1, 0)].reshape(x.shape[1], -1)
    r = y.astype(np.float32) - x[:, : y.shape[1]].astype(np.float32)
    rs = np.moveaxis(r, 1, 0)[np.moveaxis(m[:, : y.shape[1]], 1, 0)].reshape(y.shape[1], -1)
    return {
        "input_mean": xs.mean(1),
        "input_std": xs.std(1),
        "output_offset": rs.mean(1),
        "output_scale": rs.std(1),
    }


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


def train_preset(
    preset: str,
    data: dict[str, np.ndarray],
    *,
    steps: int,
    batch: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup: float = 0.05,
    val_every: int | None = None,
    device: str = "cpu",
    amp: bool = True,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Train one preset with the shared budget; returns the best-validation model and a record.

    The budget is identical for every preset: ``steps`` AdamW steps of ``batch`` patches drawn
    with replacement, a random dihedral transform per patch, one-cycle learning rate (linear
    warm-up over ``warmup`` of the steps, cosine decay to 0), masked L1 on the valid pixels.
    """
    import torch

    from harmonize.model import build_model, count_parameters

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    amp_dtype = torch.bfloat16 if (amp and dev.type == "cuda") else None
    x = torch.from_numpy(data["train_input"].astype(np.float32)).to(dev)
    y = torch.from_numpy(data["train_target"].astype(np.float32)).to(dev)
    v = torch.from_numpy(data["train_valid"]).to(dev)
    xv = torch.from_numpy(data["val_input"].astype(np.float32)).to(dev)
    yv = torch.from_numpy(data["val_target"].astype(np.float32)).to(dev)
    vv = torch.from_numpy(data["val_valid"]).to(dev)

    model = build_model(preset)
    model.set_normalization(**_normalization(data["train_input"], data["train_target"], data["train_valid"]))
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_warm = max(1, int(warmup * steps))

    def lr_at(k: int) -> float:
        if k < n_warm:
            return (k + 1) / n_warm
        return 0.5 * (1 + math.cos(math.pi * (k - n_warm) / max(1, steps - n_warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    val_every = val_every or max(1, steps // 20)

    def val_loss() -> float:
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(xv), batch):
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    p = model(xv[i : i + batch]).float()
                tot += float(_masked_l1(p, yv[i : i + batch], vv[i : i + batch])) * len(p)
                n += len(p)
        model.train()
        return tot / n

    best = (math.inf, -1, None)
    history: list[dict[str, float]] = []
    model.train()
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    t_train = 0.0
    running = 0.0
    for k in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), batch)).to(dev)
        ops = rng.integers(0, 8, batch)
        xb = torch.stack([_dihedral(x[i], int(o)) for i, o in zip(idx, ops, strict=True)])
        yb = torch.stack([_dihedral(y[i], int(o)) for i, o in zip(idx, ops, strict=True)])
        vb = torch.stack([_dihedral(v[i], int(o)) for i, o in zip(idx, ops, strict=True)])
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(xb).float()
        loss = _masked_l1(pred, yb, vb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach()) if (k + 1) % val_every == 0 else 0.0
        if (k + 1) % val_every == 0 or k + 1 == steps:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t_train += time.perf_counter() - t0
            vl = val_loss()
            history.append(
                {"step": k + 1, "train_l1": float(loss.detach()), "val_l1": vl, "lr": sched.get_last_lr()[0]}
            )
            if vl < best[0]:
                best = (vl, k + 1, {n: t.detach().clone() for n, t in model.state_dict().items()})
            log.info(
                "%s step %d/%d train L1 %.5f val L1 %.5f (%.1f steps/s)",
                preset,
                k + 1,
                steps,
                float(loss.detach()),
                vl,
                (k + 1) / max(t_train, 1e-9),
            )
            t0 = time.perf_counter()
    model.load_state_dict(best[2])
    record = {
        "preset": preset,
        "parameters": count_parameters(model),
        "steps": steps,
        "batch": batch,
        "patch": int(x.shape[-1]),
        "train_s": round(t_train, 2),
        "steps_per_s": round(steps / t_train, 2),
        "samples_per_s": round(steps * batch / t_train, 1),
        "best_val_l1": best[0],
        "best_step": best[1],
        "history": history,
    }
    return model, record


def _scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    from harmonize.metrics import evaluate

    return evaluate(pred.astype(np.float32), truth.astype(np.float32), valid)


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
) -> dict[str, Any]:
    """Train ``presets`` with one budget and score them and the baselines on the test patches.

    Writes ``compare.json`` and ``compare.md`` under ``out`` after each preset (a run cut short
    keeps what it finished); with ``save_models`` also each model package (safetensors + MLM
    item) as ``out/model-<preset>``.

    Returns
    -------
    dict
        ``methods`` (name -> metrics), ``training`` (preset -> record), ``data`` (export meta).
    """
    import torch

    data, meta = _load(data_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth, valid = data["test_truth"], data["test_valid"]
    valid = valid & np.isfinite(truth.astype(np.float32)).all(axis=1)
    methods: dict[str, dict[str, float]] = {}
    baselines = {
        "bicubic": data["test_input"][:, : len(BANDS)],
        "hls": data["test_hls"],
        "fitted": data["test_fitted"],
    }
    for key, pred in baselines.items():
        methods[BASELINES[key]] = _scores(pred, truth, valid)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0)
        if device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "budget": {
            "steps": steps,
            "batch": batch,
            "lr": lr,
            "optimizer": "AdamW(wd=1e-4)",
            "schedule": "linear warm-up 5% then cosine to 0",
            "loss": "L1 on valid pixels",
            "augmentation": "random dihedral (flips/90° rotations) per patch",
            "amp": "bf16" if (amp and device == "cuda") else "fp32",
            "selection": "weights with the lowest validation L1 (checked every steps/20)",
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
    _write(result, out)
    for preset in presets:
        model, record = train_preset(
            preset, data, steps=steps, batch=batch, lr=lr, device=device, amp=amp, seed=seed
        )
        t = time.perf_counter()
        pred = _predict(
            model,
            data["test_input"],
            torch.device(device),
            batch,
            torch.bfloat16 if (amp and device == "cuda") else None,
        )
        record["predict_s"] = round(time.perf_counter() - t, 2)
        methods[f"UNet {preset}"] = _scores(pred, truth, valid)
        if save_models:
            from harmonize.model import save_model_package

            meta_doc = {"name": f"compare-{preset}", "steps": steps, "batch": batch}
            record["package"] = str(
                save_model_package(model.cpu(), out / f"model-{preset}", metadata=meta_doc)
            )
        result["training"][preset] = record
        _write(result, out)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return result


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


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.experiments.compare_models {export,train-eval} ...``."""
    p = argparse.ArgumentParser(prog="python -m pipelines.experiments.compare_models", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="world -> pairs .npz (needs the full stack)")
    e.add_argument("--world", required=True, type=Path, help="world directory (created if absent)")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--tiny", action="store_true")
    e.add_argument("--config", type=Path, help="YAML with an 'export' mapping of ExportSettings")
    t = sub.add_parser("train-eval", help="train presets and score all methods (torch only)")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--config", type=Path, help="YAML with a 'train_eval' mapping (presets, steps, batch, lr)")
    t.add_argument("--presets", help="comma-separated (default tiny,base,paper-5depth)")
    t.add_argument("--steps", type=int, help="optimizer steps per preset (default 2000)")
    t.add_argument("--batch", type=int, help="patches per step (default 8)")
    t.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    t.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    t.add_argument("--no-amp", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-models", action="store_true", help="write each trained model package to OUT")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for name in ("harmonize", "pipelines"):
        logging.getLogger(name).setLevel(logging.INFO)
    section = "export" if args.cmd == "export" else "train_eval"
    settings: dict[str, Any] = {}
    if args.config:
        import yaml  # only with --config: the device machine may lack it

        settings = dict((yaml.safe_load(args.config.read_text()) or {}).get(section) or {})
    if args.cmd == "export":
        meta = export_pairs(args.world, args.out, tiny=args.tiny, settings=settings)
        print(json.dumps(meta, indent=1, default=str))
        return 0
    opts = {
        **{"presets": ["tiny", "base", "paper-5depth"], "steps": 2000, "batch": 8, "lr": 1e-3},
        **settings,
    }
    for key in ("steps", "batch", "lr"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    if args.presets:
        opts["presets"] = [s for s in args.presets.split(",") if s]
    result = train_eval(
        args.data,
        args.out,
        presets=opts["presets"],
        steps=int(opts["steps"]),
        batch=int(opts["batch"]),
        lr=float(opts["lr"]),
        device=args.device,
        amp=not args.no_amp,
        seed=args.seed,
        save_models=args.save_models,
    )
    print(markdown_tables(result))
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in result["training"].items()},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
