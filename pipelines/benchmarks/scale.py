"""Benchmark: the demo's stages on worlds of growing size, each stage in its own process.

Usage::

    python -m pipelines.benchmarks scale [--sizes 5.12,10.24,20.48,40.96] [--start 2023-06-01]
                                        [--end 2023-06-28] [--preset demo] [--train-steps 20]
                                        [--out DIR] [--keep] [--stage-timeout S]

For each world size it simulates a world over a short date range (a few Sentinel-2 and Landsat
scenes: a 40.96 km year is out of reach of a 2-core machine) and runs world creation, ingest,
pairs, a short fixed training, inference and the time series exactly as ``harmonize demo`` does
(:mod:`pipelines.demo.run`: the same stage configs, ``threads`` scheduler). Every stage runs in
a fresh child process (forked from the benchmark with the stage code imported) so its figures
are its own: wall seconds, CPU seconds (the process and the processes it waited for), peak RSS
(``ru_maxrss``, which Linux starts afresh at the fork) and the RSS when the stage started. The
document gives, per size, the scene counts, pixels and disk use, and per stage the CPU seconds
per megapixel and per megapixel-scene (the scenes that stage works on), so sizes compare at a
glance; ``memory`` puts every stage's peak RSS side by side across sizes (flat or not).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from harmonize.errors import HarmonizeError
from pipelines.benchmarks.common import options_from_argv, print_document

__all__ = ["STAGES", "scale_benchmark", "command", "run"]

#: The stages measured, in the demo's order.
STAGES: tuple[str, ...] = ("world", "ingest", "pairs", "train", "infer", "timeseries")

#: The scenes each stage works on (its per megapixel-scene cost divides by their count):
#: ingest reads every Level-2 item and the Level-1 pan scenes; inference runs the Landsat dates;
#: the world and the time series go over every acquisition (time step).
_SCENES_OF: dict[str, str] = {
    "world": "steps",
    "ingest": "items",
    "infer": "landsat",
    "timeseries": "steps",
}


def _worlds_below(size_km: float) -> bool:
    """Whether a world is small enough for the tiny world's patch settings (the demo's 64-px
    patches in 128-px blocks leave too few blocks to split below 2.56 km)."""
    return size_km < 2.56


def _stage_settings(size_km: float, train_steps: int, train_seconds: float) -> dict[str, Any]:
    """The pairs, train and time-series settings of the demo for a world of ``size_km``, with a
    fixed, short training (``train_steps`` batches, one epoch per 10 batches)."""
    from pipelines.demo.run import DEMO_PAIRS, DEMO_TRAIN, TINY_PAIRS

    per_epoch = min(10, train_steps)
    epochs = max(1, round(train_steps / per_epoch))
    pairs = dict(TINY_PAIRS if _worlds_below(size_km) else DEMO_PAIRS)
    # a short date range holds few same-day pairs; a week apart still gives patches to train on
    pairs["max_days"] = 8
    train = {
        **DEMO_TRAIN,
        "epochs": epochs,
        "max_batches_per_epoch": per_epoch,
        "patience": None,
        "device": "cpu",
    }
    return {"pairs": pairs, "train": train, "train_seconds": train_seconds, "timeseries": {}}


# -- the child: one stage in its own process ---------------------------------------------------


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


class _TreeSampler:
    """The largest RSS of this process and all its descendants together, sampled every 0.2 s
    (the stage's own peak is exact from ``ru_maxrss``; this adds servers and helper processes)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 1e6)
            self._stop.wait(self._interval)

    def __enter__(self) -> _TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _summary(report: Any) -> dict[str, Any]:
    """The scalar fields of a stage's report (counts, seconds), small enough for the document."""
    if not isinstance(report, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in report.items():
        if isinstance(value, bool | int | float | str) and len(str(value)) < 200:
            out[key] = value
        elif isinstance(value, list | tuple):
            out[f"n_{key}"] = len(value)
    return out


def _run_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one stage of the demo on ``spec["root"]`` the way :func:`pipelines.demo.run.run_demo`
    does, and return its report."""
    from harmonize.world import create_world, open_world
    from harmonize.world.server import serve
    from pipelines.demo.paths import demo_paths
    from pipelines.demo.run import stages_after_ingest, world_config
    from pipelines.stages.ingest import IngestConfig, ingest

    paths = demo_paths(Path(spec["root"]))
    common = {"scheduler": spec["scheduler"], "progress": False}
    stage = spec["stage"]
    if stage == "world":
        cfg = world_config(size_km=spec["size_km"], tiny=False, world=spec["world"], preset=spec["preset"])
        w = create_world(paths["world"], cfg, progress=False, overwrite=True)
        return {"scenes": len(w.scenes)}
    w = open_world(paths["world"])
    if stage == "ingest":
        with serve(w) as server:
            return ingest(IngestConfig(source=server.url, out=paths["cube"], chunk=256, **common))
    s = spec["settings"]
    later = dict(
        stages_after_ingest(
            paths,
            w.truth_path,
            common,
            pairs=s["pairs"],
            train=s["train"],
            train_seconds=s["train_seconds"],
            timeseries=s["timeseries"],
        )
    )
    return later[stage]()


def _fresh_dask_threads() -> None:
    """Forget the thread pools dask's threaded scheduler had in the parent.

    A forked child inherits the pool objects but none of their threads, so the first
    ``compute`` would wait forever on a queue no thread serves (seen in the full test suite,
    where earlier tests had used dask's threads before this process forked).
    """
    import threading

    import dask.threaded

    dask.threaded.default_pool = None
    dask.threaded.pools.clear()
    dask.threaded.pools_lock = threading.Lock()
    dask.threaded.main_thread = threading.current_thread()


def _child(spec: dict[str, Any], conn: Any) -> None:
    """One stage, measured, in a forked process: its figures (or its error) go back on ``conn``."""
    try:
        _fresh_dask_threads()
        baseline = _rss_mb()
        w0, c0 = time.perf_counter(), _cpu_seconds()
        with _TreeSampler() as tree:
            report = _run_stage(spec)
        wall, cpu = time.perf_counter() - w0, _cpu_seconds() - c0
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e3
        doc = {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "rss_peak_mb": round(own, 1),
            "rss_at_start_mb": round(baseline, 1),
            "rss_tree_peak_mb": round(max(tree.peak_mb, own), 1),
            "rss_children_peak_mb": round(kids, 1),
            "report": _summary(report),
        }
    except BaseException as exc:  # the parent reports it and stops this size
        doc = {"error": f"{type(exc).__name__}: {exc}"[-1500:]}
    conn.send(json.dumps(doc, default=str))
    conn.close()


def _spawn_stage(spec: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """Run one stage in a process forked from this one (the stage code already imported, so the
    child starts in milliseconds; Linux starts its ``ru_maxrss`` afresh at the fork)."""
    import multiprocessing

    import harmonize.world.server  # noqa: F401  (imported once here, not in every child)
    import pipelines.demo.run  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(spec, child_end), daemon=False)
    t0 = time.perf_counter()
    proc.start()
    child_end.close()
    try:
        if not parent_end.poll(timeout):
            return {
                "error": f"timed out after {timeout} s",
                "killed_after_s": round(time.perf_counter() - t0, 1),
            }
        doc = json.loads(parent_end.recv())
    except EOFError:
        proc.join()
        return {"error": f"the stage's process died (exit status {proc.exitcode})"}
    finally:
        if proc.is_alive():
            proc.join(5 if timeout is None else 30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent_end.close()
    return doc


# -- the parent: worlds of each size, stage by stage ----------------------------------------------


def _disk_mb(root: Path) -> float:
    if not root.exists():
        return 0.0
    return round(sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6, 1)


def _scene_counts(world_root: Path) -> dict[str, int]:
    from harmonize.world import open_world

    w = open_world(world_root)
    s2 = sum(s["sensor"] == "sentinel-2" for s in w.scenes)
    landsat = sum(s["sensor"] == "landsat" for s in w.scenes)
    l1 = sum(s["l1_id"] is not None for s in w.scenes)
    return {
        "sentinel-2": s2,
        "landsat": landsat,
        "landsat_l1_pan": l1,
        "items": s2 + landsat + l1,
        "steps": s2 + landsat,
    }


def _per_unit(stages: dict[str, dict[str, Any]], mpx: float, counts: dict[str, int]) -> None:
    """Add CPU and wall seconds per megapixel (and per megapixel-scene) to each measured stage."""
    for name, fig in stages.items():
        if "cpu_s" not in fig:
            continue
        fig["cpu_s_per_mpx"] = round(fig["cpu_s"] / mpx, 3)
        unit = _SCENES_OF.get(name)
        if unit and counts.get(unit):
            fig["scenes"] = f"{counts[unit]} {unit}"
            fig["cpu_s_per_mpx_scene"] = round(fig["cpu_s"] / (mpx * counts[unit]), 3)
            fig["wall_s_per_mpx_scene"] = round(fig["wall_s"] / (mpx * counts[unit]), 3)


def _one_size(
    root: Path,
    size_km: float,
    *,
    start: str,
    end: str,
    seed: int,
    preset: str,
    settings: dict[str, Any],
    scheduler: str,
    stage_timeout: float | None,
    stages: Sequence[str],
) -> dict[str, Any]:
    """All stages on one world of ``size_km``; stops at the first stage that fails."""
    px = int(round(size_km * 100))
    mpx = px * px / 1e6
    base = {
        "root": str(root),
        "size_km": size_km,
        "preset": preset,
        "world": {"start": start, "end": end, "seed": seed},
        "settings": settings,
        "scheduler": scheduler,
    }
    figures: dict[str, dict[str, Any]] = {}
    for stage in stages:
        figures[stage] = _spawn_stage({**base, "stage": stage}, stage_timeout)
        # one line per stage as it ends, so a run stopped part-way still leaves its figures
        line = {"size_km": size_km, "stage": stage, **figures[stage]}
        print(json.dumps(line, default=str), file=sys.stderr, flush=True)
        if "error" in figures[stage]:
            break
    counts = _scene_counts(root / "world") if (root / "world" / "world.json").exists() else {}
    _per_unit(figures, mpx, counts)
    measured = [f for f in figures.values() if "cpu_s" in f]
    return {
        "size_km": size_km,
        "pixels": f"{px}x{px}",
        "mpx": round(mpx, 3),
        "scenes": counts,
        "stages": figures,
        "total": {
            "wall_s": round(sum(f["wall_s"] for f in measured), 2),
            "cpu_s": round(sum(f["cpu_s"] for f in measured), 2),
        },
        "disk_mb": {
            part: _disk_mb(root / part)
            for part in ("world", "cube", "pairs", "model", "harmonized", "timeseries")
        },
        "complete": len(measured) == len(stages),
    }


def _memory_table(sizes: list[dict[str, Any]], stages: Sequence[str]) -> dict[str, Any]:
    """Per stage: peak RSS (MB) at each size and the largest over the smallest (1.0 = flat)."""
    table: dict[str, Any] = {}
    for stage in stages:
        peaks = {
            str(s["size_km"]): s["stages"][stage]["rss_peak_mb"]
            for s in sizes
            if "rss_peak_mb" in s["stages"].get(stage, {})
        }
        if peaks:
            values = list(peaks.values())
            table[stage] = {"rss_peak_mb": peaks, "largest_over_smallest": round(values[-1] / values[0], 2)}
    return table


def _marginal(sizes: list[dict[str, Any]], stages: Sequence[str]) -> dict[str, Any]:
    """Per stage, what each step up in size added: CPU seconds per added megapixel-scene (the
    fixed costs cancel; what a larger area costs) and peak RSS (MB) per added megapixel (0 = flat)."""
    table: dict[str, Any] = {}
    for stage in stages:
        steps = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            fa, fb = a["stages"].get(stage, {}), b["stages"].get(stage, {})
            if "cpu_s" not in fa or "cpu_s" not in fb or b["mpx"] <= a["mpx"]:
                continue
            step: dict[str, Any] = {"from_km": a["size_km"], "to_km": b["size_km"]}
            unit = _SCENES_OF.get(stage)
            n = a["scenes"].get(unit) if unit else None
            if n and n == b["scenes"].get(unit):
                step["cpu_s_per_mpx_scene"] = round(
                    (fb["cpu_s"] - fa["cpu_s"]) / ((b["mpx"] - a["mpx"]) * n), 3
                )
            step["cpu_s_per_mpx"] = round((fb["cpu_s"] - fa["cpu_s"]) / (b["mpx"] - a["mpx"]), 3)
            step["rss_mb_per_mpx"] = round((fb["rss_peak_mb"] - fa["rss_peak_mb"]) / (b["mpx"] - a["mpx"]), 1)
            steps.append(step)
        if steps:
            table[stage] = steps
    return table


def scale_benchmark(
    *,
    sizes: Sequence[float] = (5.12, 10.24, 20.48, 40.96),
    start: str = "2023-06-01",
    end: str = "2023-06-28",
    seed: int = 0,
    preset: str = "demo",
    train_steps: int = 20,
    train_seconds: float = 300.0,
    scheduler: str = "threads",
    stage_timeout: float | None = None,
    out: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Run the demo's stages on worlds of each size in ``sizes``, each stage in its own process.

    Parameters
    ----------
    sizes
        World sides in km, smallest first (at most 40.96, the simulator's largest).
    start, end
        The worlds' date range (short: a few scenes of each sensor).
    seed, preset
        The world (:func:`harmonize.world.presets.preset_names`).
    train_steps
        Training batches (fixed: the cost of training does not grow with the area).
    train_seconds
        Training wall-time cap.
    scheduler
        dask scheduler of every stage (the demo's ``threads`` by default).
    stage_timeout
        Seconds after which a stage's process is killed and the size reported incomplete.
    out
        Where the worlds go (default: a temporary directory); each size's folder is deleted
        once measured unless ``keep``.
    keep
        Keep every size's folder (its path is reported).

    Returns
    -------
    dict
        ``sizes``: per size the pixels, scene counts, disk use, and per stage ``wall_s``,
        ``cpu_s``, ``rss_peak_mb``, ``rss_at_start_mb``, ``rss_tree_peak_mb``, the costs per
        megapixel(-scene) and the stage's report summary; ``memory``: peak RSS per stage across sizes;
        ``marginal``: per stage, the CPU seconds and peak RSS each step up in size added.

    Raises
    ------
    HarmonizeError
        If ``sizes`` is empty or not in increasing order.
    """
    sizes = [float(s) for s in sizes]
    if not sizes or sizes != sorted(sizes):
        raise HarmonizeError(f"sizes {sizes} must be one or more world sides in km, smallest first")
    tmp = None
    if out is None:
        tmp = tempfile.mkdtemp(prefix="harmonize-scale-")
        out = Path(tmp)
    out = Path(out).absolute()
    results = []
    try:
        for size_km in sizes:
            root = out / f"world-{size_km:g}km"
            settings = _stage_settings(size_km, train_steps, train_seconds)
            t0 = time.perf_counter()
            fig = _one_size(
                root,
                size_km,
                start=start,
                end=end,
                seed=seed,
                preset=preset,
                settings=settings,
                scheduler=scheduler,
                stage_timeout=stage_timeout,
                stages=STAGES,
            )
            fig["elapsed_s"] = round(time.perf_counter() - t0, 1)
            fig["path"] = str(root) if keep else None
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
            results.append(fig)
            print(
                json.dumps({"size_km": size_km, "total": fig["total"], "complete": fig["complete"]}),
                file=sys.stderr,
            )
    finally:
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "config": {
            "start": start,
            "end": end,
            "seed": seed,
            "preset": preset,
            "train_steps": train_steps,
            "scheduler": scheduler,
            "nice": os.nice(0),
        },
        "sizes": results,
        "memory": _memory_table(results, STAGES),
        "marginal": _marginal(results, STAGES),
    }


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give world sides in km, comma-separated (5.12,10.24)") from None


@click.command(name="scale")
@click.option(
    "--sizes",
    default="5.12,10.24,20.48,40.96",
    show_default=True,
    callback=_sizes,
    help="World sides in km, comma-separated, smallest first.",
)
@click.option("--start", default="2023-06-01", show_default=True)
@click.option("--end", default="2023-06-28", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--preset", default="demo", show_default=True, help="The named world.")
@click.option("--train-steps", type=int, default=20, show_default=True, help="Training batches (fixed).")
@click.option("--train-seconds", type=float, default=300.0, show_default=True, help="Training wall-time cap.")
@click.option("--scheduler", default="threads", show_default=True, help="dask scheduler of every stage.")
@click.option("--stage-timeout", type=float, default=None, help="Kill a stage after this many seconds.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the worlds go (default: a temporary directory).",
)
@click.option("--keep", is_flag=True, help="Keep the worlds (default: delete each once measured).")
def command(**options: Any) -> None:
    """The demo's stages on worlds of growing size: wall, CPU and peak RSS per stage."""
    print_document("scale", scale_benchmark(**options))


def run(argv: list[str]) -> dict[str, Any]:
    """The figures for the options ``argv`` of ``python -m pipelines.benchmarks scale``."""
    return scale_benchmark(**options_from_argv(command, argv))
