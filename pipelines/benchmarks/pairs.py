"""Benchmark: patches/s served by :class:`harmonize.pairs.PairDataset` vs training steps/s.

Usage::

    python -m pipelines.benchmarks pairs [--device cpu|cuda|auto] [--patch 128] [--batch 8]
        [--workers 0,2] [--models tiny,base] [--world DIR | --size 1024] [--chunk 512]

The data side builds a pair index and draws shuffled batches through a ``DataLoader`` (each
patch computed from the dask cube), then once more from a Zarr cache of the same patches. The
model side times forward + backward + AdamW steps of :func:`harmonize.model.build_model` presets
on random batches of the same shape. ``headroom`` = patches/s delivered / patches/s a training
step consumes: above 1 the data path keeps up.

The default source is a synthetic dask cube (``--size`` pixels square, chunks ``--chunk``) whose
chunks are generated on read, which measures the dataset's own overhead; ``--world DIR`` uses a
simulated world instead (made there with ``WorldConfig.tiny`` if absent), read from its COGs
through :func:`harmonize.cube.load_cube`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from pipelines.benchmarks.common import options_from_argv, print_document

log = logging.getLogger(__name__)

__all__ = ["synthetic_cube", "world_cube", "loader_rate", "train_rate", "pairs_benchmark", "command", "run"]


def synthetic_cube(size: int, n_pairs: int, chunk: int, seed: int = 0) -> Any:
    """A combined cube like ``load_cube``'s whose chunks are generated when read.

    ``n_pairs`` same-day Landsat/Sentinel-2 pairs 8 days apart; reflectance is smooth random
    fields, ``clear`` is all true except a cloud disc in the first Landsat scene.
    """
    import dask.array as da
    import xarray as xr

    from harmonize.pairs import INPUT_BANDS

    times, sensor = [], []
    for k in range(n_pairs):
        day = pd.Timestamp("2024-06-01") + pd.Timedelta(days=8 * k)
        times += [day + pd.Timedelta(hours=10, minutes=20), day + pd.Timedelta(hours=10, minutes=40)]
        sensor += ["landsat", "sentinel-2"]
    nt = len(times)

    def block(k: int, block_info: Any = None) -> np.ndarray:
        info = block_info[None]
        (t0, t1), (y0, y1), (x0, x1) = info["array-location"]
        shape = (t1 - t0, y1 - y0, x1 - x0)
        if k < 0:  # the clear mask
            yy, xx = np.mgrid[y0:y1, x0:x1]
            cloud = (yy - size // 3) ** 2 + (xx - size // 3) ** 2 < (size // 6) ** 2
            return np.broadcast_to(~cloud if t0 == 0 else np.ones_like(cloud), shape).copy()
        rng = np.random.default_rng([seed, k, *info["chunk-location"]])
        return (0.05 + 0.3 * rng.random(shape, dtype=np.float32)).astype(np.float32)

    chunks = ((1,) * nt, _chunks(size, chunk), _chunks(size, chunk))
    data = {}
    for k, name in enumerate((*INPUT_BANDS, "clear")):
        kk, dtype = (-1, bool) if name == "clear" else (k, np.float32)
        arr = da.map_blocks(block, kk, chunks=chunks, dtype=dtype, meta=np.empty((0, 0, 0), dtype))
        data[name] = (("time", "y", "x"), arr)
    return xr.Dataset(
        data,
        coords={
            "time": pd.DatetimeIndex(times).values,
            "sensor": ("time", np.array(sensor)),
            "y": 5_000_000.0 - 10.0 * np.arange(size) - 5,
            "x": 500_000.0 + 10.0 * np.arange(size) + 5,
        },
    )


def _chunks(n: int, c: int) -> tuple[int, ...]:
    return (c,) * (n // c) + ((n % c,) if n % c else ())


def world_cube(path: str, km: float, chunk: int) -> tuple[Any, dict[str, Any]]:
    """The cube of a simulated world (created in ``path`` when it holds none)."""
    import pystac

    from harmonize.cube import load_cube
    from harmonize.world import WorldConfig, create_world, open_world

    root = Path(path)
    t = time.perf_counter()
    if (root / "world.json").exists():
        world = open_world(root)
    else:
        world = create_world(root, WorldConfig.tiny(size_km=km), progress=False)
    made = time.perf_counter() - t
    items = [pystac.Item.from_dict(d) for d in world.items()]
    cube = load_cube(items, geobox=world.geobox, chunks={"time": 1, "y": chunk, "x": chunk})
    return cube, {"world": str(root), "world_s": round(made, 2), "km": world.config.size_km}


def loader_rate(dataset: Any, batch: int, n_batches: int, workers: int) -> dict[str, float]:
    """Patches/s of a shuffled DataLoader.

    ``patches_per_s`` is the steady state after the first batch; with workers, at least six
    batches per worker are drawn (when the dataset has them) so that batches prefetched while
    the first one was awaited do not inflate it. ``overall_patches_per_s`` includes start-up.
    """
    import torch

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True
    )
    n_batches = min(max(n_batches, 6 * workers), len(dataset) // batch)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    for _ in range(n_batches - 1):
        next(it)
    t2 = time.perf_counter()
    del it
    steady = (n_batches - 1) * batch / (t2 - t1) if n_batches > 1 else float("nan")
    return {
        "first_batch_s": round(t1 - t0, 3),
        "patches_per_s": round(steady, 2),
        "overall_patches_per_s": round(n_batches * batch / (t2 - t0), 2),
        "batches": n_batches,
    }


def train_rate(preset: str, device: str, batch: int, patch: int, steps: int) -> dict[str, Any]:
    """Training steps/s of a model preset on random batches (forward, masked L1, backward, AdamW)."""
    import torch

    from harmonize.model import build_model, count_parameters

    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(preset).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = (0.05 + 0.3 * torch.rand(batch, 7, patch, patch)).to(dev)
    y = (0.05 + 0.3 * torch.rand(batch, 6, patch, patch)).to(dev)
    valid = torch.ones(batch, patch, patch, dtype=torch.bool, device=dev)
    amp = dev.type == "cuda"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        err = (pred.float() - y).abs().mean(1)
        loss = err[valid].mean()
        loss.backward()
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up (cuDNN autotune, allocator)
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t
    return {
        "parameters": count_parameters(model),
        "steps_per_s": round(steps / dt, 3),
        "patches_per_s": round(steps * batch / dt, 2),
        "amp_bf16": amp,
    }


def _source(
    world: str | None, world_km: float, size: int, pairs: int, chunk: int
) -> tuple[Any, dict[str, Any]]:
    """The cube to draw patches from (a world's or a synthetic one) and what it is."""
    t = time.perf_counter()
    if world:
        cube, info = world_cube(world, world_km, chunk)
        source = {"kind": "world", **info, "chunk": chunk}
    else:
        cube = synthetic_cube(size, pairs, chunk)
        source = {"kind": "synthetic", "size": size, "pairs": pairs, "chunk": chunk}
    source["shape"] = dict(cube.sizes)
    source["open_s"] = round(time.perf_counter() - t, 3)
    return cube, source


def _index(cube: Any, patch: int, from_world: bool) -> tuple[Any, dict[str, Any]]:
    """A pair index of every window in the training split, and how long it took."""
    from harmonize.pairs import PairConfig, build_pair_index

    config = PairConfig(
        max_days=0 if not from_world else 2,
        min_clear=0.0,
        patch_size=patch,
        stride=patch // 2,
        block_size=patch,
        train_fraction=1.0,
        val_fraction=0.0,
        test_fraction=0.0,
    )
    t = time.perf_counter()
    index = build_pair_index(cube, config)
    return index, {
        "seconds": round(time.perf_counter() - t, 3),
        "windows": len(index),
        "pairs": int(index[["landsat_time", "s2_time"]].drop_duplicates().shape[0]),
    }


def _data_rates(
    cube: Any, index: Any, batch: int, batches: int, workers: list[int], cache: bool
) -> dict[str, Any]:
    """Patches/s from the dask cube per worker count, then from a Zarr cache of the same patches."""
    from harmonize.pairs import PairDataset, cache_pairs

    dataset = PairDataset(cube, index, "train", augment=True)
    data = {f"workers_{w}": loader_rate(dataset, batch, batches, w) for w in workers}
    if not cache:
        return data
    n = min(len(dataset), batches * batch)
    subset = PairDataset(cube, index.iloc[:n], "train", augment=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cached = cache_pairs(subset, Path(tmp) / "pairs.zarr", progress=False)
        write = time.perf_counter() - t
        data["zarr_cache_write"] = {"patches": n, "patches_per_s": round(n / write, 2)}
        for w in workers:
            data[f"zarr_cache_workers_{w}"] = loader_rate(cached, batch, batches, w)
    return data


def _headroom(data: dict[str, Any], train: dict[str, Any]) -> dict[str, float]:
    """Patches/s delivered over patches/s a training step consumes, per model and data path."""
    headroom = {}
    for preset, tr in train.items():
        if "patches_per_s" not in tr:
            continue
        for name, d in data.items():
            if name == "zarr_cache_write":
                continue
            headroom[f"{preset}/{name}"] = round(d["patches_per_s"] / tr["patches_per_s"], 2)
    return headroom


def pairs_benchmark(
    *,
    device: str = "auto",
    patch: int = 128,
    batch: int = 8,
    batches: int = 12,
    steps: int = 6,
    workers: str = "0,2",
    models: str = "tiny,base",
    size: int = 1024,
    pairs: int = 4,
    chunk: int = 512,
    world: str | None = None,
    world_km: float = 2.56,
    cache: bool = True,
) -> dict[str, Any]:
    """Measure the data path against training.

    Parameters
    ----------
    device
        ``cpu``, ``cuda`` or ``auto`` (cuda when available).
    patch, batch
        Patch side in 10 m pixels, and patches per batch.
    batches, steps
        Batches drawn per data measurement; training steps timed per model.
    workers, models
        Comma-separated DataLoader ``num_workers`` values and model presets.
    size, pairs, chunk
        The synthetic cube's side, same-day pairs and dask chunk side.
    world, world_km
        Use (or create, ``world_km`` wide) a simulated world in this folder instead.
    cache
        Also measure a Zarr cache of the patches.

    Returns
    -------
    dict
        The device, the source, the index, patches/s per data path, training rates per model
        and the headroom of each data path over each model.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, Any] = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "patch": patch,
        "batch": batch,
    }
    cube, out["source"] = _source(world, world_km, size, pairs, chunk)
    index, out["index"] = _index(cube, patch, bool(world))
    worker_counts = [int(w) for w in workers.split(",") if w != ""]
    out["data"] = _data_rates(cube, index, batch, batches, worker_counts, cache)
    out["train"] = {}
    for preset in [m for m in models.split(",") if m]:
        try:
            out["train"][preset] = train_rate(preset, device, batch, patch, steps)
        except ImportError as exc:  # the model module has not landed
            out["train"][preset] = {"error": str(exc)}
    out["headroom"] = _headroom(out["data"], out["train"])
    return out


@click.command(name="pairs")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto (cuda when available).")
@click.option("--patch", type=int, default=128, show_default=True, help="Patch size in 10 m pixels.")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option(
    "--batches", type=int, default=12, show_default=True, help="Batches drawn per data measurement."
)
@click.option("--steps", type=int, default=6, show_default=True, help="Training steps timed per model.")
@click.option(
    "--workers", default="0,2", show_default=True, help="DataLoader num_workers values, comma-separated."
)
@click.option("--models", default="tiny,base", show_default=True, help="Model presets, comma-separated.")
@click.option("--size", type=int, default=1024, show_default=True, help="Synthetic cube side in pixels.")
@click.option("--pairs", type=int, default=4, show_default=True, help="Same-day pairs in the synthetic cube.")
@click.option("--chunk", type=int, default=512, show_default=True, help="dask chunk side of the cube.")
@click.option("--world", default=None, help="Use (or create) a simulated world in this folder.")
@click.option(
    "--world-km", type=float, default=2.56, show_default=True, help="Side of a created world in km."
)
@click.option(
    "--cache/--no-cache", default=True, show_default=True, help="Measure a Zarr cache of the patches."
)
def command(**options: Any) -> None:
    """Patches/s served by the pair dataset against training steps/s."""
    print_document("pairs", pairs_benchmark(**options))


def run(argv: list[str]) -> dict[str, Any]:
    """The figures for the options ``argv`` of ``python -m pipelines.benchmarks pairs``."""
    return pairs_benchmark(**options_from_argv(command, argv))
