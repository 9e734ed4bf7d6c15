"""The pipeline stages: incremental and resumable ingest, a real LocalCluster, dry runs, configs,
and the demo end to end on a tiny simulated world.

Truth used here: the simulator is deterministic per scene id, so a world that ends later holds
the same first scenes; an uninterrupted ingest is the reference a resumed or incremental one
must equal array for array.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from harmonize.world import WorldConfig, create_world
from pipelines.core.config import dump_config
from pipelines.core.ledger import Ledger, tree_checksum
from pipelines.core.stores import open_cube
from pipelines.run import load_config, parse_config
from pipelines.stages.ingest import IngestConfig, ingest

REPO = Path(__file__).resolve().parents[1]
END_A = dt.date(2023, 5, 16)  # the short world: its scenes are the first of the long one
END_B = dt.date(2023, 5, 31)
RUN_LOGS = (".lock", "runs.jsonl")  # written by every run, no-op or not


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pipeline-worlds")
    a = create_world(root / "a", WorldConfig.tiny(end=END_A), progress=False)
    b = create_world(root / "b", WorldConfig.tiny(end=END_B), progress=False)
    return a, b


def _l2_ids(world) -> set[str]:
    return {s["id"] for s in world.scenes}


def _cfg(source, out, **kw) -> IngestConfig:
    # An incremental run registers each scene against the Sentinel-2 stores committed by then:
    # it equals an uninterrupted run when no scene of the first run has a reference date the
    # second run adds (3 days here, END_A - 4 days being its last Landsat date; the default
    # 60-day composite window reaches past END_A).
    kw.setdefault("max_days", 3)
    return IngestConfig(source=str(source), out=out, scheduler=kw.pop("scheduler", "threads"), chunk=64, **kw)


@pytest.fixture(scope="module")
def reference(worlds, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted ingest of the long world."""
    out = tmp_path_factory.mktemp("reference") / "cube"
    report = ingest(_cfg(worlds[1].root, out))
    assert set(report["new"]) == _l2_ids(worlds[1])
    return out


def _stores(out: Path) -> dict[str, xr.Dataset]:
    ledger = Ledger(out, "ingest")
    return {n: xr.open_zarr(ledger.unit_path(n)).load() for n in sorted(ledger.units)}


def _assert_same_stores(got: Path, want: Path, names=None) -> None:
    a, b = _stores(got), _stores(want)
    names = sorted(a) if names is None else names
    assert names and set(names) <= set(b)
    for n in names:
        for v in b[n].data_vars:
            np.testing.assert_array_equal(a[n][v].values, b[n][v].values, err_msg=f"{n}:{v}")
        for c in ("time", "shift_x", "shift_y"):
            np.testing.assert_array_equal(a[n][c].values, b[n][c].values, err_msg=f"{n}:{c}")


def test_reference_ingest_matches_the_world(worlds, reference):
    cube = open_cube(reference)
    w = worlds[1]
    assert cube.sizes["time"] == len({(s["date"], s["sensor"]) for s in w.scenes})
    assert cube.odc.geobox == w.geobox  # the grid is the world's 10 m AOI grid
    # co-registration recovered the simulator's known shifts where it measured them
    truth = {s["id"]: s["shift"] for s in w.scenes if s["sensor"] == "landsat"}
    ls = cube.isel(time=np.flatnonzero(cube["sensor"].values == "landsat"))
    measured = [
        (i, x, y)
        for i, x, y, f in zip(
            ls.item_id.values, ls.shift_x.values, ls.shift_y.values, ls.shift_flagged.values, strict=True
        )
        if not f
    ]
    assert measured, "no Landsat scene was co-registered"
    for i, x, y in measured:
        assert np.hypot(x - truth[i][0], y - truth[i][1]) < 6.0, (i, x, y, truth[i])
    # clear Sentinel-2 pixels are the world's truth up to sensor noise
    s2 = cube.isel(time=np.flatnonzero(cube["sensor"].values == "sentinel-2"))
    t = w.truth["red"].sel(time=s2.time.values.astype("datetime64[D]")).values
    got = s2["red"].where(s2["clear"]).values
    err = np.nanmedian(np.abs(got - t))
    assert err < 0.01


def test_incremental_rerun_processes_only_new_items(worlds, reference, tmp_path):
    a, b = worlds
    out = tmp_path / "cube"
    first = ingest(_cfg(a.root, out))
    assert set(first["new"]) == _l2_ids(a)
    before = tree_checksum(out, exclude=RUN_LOGS)

    second = ingest(_cfg(b.root, out))
    assert set(second["new"]) == _l2_ids(b) - _l2_ids(a)  # only the later scenes
    assert Ledger(out, "ingest").items() >= _l2_ids(b)
    after = tree_checksum(out, exclude=RUN_LOGS)
    old_stores = {k: v for k, v in before.items() if k.startswith("scenes/")}
    assert all(after[k] == v for k, v in old_stores.items())  # earlier stores untouched
    # and everything equals the uninterrupted ingest of the long world
    _assert_same_stores(out, reference)

    t0 = time.perf_counter()
    third = ingest(_cfg(b.root, out))
    assert third["new"] == [] and third["committed"] == []
    assert time.perf_counter() - t0 < 10
    assert tree_checksum(out, exclude=RUN_LOGS) == after  # bytes and mtimes unchanged
    runs = Ledger(out, "ingest").runs()
    assert [len(r["committed"]) for r in runs] == [len(first["committed"]), len(second["committed"]), 0]


