"""The whole pipeline on a freshly simulated world, from nothing to a report.

``harmonize demo OUT`` (or ``python -m pipelines.demo OUT``) does what a user would do by hand:

1. simulate the demo world (5.12 km, one year of Landsat-8/9 and Sentinel-2) into ``OUT/world``;
2. serve it as a STAC API on loopback (``rustac serve``) and search it over HTTP;
3. run every stage into ``OUT/cube``, ``OUT/pairs``, ``OUT/model``, ``OUT/harmonized`` and
   ``OUT/timeseries`` (the same functions ``harmonize run`` calls);
4. write the report (:func:`pipelines.demo.report.write_report`).

Stage durations (wall and CPU seconds) go to the log and ``OUT/timings.json``; the paths of
everything to ``OUT/demo.json``. Running it again on the same ``OUT`` re-uses what is there
(every stage is incremental) and finishes in seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import Field

from pipelines.core.cli import reporting, setup_logging
from pipelines.core.config import StageConfig
from pipelines.core.ledger import atomic_write_text
from pipelines.core.stores import read_index
from pipelines.demo.classification import classify_demo
from pipelines.demo.paths import demo_paths, open_cube
from pipelines.demo.report import prepare_report, write_report
from pipelines.evaluation.harmonization import fit_on_training_blocks
from pipelines.stages.infer import InferStageConfig, infer_stage
from pipelines.stages.ingest import IngestConfig, ingest
from pipelines.stages.pairs import PairsStageConfig, pairs_stage
from pipelines.stages.timeseries import TimeseriesStageConfig, timeseries_stage
from pipelines.stages.train import TrainStageConfig, train_stage

log = logging.getLogger("pipelines.demo")  # not __main__ under `python -m`

__all__ = [
    "DemoConfig",
    "run_demo",
    "run_demo_config",
    "DEMO_PAIRS",
    "DEMO_TRAIN",
    "TINY_PAIRS",
    "world_config",
    "stages_after_ingest",
    "main",
]

#: Patch settings that give the 5.12 km demo world 16 spatial blocks to split. Same-day pairs
#: are few in one cloudy year (4 with clear windows in the default world); pairs up to 2 days
#: apart give 22, with windows in every split. Targets: Sentinel-2 with its 20 m bands
#: sharpened to 10 m (harmonize.sharpen), which took the tiny model from +1.2 to +2.1 dB over
#: resampling + fitted linear against truth.
DEMO_PAIRS: dict[str, Any] = {
    "patch_size": 64,
    "stride": 32,
    "block_size": 128,
    "min_clear": 0.9,
    "max_days": 2,
    "sharpen_target": True,
}
#: The ``tiny`` UNet for 300 steps of 4 patches: the pixels and CPU time of 150 steps of 8
#: (under a minute on two free CPU cores), twice the updates, which is what teaches the model
#: 10 m detail at this budget. Held-out blocks, gain over resampling + fitted linear (the
#: report's summary), 150 x 8 -> 300 x 4, same patches, ~55-59 CPU s either way: demo world
#: +3.63 -> +3.97 dB (nir +2.13 -> +2.72); cloudy-season +3.38 -> +3.64 (nir +1.58 -> +1.77).
#: 600 x 2 gave the same (+3.92, nir +2.74) for 15 % more CPU.
DEMO_TRAIN: dict[str, Any] = {
    "model": "tiny",
    "epochs": 10,
    "batch_size": 4,
    "max_batches_per_epoch": 30,
    "lr": 3e-3,
    "detail_weight": 2.0,  # an L1 on the detail below the Landsat pixel, nir weighted 3x:
    "band_weights": [1.0, 1.0, 1.0, 3.0, 1.0, 1.0],  # 150 steps +3.16 dB, nir +1.96 (L1: +2.59, +0.44)
    "patience": None,
    "normalization_samples": 16,
    "eval_samples": 16,
    "device": "auto",
    "threads": 1,  # batches of 4: a second torch thread spins (same CPU, 72 s wall against ~40)
}
TINY_PAIRS: dict[str, Any] = {
    "patch_size": 32,
    "stride": 16,
    "block_size": 64,
    "min_clear": 0.5,
    "max_days": 2,
    "sharpen_target": True,
}


class DemoConfig(StageConfig):
    """Everything at once on a freshly simulated world (see :func:`run_demo`).

    Attributes
    ----------
    size_km
        Side of the simulated area (default: the demo world, 5.12 km).
    tiny
        Use :meth:`harmonize.world.WorldConfig.tiny` (1.28 km, six weeks) instead.
    world
        :class:`harmonize.world.WorldConfig` fields overriding the preset's.
    world_preset
        The named world to start from (:func:`harmonize.world.presets.preset_names`).
    train
        Training settings (as in :class:`TrainStageConfig`).
    train_seconds
        Training wall-time cap.
    pairs, timeseries
        As in the stages.
    report
        Write the HTML report at the end (:func:`pipelines.demo.report.write_report`).
    classify
        Run the classify stage (the crop-type map from the fused features, its report section
        and map layer; on by default; ``false`` leaves it out).
    """

    stage: Literal["demo"] = "demo"
    scheduler: str | None = "threads"
    size_km: float | None = None
    tiny: bool = False
    world: dict[str, Any] = Field(default_factory=dict)
    world_preset: str = "demo"
    train: dict[str, Any] = Field(default_factory=dict)
    train_seconds: float | None = Field(None, gt=0)
    pairs: dict[str, Any] = Field(default_factory=dict)
    timeseries: dict[str, Any] = Field(default_factory=dict)
    report: bool = True
    classify: bool = True


class _Timer:
    """Wall and CPU seconds (this process and its finished children) of each stage."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("demo: %s ...", name)
        w0, c0 = time.perf_counter(), self._cpu()
        yield
        wall, cpu = time.perf_counter() - w0, self._cpu() - c0
        self.stages[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
        log.info("demo: %s done in %.1f s (CPU %.1f s)", name, wall, cpu)

    def beside(self, name: str, wall: float) -> None:
        """Record a stage that ran beside the report (inside its wall and CPU seconds)."""
        self.stages[name] = {"wall_s": round(wall, 2), "beside": "report"}
        log.info("demo: %s done in %.1f s beside the report", name, wall)

    def total(self) -> dict[str, float]:
        own = [s for s in self.stages.values() if "beside" not in s]
        return {
            "wall_s": round(sum(s["wall_s"] for s in own), 2),
            "cpu_s": round(sum(s["cpu_s"] for s in own), 2),
        }


def run_demo(
    out: str | Path = "demo-out",
    *,
    size_km: float | None = None,
    tiny: bool = False,
    world: dict[str, Any] | None = None,
    world_preset: str | None = None,
    pairs: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    train_seconds: float | None = 600.0,
    timeseries: dict[str, Any] | None = None,
    scheduler: str | None = "threads",
    report: bool = True,
    progress: bool = False,
    classify: bool = True,
) -> Path:
    """Simulate a world, serve it, and run every stage on it; return the report (or ``demo.json``).

    Parameters
    ----------
    out
        Output folder (see :func:`demo_paths` for its layout).
    size_km
        Side of the simulated area (default: the demo world's 5.12 km).
    tiny
        Simulate :meth:`harmonize.world.WorldConfig.tiny` (1.28 km, six weeks) instead: seconds.
    world
        Further :class:`~harmonize.world.WorldConfig` fields (``seed``, ``start``, ``end`` …).
    world_preset
        The named world to simulate (default ``"demo"``; see
        :func:`harmonize.world.presets.preset_names`); ``world`` and ``size_km`` go over it.
    pairs, train, timeseries
        Settings merged over :data:`DEMO_PAIRS`, :data:`DEMO_TRAIN` and the time-series defaults.
    train_seconds
        Training wall-time cap (the best epoch so far is exported when it is reached): a
        safety net, far above the ~55 s a quiet 2-core box takes, so a busy machine gets the same
        model later rather than a worse one.
    scheduler
        dask scheduler of every stage: ``"threads"`` (default: a LocalCluster's start-up costs
        more than it saves on a 5 km world), ``"local"``, or a scheduler address.
    report
        Write the report (:func:`pipelines.demo.report.write_report`) at the end.
    progress
        Show progress bars.
    classify
        Also run the classify stage into ``OUT/classify`` (the crop-type map and its report
        section).

    Returns
    -------
    pathlib.Path
        ``OUT/report/report.html``, or ``OUT/demo.json`` without the report.
    """
    from harmonize.world import create_world
    from harmonize.world.server import serve

    root = Path(out).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    paths = demo_paths(root)
    timer = _Timer()
    t_start = time.perf_counter()
    common = {"scheduler": scheduler, "progress": progress}
    wcfg = world_config(size_km=size_km, tiny=tiny, world=world, preset=world_preset)

    with timer("world"):
        w = create_world(paths["world"], wcfg, progress=progress)
    reports: dict[str, Any] = {}
    with serve(w) as server:
        log.info("demo: the simulated archive is served at %s", server.url)
        with timer("ingest"):
            # 256-pixel chunks: training reads 64-pixel patches, and a patch reads whole chunks
            reports["ingest"] = ingest(
                IngestConfig(source=server.url, out=paths["cube"], chunk=256, **common)
            )
    later = stages_after_ingest(
        paths,
        w.truth_path,
        common,
        pairs={**(TINY_PAIRS if tiny else DEMO_PAIRS), **(pairs or {})},
        train={**DEMO_TRAIN, **(train or {})},
        train_seconds=train_seconds,
        timeseries=dict(timeseries or {}),
        classify=classify,
        stage_plots=not report,  # the report draws the same three figures
        train_callbacks=[lambda row: _start_side_work(side, root)] if report else [],
    )
    beside = [(n, s) for n, s in later if report and n in BESIDE_REPORT]
    result = paths["demo"]
    spawn = multiprocessing.get_context("spawn")  # the process starts at the first submit
    with ThreadPoolExecutor(1, thread_name_prefix="beside") as pool, ProcessPoolExecutor(1, spawn) as procs:
        side: dict[str, Any] = {"procs": procs}
        for name, run_stage in later:
            if report and name in BESIDE_REPORT:
                continue
            with timer(name):
                reports[name] = run_stage()
            if report and name == "train":  # up to date: no epoch started it
                _start_side_work(side, root)
        _write_demo_json(paths, w, wcfg, reports, timeseries=dict(timeseries or {}))
        if report:
            with timer("report"):
                done = pool.submit(_run_beside, beside, reports, timer)
                fitted, prepared = side["work"].result() if "work" in side else (None, None)
                procs.shutdown()  # reaped here: its CPU seconds count in the report's
                result = Path(
                    write_report(root, w, fitted=fitted, prepared=prepared, before_linked=done.result)
                )
            _write_demo_json(paths, w, wcfg, reports, timeseries=dict(timeseries or {}))
    timings = _write_timings(paths, timer, time.perf_counter() - t_start, scheduler)
    log.info(
        "demo: finished in %.1f s wall (%.1f s CPU); %s",
        timings["elapsed_s"],
        timings["total"]["cpu_s"],
        result,
    )
    return result


#: Stages whose products only the report's last sections read. With the report on they run on
#: a thread beside its scoring: the classify stage trains on one torch thread and the report's
#: first sections leave the second core mostly idle, so together they take ~10 s less wall.
BESIDE_REPORT = ("classify",)


def _start_side_work(side: dict[str, Any], root: Path) -> None:
    """Fit the report's baseline and make its parts that need no model (:func:`_side_work`) in
    the side process (``side["procs"]``), once: from the end of training's first epoch, when
    one torch thread leaves a core idle (the patch reading before it keeps both busy). A
    process, not a thread: that work is mostly Python (dask graphs, xarray selections), and on
    a thread it held the interpreter lock the training loop needs between every torch op
    (epochs 2-3x slower while it ran)."""
    if "work" not in side:
        side["work"] = side["procs"].submit(_side_work, root)


def _side_work(root: Path) -> tuple[Any, dict[str, Any] | None]:
    """The report's fitted linear bandpass baseline, fitted on the pairs' training blocks, and
    :func:`pipelines.demo.report.prepare_report` with it (``None`` when that fails: the report
    then makes those parts itself)."""
    from harmonize.world import open_world

    fitted = fit_on_training_blocks(open_cube(root), read_index(demo_paths(root)["pairs"]))
    try:
        return fitted, prepare_report(root, open_world(demo_paths(root)["world"]), fitted)
    except Exception as exc:  # an optimisation must not cost the report
        log.warning("demo: the report's model-free parts were not made beside training (%s: %s)",
                    type(exc).__name__, exc)
        return fitted, None


def _run_beside(
    stages: list[tuple[str, Callable[[], dict[str, Any]]]], reports: dict[str, Any], timer: _Timer
) -> None:
    """Run ``stages`` in order (on the report's side thread), each one's wall seconds recorded
    as a part of the report stage's time (its CPU is counted in the report's)."""
    for name, run_stage in stages:
        log.info("demo: %s (beside the report) ...", name)
        t0 = time.perf_counter()
        reports[name] = run_stage()
        timer.beside(name, time.perf_counter() - t0)


def world_config(
    *, size_km: float | None, tiny: bool, world: dict[str, Any] | None, preset: str | None = None
) -> Any:
    """The :class:`harmonize.world.WorldConfig` to simulate: the preset's, full-size or tiny."""
    from harmonize.world.presets import preset_config

    world_fields = dict(world or {})
    if size_km is not None:
        world_fields["size_km"] = size_km
    return preset_config(preset, tiny=tiny, **world_fields)


def stages_after_ingest(
    paths: dict[str, Path],
    truth: Path,
    common: dict[str, Any],
    *,
    pairs: dict[str, Any],
    train: dict[str, Any],
    train_seconds: float | None,
    timeseries: dict[str, Any],
    classify: bool = False,
    stage_plots: bool = True,
    train_callbacks: Sequence[Callable[[dict[str, float]], None]] = (),
) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """The pairs, train, infer and time-series stages on the demo's folders, in order, each
    ready to run (its config is built when it runs, after the stage before has written).
    ``stage_plots=False`` leaves out the time-series stage's figures (~5 s; the demo's report
    draws the same NDVI series, maps and clear-observation counts). ``train_callbacks`` are
    called after each training epoch (:func:`harmonize.train.fit`'s ``callbacks``)."""

    def pairs_step() -> dict[str, Any]:
        return pairs_stage(PairsStageConfig(cube=paths["cube"], out=paths["pairs"], pairs=pairs, **common))

    def train_step() -> dict[str, Any]:
        return train_stage(
            TrainStageConfig(
                cube=paths["cube"],
                pairs=paths["pairs"],
                out=paths["model"],
                train=train,
                max_seconds=train_seconds,
                max_train_windows=256,
                max_val_windows=32,
                truth=truth,
                **common,
            ),
            callbacks=train_callbacks,
        )

    def infer_step() -> dict[str, Any]:
        return infer_stage(
            InferStageConfig(
                cube=paths["cube"],
                model=str(paths["model_package"]),
                out=paths["harmonized"],
                device="cpu",
                **common,
            )
        )

    def timeseries_step() -> dict[str, Any]:
        return timeseries_stage(
            TimeseriesStageConfig(
                cube=paths["cube"],
                harmonized=paths["harmonized"],
                out=paths["timeseries"],
                timeseries=timeseries,
                truth=truth,
                plots=stage_plots,
                **common,
            )
        )

    def classify_step() -> dict[str, Any]:
        return classify_demo(paths["cube"].parent, truth, common)

    def lst_step() -> dict[str, Any]:
        from pipelines.demo.lst import run_lst  # issue 16: 10 m LST of 4 Landsat dates, ~6 s CPU

        return run_lst(paths["cube"].parent)

    return [
        ("pairs", pairs_step),
        ("train", train_step),
        ("infer", infer_step),
        ("timeseries", timeseries_step),
        ("lst", lst_step),
    ] + ([("classify", classify_step)] if classify else [])


def _write_demo_json(
    paths: dict[str, Path], world: Any, wcfg: Any, reports: dict[str, Any], *, timeseries: dict[str, Any]
) -> None:
    """``OUT/demo.json``: where every product is, every stage's report, and the time-series
    settings (the report scores the fused series as the stage made it)."""
    doc = {
        "timeseries_settings": timeseries,
        "world": str(world.root),
        "world_config": json.loads(wcfg.model_dump_json()),
        "cube": str(paths["cube"]),
        "pair_index": str(paths["pair_index"]),
        "model_package": str(paths["model_package"]),
        "training": str(paths["model"]),
        "harmonized": str(paths["harmonized"]),
        "timeseries": str(paths["timeseries"]),
        "timings": str(paths["timings"]),
        "stages": reports,
    }
    atomic_write_text(paths["demo"], json.dumps(doc, indent=1, default=str) + "\n")


def _write_timings(
    paths: dict[str, Path], timer: _Timer, elapsed: float, scheduler: str | None
) -> dict[str, Any]:
    """``OUT/timings.json``: each stage's wall and CPU seconds, the totals and the machine."""
    timings = {
        "stages": timer.stages,
        "total": timer.total(),
        "elapsed_s": round(elapsed, 2),
        "cores": len(os.sched_getaffinity(0)),
        "scheduler": scheduler,
    }
    atomic_write_text(paths["timings"], json.dumps(timings, indent=1) + "\n")
    return timings


def run_demo_config(
    config: DemoConfig, *, dry_run: bool = False, scheduler: str | None = None
) -> dict[str, Any]:
    """Run the demo from a :class:`DemoConfig` (``harmonize run demo.yaml``)."""
    if dry_run:
        return {
            "stage": "demo",
            "dry_run": True,
            "out": str(config.out),
            "would_write": {k: str(v) for k, v in demo_paths(config.out).items()},
        }
    path = run_demo(
        config.out,
        size_km=config.size_km,
        tiny=config.tiny,
        world=config.world,
        world_preset=config.world_preset,
        pairs=config.pairs or None,
        train=config.train or None,
        train_seconds=config.train_seconds,
        timeseries=config.timeseries or None,
        scheduler=scheduler or config.scheduler,
        report=config.report,
        progress=config.progress,
        classify=config.classify,
    )
    return {
        "stage": "demo",
        "out": str(config.out),
        "result": str(path),
        "timings": json.loads(demo_paths(config.out)["timings"].read_text()),
    }


@click.command(name="demo")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"))
@click.option("--size-km", type=float, default=None, help="Side of the simulated area (default 5.12).")
@click.option("--tiny", is_flag=True, help="A 1.28 km, six-week world (seconds).")
@click.option(
    "--world-preset",
    default="demo",
    show_default=True,
    help="The named world to simulate; `harmonize world presets` lists them.",
)
@click.option("--scheduler", default="threads", show_default=True, help="dask scheduler of every stage.")
@click.option(
    "--train-seconds",
    type=float,
    default=600.0,
    show_default=True,
    help="Training wall-time cap: a safety net (a quiet 2-core box trains the demo in ~55 s).",
)
@click.option(
    "--classify/--no-classify",
    default=True,
    show_default=True,
    help="Also make the crop-type map (the classify stage on the fused NDVI, ~10-17 CPU s).",
)
@click.option("-v", "--verbose", count=True, help="More logging.")
@reporting
def main(
    out: Path,
    size_km: float | None,
    tiny: bool,
    world_preset: str,
    scheduler: str,
    train_seconds: float,
    classify: bool,
    verbose: int,
) -> None:
    """Run the whole pipeline on a freshly simulated world and write a report to OUT."""
    setup_logging(verbose)
    path = run_demo(
        out,
        size_km=size_km,
        tiny=tiny,
        world_preset=world_preset,
        scheduler=scheduler,
        train_seconds=train_seconds,
        classify=classify,
    )
    click.echo(f"report: {path}")
