"""Benchmark of chunk-wise inference: throughput against a raw forward pass, and peak memory.

Usage::

    python -m pipelines.benchmarks infer [--models tiny,base] [--size 1024] [--chunk 1024]
        [--memory-sizes 2048,8192] [--device cpu|cuda] [--precision bf16|fp16] [--workers N]

Figures
-------
throughput (per model preset)
    Megapixels per second of :func:`harmonize.infer.super_resolve` computed over an in-memory
    single-date cube of ``size``² pixels, against a raw forward pass of the same model over the
    same pixels already in memory (tiles of ``chunk`` pixels, no halo, one at a time or
    ``batch_size`` at a time, whichever is faster); ``ratio`` is
    their quotient (goal >= 0.8). The gap is the halo's extra pixels ((chunk + 2 halo)² / chunk²)
    plus dask's overlap copies.
memory (per size, each in its own subprocess)
    Peak resident memory of one process that generates a lazy single-date cube chunk by chunk
    (random reflectance, nothing in memory up front), super-resolves it and streams the result
    into a Zarr store (``--sink zarr``) or discards it (``--sink null``), one row of chunks at a
    time (:func:`harmonize.infer.stripes`; ``--all-at-once`` hands dask the whole scene, which
    lets it read inputs far ahead). Goal: at most 2 GiB and roughly flat in the scene size.

Weights are random (fixed seed): speed and memory do not depend on their values. On CUDA the
GPU utilisation is sampled every 0.1 s during the runs (NVML through ``torch.cuda.utilization``,
else ``nvidia-smi``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

INPUTS = ("blue", "green", "red", "nir", "swir16", "swir22", "pan")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.benchmarks infer", description=__doc__.split("\n")[0]
    )
    p.add_argument("--models", default="tiny,base", help="comma-separated model presets")
    p.add_argument("--size", type=int, default=1024, help="throughput scene size (pixels per side)")
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="spatial chunk of super_resolve (default 1024 on CPU, 2048 on CUDA)",
    )
    p.add_argument("--tile", type=int, default=None, help="inner tile (default: whole chunk)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--memory-sizes",
        default="2048,8192",
        help="comma-separated scene sizes for the peak-memory runs ('' to skip)",
    )
    p.add_argument("--memory-model", default="tiny", help="model preset of the memory runs")
    p.add_argument("--sink", choices=("zarr", "null"), default="zarr", help="where memory runs write")
    p.add_argument(
        "--all-at-once",
        action="store_true",
        help="memory runs compute the whole scene in one graph instead of stripe by stripe",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--precision",
        choices=("tf32", "bf16", "fp16"),
        default=None,
        help="tf32 convolutions or bf16/fp16 autocast on the device (default strict float32)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="dask threads (default 1 on CPU, where torch uses every core, 4 on CUDA)",
    )
    p.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads on CPU")
    p.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="timed repetitions, raw and chunked alternating (the best of each counts)",
    )
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    return p


def _random_model(preset: str) -> Any:
    import torch

    from harmonize.model import build_model

    torch.manual_seed(0)
    model = build_model(preset)
    with torch.no_grad():
        for p in model.head.parameters():  # a zero head is skipped by nothing, but be realistic
            p.normal_(0.0, 0.1)
    return model.eval()


def _cube(x: np.ndarray | None, size: int, chunk: int, *, lazy_seed: int | None = None) -> Any:
    """A single-date cube: from ``x`` [7, H, W] in memory, or generated chunk by chunk."""
    import dask.array as da
    import pandas as pd
    import rioxarray  # noqa: F401
    import xarray as xr

    if x is not None:
        bands = [da.from_array(x[i][None], chunks=(1, chunk, chunk)) for i in range(len(INPUTS))]
    else:
        rng = da.random.default_rng(lazy_seed)
        bands = [
            rng.uniform(0.0, 0.4, (1, size, size), chunks=(1, chunk, chunk)).astype("float32") for _ in INPUTS
        ]
    ds = xr.Dataset(
        {b: (("time", "y", "x"), arr) for b, arr in zip(INPUTS, bands, strict=True)},
        coords={
            "time": pd.DatetimeIndex(["2024-06-01T10:00"]),
            "y": 4_000_000 - 5 - 10 * np.arange(size),
            "x": 500_000 + 5 + 10 * np.arange(size),
            "sensor": ("time", ["landsat"]),
        },
    )
    ds["clear"] = (("time", "y", "x"), da.ones((1, size, size), dtype=bool, chunks=(1, chunk, chunk)))
    return ds.rio.write_crs("EPSG:32633")


class _GpuSampler:
    """Samples GPU utilisation (percent) in a background thread while active."""

    def __init__(self, device: str, interval: float = 0.1) -> None:
        self.samples: list[float] = []
        self._on = device.startswith("cuda")
        self._stop = threading.Event()
        self._interval = interval
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        import torch

        try:
            return float(torch.cuda.utilization())
        except Exception:
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                )
                return float(out.stdout.strip().splitlines()[0])
            except Exception:
                return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self._read()
            if v is None:
                return
            self.samples.append(v)
            self._stop.wait(self._interval)

    def __enter__(self) -> _GpuSampler:
        if self._on:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        s = np.asarray(self.samples)
        return {
            "mean_percent": round(float(s.mean()), 1),
            "max_percent": float(s.max()),
            "n_samples": int(s.size),
        }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _raw_forward(
    model: Any, x: np.ndarray, chunk: int, batch_size: int, device: str, precision: str | None
) -> float:
    """Seconds for the model over ``x`` [7, H, W] in tiles of ``chunk`` (no halo), host to host."""
    import torch

    dev = torch.device(device)
    _, h, w = x.shape
    tiles = [(y0, x0) for y0 in range(0, h, chunk) for x0 in range(0, w, chunk)]
    out = np.empty((6, h, w), "float32")
    if dev.type == "cuda":  # the same numerics as super_resolve
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    ctx = (
        torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        if precision in ("bf16", "fp16")
        else None
    )
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tiles), batch_size):
            group = tiles[i : i + batch_size]
            shapes = {(min(chunk, h - y0), min(chunk, w - x0)) for y0, x0 in group}
            for th, tw in shapes:  # one tensor per tile shape, as super_resolve batches
                sel = [(y0, x0) for y0, x0 in group if (min(chunk, h - y0), min(chunk, w - x0)) == (th, tw)]
                batch = np.stack([x[:, y0 : y0 + th, x0 : x0 + tw] for y0, x0 in sel])
                xt = torch.from_numpy(batch).to(dev)
                if ctx is not None:
                    with ctx:
                        y = model(xt).float()
                else:
                    y = model(xt)
                y = y.cpu().numpy()
                for j, (y0, x0) in enumerate(sel):
                    out[:, y0 : y0 + th, x0 : x0 + tw] = y[j]
    _sync(device)
    return time.perf_counter() - t0


def _throughput(preset: str, args: argparse.Namespace, device: str, workers: int) -> dict[str, Any]:
    import dask

    from harmonize import infer
    from harmonize.model import save_model_package

    model = _random_model(preset)
    tmp = tempfile.mkdtemp(prefix="bench-infer-")
    try:
        save_model_package(model, tmp, metadata={"name": f"bench-{preset}"})
        cached = infer.load_cached(tmp, device)  # the very module super_resolve will use
        size = args.size
        x = np.random.default_rng(0).uniform(0.0, 0.4, (len(INPUTS), size, size)).astype("float32")
        mpx = size * size / 1e6
        # warm-up: kernels, allocator, cuDNN autotuning
        _raw_forward(
            cached,
            x[:, : min(size, args.chunk), : min(size, args.chunk)],
            args.chunk,
            1,
            device,
            args.precision,
        )
        cube = _cube(x, size, args.chunk)
        sampler = _GpuSampler(device)
        times, raws = [], []
        with sampler, dask.config.set(scheduler="threads", num_workers=workers):
            # raw and chunked runs alternate, so a noisy neighbour on the machine hits both alike
            for _ in range(args.repeat):
                # the raw baseline gets its best batching: one tile at a time or batch_size tiles
                raws.append(
                    min(
                        _raw_forward(cached, x, args.chunk, b, device, args.precision)
                        for b in sorted({1, args.batch_size})
                    )
                )
                t0 = time.perf_counter()
                out = infer.super_resolve(
                    cube,
                    tmp,
                    chunks=args.chunk,
                    tile=args.tile,
                    batch_size=args.batch_size,
                    device=device,
                    precision=args.precision,
                )
                out[list(out.data_vars)].compute()
                _sync(device)
                times.append(time.perf_counter() - t0)
        sr, raw = min(times), min(raws)
        return {
            "preset": preset,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "halo": int(model.receptive_halo),
            "scene_px": [size, size],
            "chunk": args.chunk,
            "raw_forward_mpx_s": round(mpx / raw, 4),
            "super_resolve_mpx_s": round(mpx / sr, 4),
            "ratio": round(raw / sr, 3),
            "halo_overhead_bound": round(args.chunk**2 / (args.chunk + 2 * model.receptive_halo) ** 2, 3),
            "raw_seconds": round(raw, 2),
            "super_resolve_seconds": round(sr, 2),
            "gpu_utilization": sampler.summary(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _proc_status(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None


def _rss_mib() -> float:
    return _proc_status("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mib() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent across fork and exec, so a child of a big parent would report the parent's peak."""
    return _proc_status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _NullStore:
    """A ``da.store`` target that drops what it is given."""

    def __setitem__(self, key: Any, value: Any) -> None:  # noqa: D105
        pass


