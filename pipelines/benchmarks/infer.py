"""Benchmark of chunk-wise inference: throughput against a raw forward pass, and peak memory.

Usage::

    python -m pipelines.benchmarks infer [--models tiny,base] [--size 1024] [--chunk 1024]
        [--memory-sizes 2048,8192] [--memory-model tiny,base] [--memory-regions N]
        [--device cpu|cuda] [--precision bf16|fp16] [--workers N]

Figures
-------
throughput (per model preset)
    Megapixels per second of :func:`harmonize.infer.super_resolve` computed over an in-memory
    single-date cube of ``size``² pixels, against a raw forward pass of the same model over the
    same pixels already in memory (tiles of ``chunk`` pixels, no halo, one at a time or
    ``batch_size`` at a time, whichever is faster); ``ratio`` is
    their quotient by wall time (goal >= 0.8), ``ratio_cpu`` by this process's CPU time (the
    steadier one on a shared machine). The gap is the halo's extra pixels ((chunk + 2 halo)² / chunk²)
    plus dask's overlap copies.
memory (per size, each in its own subprocess)
    Peak resident memory of one process that generates a lazy single-date cube chunk by chunk
    (random reflectance, nothing in memory up front), super-resolves it and streams the result
    into a Zarr store (``--sink zarr``) or discards it (``--sink null``), one region (a row of
    chunks at most two chunks wide) at a time (:func:`harmonize.infer.stripes`;
    ``--all-at-once`` hands dask the whole scene, which lets it read inputs far ahead;
    ``--memory-regions N`` stops after the first N regions). Goal: at most 2 GiB and flat in
    the scene size.

Weights are random (fixed seed): speed and memory do not depend on their values. On CUDA the
GPU utilisation is sampled every 0.1 s during the runs (NVML through ``torch.cuda.utilization``,
else ``nvidia-smi``).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import click
import numpy as np

from pipelines.benchmarks.common import options_from_argv, print_document

__all__ = ["InferOptions", "infer_benchmark", "command", "run"]

INPUTS = ("blue", "green", "red", "nir", "swir16", "swir22", "pan")


@dataclass(frozen=True)
class InferOptions:
    """The benchmark's settings (the command's options).

    Attributes
    ----------
    models
        Comma-separated model presets of the throughput runs.
    size
        Throughput scene size (pixels per side).
    chunk
        Spatial chunk of super_resolve (default 1024 on CPU, 2048 on CUDA).
    tile
        Inner tile (default: whole chunk).
    batch_size
        Tiles per forward pass.
    memory_sizes
        Comma-separated scene sizes of the peak-memory runs (``""`` to skip).
    memory_model
        Comma-separated model presets of the memory runs.
    memory_regions
        Memory runs compute only the first this many regions (:func:`harmonize.infer.stripes`)
        of each scene (0: all). Every region is the same work on the same memory, so the peak
        is reached in the first few; the figure says how many of how many ran.
    sink
        Where memory runs write: ``"zarr"`` or ``"null"``.
    all_at_once
        Memory runs compute the whole scene in one graph instead of stripe by stripe.
    device
        ``cpu`` or ``cuda`` (default: cuda when available).
    precision
        ``tf32`` convolutions or ``bf16``/``fp16`` autocast (default strict float32).
    workers
        dask threads (default 1 on CPU, where torch uses every core, 4 on CUDA).
    torch_threads
        torch intra-op threads on CPU.
    repeat
        Timed repetitions, raw and chunked alternating (the best of each counts). On a shared
        machine two were too few: one run at load 2-3 on 2 cores gave a wall ratio of 0.67 for
        the tiny preset, the next with four 1.05 (CPU 0.96 and 0.98).
    """

    models: str = "tiny,base"
    size: int = 1024
    chunk: int | None = None
    tile: int | None = None
    batch_size: int = 8
    memory_sizes: str = "2048,8192"
    memory_model: str = "tiny"
    memory_regions: int = 0
    sink: str = "zarr"
    all_at_once: bool = False
    device: str | None = None
    precision: str | None = None
    workers: int | None = None
    torch_threads: int | None = None
    repeat: int = 4


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
    model: Any,
    x: np.ndarray,
    chunk: int,
    batch_size: int,
    device: str,
    precision: str | None,
    layers: str = "model",
) -> tuple[float, float]:
    """Wall and CPU seconds for the model over ``x`` [7, H, W] in tiles of ``chunk`` (no halo),
    host to host: its own forward (``layers="model"``) or the layer arithmetic super_resolve
    runs (``"infer"``: :func:`harmonize.infer.tile_forward` over the whole tile)."""
    import torch

    from harmonize.infer import tile_forward

    def forward(xt: Any) -> Any:
        if layers == "model":
            return model(xt)
        if dev.type == "cpu":
            xt = xt.contiguous(memory_format=torch.channels_last)
        return tile_forward(model, xt, (slice(0, xt.shape[-2]), slice(0, xt.shape[-1])))

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
    t0, c0 = time.perf_counter(), time.process_time()
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
                        y = forward(xt).float()
                else:
                    y = forward(xt)
                y = y.cpu().numpy()
                for j, (y0, x0) in enumerate(sel):
                    out[:, y0 : y0 + th, x0 : x0 + tw] = y[j]
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def _throughput(preset: str, opts: InferOptions, device: str, workers: int) -> dict[str, Any]:
    import dask

    from harmonize import infer
    from harmonize.model import save_model_package

    model = _random_model(preset)
    tmp = tempfile.mkdtemp(prefix="bench-infer-")
    try:
        save_model_package(model, tmp, metadata={"name": f"bench-{preset}"})
        cached = infer.load_cached(tmp, device)  # the very module super_resolve will use
        size = opts.size
        x = np.random.default_rng(0).uniform(0.0, 0.4, (len(INPUTS), size, size)).astype("float32")
        mpx = size * size / 1e6
        # warm-up: kernels, allocator, cuDNN autotuning
        _raw_forward(
            cached,
            x[:, : min(size, opts.chunk), : min(size, opts.chunk)],
            opts.chunk,
            1,
            device,
            opts.precision,
        )
        cube = _cube(x, size, opts.chunk)
        sampler = _GpuSampler(device)
        times, raws, cpus, raw_cpus, same, same_cpus = [], [], [], [], [], []
        n_tiles = -(-size // opts.chunk) ** 2
        batchings = sorted({1, opts.batch_size}) if n_tiles > 1 else [1]  # one tile: the same run
        with sampler, dask.config.set(scheduler="threads", num_workers=workers):
            # raw and chunked runs alternate, so a noisy neighbour on the machine hits both alike
            for _ in range(opts.repeat):
                # the raw baseline gets its best batching: one tile at a time or batch_size tiles
                wall, cpu = min(
                    _raw_forward(cached, x, opts.chunk, b, device, opts.precision) for b in batchings
                )
                raws.append(wall)
                raw_cpus.append(cpu)
                wall, cpu = min(
                    _raw_forward(cached, x, opts.chunk, b, device, opts.precision, layers="infer")
                    for b in batchings
                )
                same.append(wall)
                same_cpus.append(cpu)
                t0, c0 = time.perf_counter(), time.process_time()
                out = infer.super_resolve(
                    cube,
                    tmp,
                    chunks=opts.chunk,
                    tile=opts.tile,
                    batch_size=opts.batch_size,
                    device=device,
                    precision=opts.precision,
                )
                out[list(out.data_vars)].compute()
                _sync(device)
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
        sr, raw = min(times), min(raws)
        return {
            "preset": preset,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "halo": int(model.receptive_halo),
            "scene_px": [size, size],
            "chunk": opts.chunk,
            "raw_forward_mpx_s": round(mpx / raw, 4),
            "super_resolve_mpx_s": round(mpx / sr, 4),
            "ratio": round(raw / sr, 3),
            # CPU time of this process (all threads): the steadier figure on a shared machine
            "ratio_cpu": round(min(raw_cpus) / min(cpus), 3),
            # against super_resolve's own layer arithmetic over the same tiles without a halo
            # (cropped layers, 1x1 convolutions before bilinear up-sampling): the cost of the
            # halo and the chunking alone
            "ratio_same_layers": round(min(same) / sr, 3),
            "ratio_same_layers_cpu": round(min(same_cpus) / min(cpus), 3),
            "halo_overhead_bound": round(opts.chunk**2 / (opts.chunk + 2 * model.receptive_halo) ** 2, 3),
            "raw_seconds": round(raw, 2),
            "super_resolve_seconds": round(sr, 2),
            "raw_cpu_seconds": round(min(raw_cpus), 2),
            "same_layers_seconds": round(min(same), 2),
            "same_layers_cpu_seconds": round(min(same_cpus), 2),
            "super_resolve_cpu_seconds": round(min(cpus), 2),
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


def _memory_child(size: int, opts: InferOptions, device: str, workers: int) -> dict[str, Any]:
    """Runs in its own process: peak RSS of super-resolving a lazily generated size² scene."""
    import dask
    import dask.array as da

    from harmonize import infer
    from harmonize.model import save_model_package

    tmp = tempfile.mkdtemp(prefix="bench-infer-mem-")
    try:
        save_model_package(
            _random_model(opts.memory_model), os.path.join(tmp, "model"), metadata={"name": "bench"}
        )
        cube = _cube(None, size, opts.chunk, lazy_seed=0)
        rss_before = _rss_mib()
        sampler = _GpuSampler(device)
        t0 = time.perf_counter()
        with sampler, dask.config.set(scheduler="threads", num_workers=workers):
            out = infer.super_resolve(
                cube,
                os.path.join(tmp, "model"),
                chunks=opts.chunk,
                tile=opts.tile,
                batch_size=opts.batch_size,
                device=device,
                precision=opts.precision,
            )
            all_regions = infer.stripes(out)
            regions = all_regions[: opts.memory_regions] if opts.memory_regions else all_regions
            if opts.sink == "zarr" and (opts.all_at_once or regions is all_regions):
                from harmonize.io import write_zarr_in_stripes

                write_zarr_in_stripes(out, os.path.join(tmp, "out.zarr"), stripes=not opts.all_at_once)
            elif opts.sink == "zarr":  # the first regions only, into a store of the whole scene
                from harmonize.io import write_zarr

                path = os.path.join(tmp, "out.zarr")
                write_zarr(out, path, mode="w-", compute=False)
                for region in regions:
                    write_zarr(out.isel(region), path, region=region)
            else:
                for region in [None] if opts.all_at_once else regions:
                    part = out if region is None else out.isel(region)
                    arrays = [part[v].data for v in part.data_vars]
                    da.store(arrays, [_NullStore() for _ in arrays], lock=False)
            _sync(device)
        seconds = time.perf_counter() - t0
        done_px = (
            size * size
            if opts.all_at_once
            else sum((r["y"].stop - r["y"].start) * (r["x"].stop - r["x"].start) for r in regions)
        )
        peak = _peak_rss_mib()
        result: dict[str, Any] = {
            "scene_px": [size, size],
            "chunk": opts.chunk,
            "model": opts.memory_model,
            "sink": opts.sink,
            "stripes": not opts.all_at_once,
            "regions_computed": 1 if opts.all_at_once else f"{len(regions)} of {len(all_regions)}",
            "seconds": round(seconds, 1),
            "mpx_s": round(done_px / 1e6 / seconds, 4),  # the regions computed
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


def _memory(size: int, opts: InferOptions) -> dict[str, Any]:
    """:func:`_memory_child` in a fresh Python process, so its peak memory is its own."""
    cmd = [sys.executable, "-m", "pipelines.benchmarks.infer", str(size), json.dumps(asdict(opts))]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    if proc.returncode != 0:
        return {"scene_px": [size, size], "error": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _setup(opts: InferOptions) -> tuple[str, int, InferOptions]:
    """The device and dask threads to use, torch set up for them, and the chunk resolved."""
    import torch

    from harmonize.infer import resolve_device

    device = resolve_device(opts.device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
        torch.backends.cudnn.benchmark = True
    elif opts.torch_threads:
        torch.set_num_threads(opts.torch_threads)
    workers = opts.workers or (4 if device.startswith("cuda") else 1)
    if opts.chunk is None:
        from harmonize.infer import DEFAULT_CHUNK

        opts = replace(opts, chunk=DEFAULT_CHUNK["cuda" if device.startswith("cuda") else "cpu"])
    return device, workers, opts


def infer_benchmark(**options: Any) -> dict[str, Any]:
    """Throughput of chunk-wise inference against a raw forward pass, and peak memory.

    Parameters
    ----------
    **options
        :class:`InferOptions` fields.

    Returns
    -------
    dict
        The device and settings, one ``throughput`` entry per model preset and one ``memory``
        entry per scene size (see the module docstring), and the machine's one-minute load
        average before and after (``load_average_1min``).
    """
    import torch

    device, workers, opts = _setup(InferOptions(**options))
    load_before = os.getloadavg()[0]  # a shared machine's load: the figures' context
    result: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "torch_threads": torch.get_num_threads(),
        "dask_workers": workers,
        "precision": opts.precision or "float32",
        "throughput": [],
        "memory": [],
    }
    for preset in [m for m in opts.models.split(",") if m]:
        result["throughput"].append(_throughput(preset, opts, device, workers))
    for preset in [m for m in opts.memory_model.split(",") if m]:
        for size in [int(s) for s in opts.memory_sizes.split(",") if s]:
            result["memory"].append(_memory(size, replace(opts, memory_model=preset)))
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


@click.command(name="infer")
@click.option("--models", default="tiny,base", show_default=True, help="Comma-separated model presets.")
@click.option(
    "--size", type=int, default=1024, show_default=True, help="Throughput scene size (pixels per side)."
)
@click.option(
    "--chunk",
    type=int,
    default=None,
    help="Spatial chunk of super_resolve (default 1024 on CPU, 2048 on CUDA).",
)
@click.option("--tile", type=int, default=None, help="Inner tile (default: whole chunk).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option(
    "--memory-sizes",
    default="2048,8192",
    show_default=True,
    help="Comma-separated scene sizes for the peak-memory runs ('' to skip).",
)
@click.option(
    "--memory-model",
    default="tiny",
    show_default=True,
    help="Comma-separated model presets of the memory runs.",
)
@click.option(
    "--memory-regions",
    type=int,
    default=0,
    show_default=True,
    help="Memory runs compute only the first N regions of each scene (0: all).",
)
@click.option(
    "--sink",
    type=click.Choice(["zarr", "null"]),
    default="zarr",
    show_default=True,
    help="Where memory runs write.",
)
@click.option(
    "--all-at-once",
    is_flag=True,
    help="Memory runs compute the whole scene in one graph instead of stripe by stripe.",
)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option(
    "--precision",
    type=click.Choice(["tf32", "bf16", "fp16"]),
    default=None,
    help="tf32 convolutions or bf16/fp16 autocast on the device (default strict float32).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="dask threads (default 1 on CPU, where torch uses every core, 4 on CUDA).",
)
@click.option("--torch-threads", type=int, default=None, help="torch intra-op threads on CPU.")
@click.option(
    "--repeat",
    type=int,
    default=4,
    show_default=True,
    help="Timed repetitions, raw and chunked alternating (the best of each counts).",
)
def command(**options: Any) -> None:
    """Chunk-wise inference: throughput against a raw forward pass, and peak memory."""
    print_document("infer", infer_benchmark(**options))


def run(argv: list[str]) -> dict[str, Any]:
    """The figures for the options ``argv`` of ``python -m pipelines.benchmarks infer``."""
    return infer_benchmark(**options_from_argv(command, argv))


def _memory_child_main(argv: list[str]) -> None:
    """``python -m pipelines.benchmarks.infer SIZE OPTIONS_JSON``: one memory run, its figures
    printed as one JSON line (what :func:`_memory` reads)."""
    device, workers, opts = _setup(InferOptions(**json.loads(argv[1])))
    print(json.dumps(_memory_child(int(argv[0]), opts, device, workers), default=str))


if __name__ == "__main__":
    _memory_child_main(sys.argv[1:])