def test_dry_run_writes_nothing(worlds, tmp_path):
    out = tmp_path / "cube"
    report = ingest(_cfg(worlds[0].root, out), dry_run=True)
    assert set(report["new"]) == _l2_ids(worlds[0])
    assert not out.exists()


def test_killed_ingest_resumes_to_the_uninterrupted_result(worlds, reference, tmp_path):
    """The short world's job killed after its first commit; resumed, its stores equal the long
    world's uninterrupted ingest (the same first scenes, see the module docstring)."""
    out = tmp_path / "cube"
    cfg_path = tmp_path / "ingest.yaml"
    dump_config(_cfg(worlds[0].root, out, batch=1), cfg_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.stages.ingest", str(cfg_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ledger_path = out / "ledger.json"
    n_total = len(_l2_ids(worlds[0]))  # one store per scene
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger_path.exists() and json.loads(ledger_path.read_text()).get("units"):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    done = len(Ledger(out, "ingest").units)
    assert 1 <= done < n_total
    report = ingest(_cfg(worlds[0].root, out, batch=1))
    assert len(report["committed"]) == n_total - done  # only what was not committed
    assert len(Ledger(out, "ingest").units) == n_total
    assert not [p for p in out.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    _assert_same_stores(out, reference)


def test_ingest_on_a_local_cluster_with_worker_processes(worlds, reference, tmp_path):
    out = tmp_path / "cube"
    cfg = _cfg(
        worlds[1].root,
        out,
        scheduler="local",
        n_workers=2,
        threads_per_worker=1,
        datetime="2023-05-01/2023-05-06",
    )
    from distributed import LocalCluster  # noqa: F401 - the real thing, not a stub

    report = ingest(cfg)
    assert report["committed"]
    assert (out / "performance-report.html").stat().st_size > 0
    got = _stores(out)
    want = _stores(reference)
    s2 = [n for n in got if n.startswith("scenes/sentinel-2")]
    same_shift = [
        n
        for n in got
        if n.startswith("scenes/landsat")
        and got[n].shift_x.values[0] == want[n].shift_x.values[0]
        and got[n].shift_y.values[0] == want[n].shift_y.values[0]
    ]
    assert s2
    _assert_same_stores(out, reference, names=s2 + same_shift)


def test_config_yaml_round_trip_and_overrides(tmp_path):
    for name in ("ingest", "pairs", "train", "infer", "timeseries", "demo"):
        path = REPO / "pipelines" / "configs" / f"{name}.yaml"
        cfg = load_config(path)
        assert cfg.stage == name
        again = tmp_path / path.name
        dump_config(cfg, again)
        assert load_config(again) == cfg, path.name
    cfg = load_config(
        REPO / "pipelines" / "configs" / "train.yaml",
        overrides=["train.epochs=3", "out=/tmp/x", "max_seconds=5"],
    )
    assert cfg.train["epochs"] == 3 and cfg.train["model"] == "tiny"  # nested keys merge
    assert str(cfg.out) == "/tmp/x" and cfg.max_seconds == 5
    cfg = parse_config(
        yaml.safe_load((REPO / "pipelines/configs/ingest.yaml").read_text()), overrides={"bbox": [1, 2, 3, 4]}
    )
    assert cfg.bbox == (1, 2, 3, 4)
    from harmonize.errors import HarmonizeError

    with pytest.raises(HarmonizeError, match="stage"):
        parse_config({"out": "x"})
    with pytest.raises(HarmonizeError, match="invalid ingest config"):
        parse_config({"stage": "ingest", "out": "x", "source": "s", "no_such_field": 1})


def test_ledger_commits_atomically_locks_and_cleans_up(tmp_path):
    from harmonize.errors import HarmonizeError

    ledger = Ledger(tmp_path / "out", "ingest")
    tmp = ledger.tmp_path("a.zarr")
    tmp.mkdir()
    (tmp / "data").write_text("v1")
    ledger.commit("scenes/a.zarr", tmp, ["ITEM_1"], sensor="landsat")
    again = Ledger(tmp_path / "out", "ingest")  # what a restarted run reads
    assert again.items() == {"ITEM_1"} and again.committed("scenes/a.zarr")
    tmp2 = again.tmp_path("a.zarr")
    tmp2.mkdir()
    (tmp2 / "data").write_text("v2")
    again.commit("scenes/a.zarr", tmp2, ["ITEM_1", "ITEM_2"])  # replaces the older store
    assert (tmp_path / "out/scenes/a.zarr/data").read_text() == "v2"
    # leftovers of a killed run: a half-written unit and a replaced one
    (tmp_path / "out" / ".tmp-b.zarr.1234").mkdir()
    (tmp_path / "out" / "scenes" / ".old-a.zarr.5678").mkdir()
    assert len(again.clean()) == 2
    assert not [p for p in (tmp_path / "out").rglob(".*") if p.name.startswith((".tmp-", ".old-"))]
    with pytest.raises(HarmonizeError, match="another run"):
        with again.lock(), Ledger(tmp_path / "out", "ingest").lock():
            pass
    with pytest.raises(HarmonizeError, match="stage 'ingest'"):
        Ledger(tmp_path / "out", "pairs")
