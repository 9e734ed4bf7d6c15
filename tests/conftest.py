"""Shared fixtures: small simulated worlds and what the pipeline makes of them, built once per
test run.

``scripts/test.sh`` runs the suite in two pytest-xdist worker processes; a session fixture is
per process, so the expensive ones below are built under a file lock in the run's common
temporary folder (the workers' ``basetemp`` parent) by whichever worker asks first and reused by
the other. They are inputs: tests read them and write their own outputs under ``tmp_path`` (a
test that must write into one copies it first, see :func:`tiny_demo`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from harmonize.world import World, WorldConfig, create_world, open_world


def _built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``root/name`` after ``build(root/name)`` ran once in this test run, in whichever process
    got here first (the others wait for it on the lock, then find it done)."""
    from filelock import FileLock

    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # .../pytest-N, shared by this run's workers (each has popen-gwK below)
    path = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (root / f"{name}.done").exists():
            shutil.rmtree(path, ignore_errors=True)  # what a build that failed in another worker left
            build(path)
            (root / f"{name}.done").touch()
    return path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A 1.28 km world over six weeks (10 Sentinel-2 and 6 Landsat scenes), built in seconds.

    ``WorldConfig.tiny()`` with seed 0: it holds cloud-free and cloudy scenes of both sensors,
    Landsat scenes with known shifts (``world.manifest``) and the truth they came from.
    """
    path = _built_once(
        tmp_path_factory, "tiny-world", lambda p: create_world(p, WorldConfig.tiny(), progress=False)
    )
    return open_world(path)


@pytest.fixture(scope="session")
def tiny_cube(tiny_world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world ingested as the demo does (co-registered per-scene stores, 64-px chunks,
    the threaded scheduler): the ``cube`` input of the pairs, infer and timeseries stages."""
    from pipelines.stages.ingest import IngestConfig, ingest

    def build(path: Path) -> None:
        ingest(IngestConfig(source=str(tiny_world.root), out=path, scheduler="threads", chunk=64))

    return _built_once(tmp_path_factory, "tiny-cube", build)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished demo of the tiny world without its report (world, cube, pairs, a model trained
    2 epochs of 2 batches, harmonized dates, time series), as ``harmonize demo --tiny`` writes it.

    Shared by the run: a test that writes into a demo folder (a report, a map, a re-run) copies
    this one first (``shutil.copytree(tiny_demo, tmp_path / "demo")``; its paths are relative).
    """
    from pipelines import demo

    def build(path: Path) -> None:
        demo.run_demo(
            path, tiny=True, train={"epochs": 2, "max_batches_per_epoch": 2}, train_seconds=30, report=False
        )

    return _built_once(tmp_path_factory, "tiny-demo", build)