def _memory_child(size: int, args: argparse.Namespace, device: str, workers: int) -> dict[str, Any]:
    """Runs in its own process: peak RSS of super-resolving a lazily generated size² scene."""
    import dask
    import dask.array as da

    from harmonize import infer
    from harmonize.model import save_model_package

    tmp = tempfile.mkdtemp(prefix="bench-infer-mem-")
    try:
        save_model_package(
            _random_model(args.memory_model), os.path.join(tmp, "model"), metadata={"name": "bench"}
        )
        cube = _cube(None, size, args.chunk, lazy_seed=0)
        rss_before = _rss_mib()
        sampler = _GpuSampler(device)
        t0 = time.perf_counter()
        with sampler, dask.config.set(scheduler="threads", num_workers=workers):
            out = infer.super_resolve(
                cube,
                os.path.join(tmp, "model"),
                chunks=args.chunk,
                tile=args.tile,
                batch_size=args.batch_size,
                device=device,
                precision=args.precision,
            )
            if args.sink == "zarr":
                from pipelines.infer import write_zarr_in_stripes

                write_zarr_in_stripes(out, os.path.join(tmp, "out.zarr"), stripes=not args.all_at_once)
            else:
                regions = [None] if args.all_at_once else infer.stripes(out)
                for region in regions:
                    part = out if region is None else out.isel(region)
                    arrays = [part[v].data for v in part.data_vars]
                    da.store(arrays, [_NullStore() for _ in arrays], lock=False)
            _sync(device)
        seconds = time.perf_counter() - t0
        peak = _peak_rss_mib()
        result: dict[str, Any] = {
            "scene_px": [size, size],
            "chunk": args.chunk,
            "model": args.memory_model,
            "sink": args.sink,
            "stripes": not args.all_at_once,
            "seconds": round(seconds, 1),
            "mpx_s": round(size * size / 1e6 / seconds, 4),
            "rss_before_compute_mib": round(rss_before, 1),
            "peak_rss_mib": round(peak, 1),
            "gpu_utilization": sampler.summary(),
        }
        if device.startswith("cuda"):
            import torch

            result["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _memory(size: int, argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipelines.benchmarks.infer", *argv, "--memory-child", str(size)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    if proc.returncode != 0:
        return {"scene_px": [size, size], "error": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _setup(args: argparse.Namespace) -> tuple[str, int]:
    import torch

    from harmonize.infer import resolve_device

    device = resolve_device(args.device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
        torch.backends.cudnn.benchmark = True
    elif args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    workers = args.workers or (4 if device.startswith("cuda") else 1)
    if args.chunk is None:
        from harmonize.infer import DEFAULT_CHUNK

        args.chunk = DEFAULT_CHUNK["cuda" if device.startswith("cuda") else "cpu"]
    return device, workers


def run(argv: list[str]) -> dict[str, Any]:
    """Run the benchmark; see the module docstring. Returns a JSON-serialisable dict."""
    args = _parser().parse_args(argv)
    device, workers = _setup(args)
    if args.memory_child is not None:
        return _memory_child(args.memory_child, args, device, workers)
    import torch

    result: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "torch_threads": torch.get_num_threads(),
        "dask_workers": workers,
        "precision": args.precision or "float32",
        "throughput": [],
        "memory": [],
    }
    for preset in [m for m in args.models.split(",") if m]:
        result["throughput"].append(_throughput(preset, args, device, workers))
    child_argv = list(argv)  # the child re-parses the same options (empty values included)
    for size in [int(s) for s in args.memory_sizes.split(",") if s]:
        result["memory"].append(_memory(size, child_argv))
    return result


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:]), default=str))
