"""The transactional cube store (``store: icechunk``) on a local disk and on S3 (moto's server).

Truth used here: ingest is deterministic, so the plain Zarr folders of an uninterrupted run are
the reference every repository, killed and resumed or not, must equal array for array.

* A job SIGKILLed while it writes a commit's chunks (chunk objects no commit refers to are left)
  leaves the branch at its last commit, readable and complete; the re-run commits only the
  rest, and the result equals the uninterrupted run. Local folder and ``s3://`` alike.
* The history lists, per commit, the units it added and their items: every unit once, with the
  items the ledger records.
* A reader holds one snapshot: what it opened stays as it was while a later run commits.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("icechunk", reason="icechunk is not installed (pip install icechunk)")

from harmonize.world import WorldConfig, create_world  # noqa: E402
from pipelines.core.config import dump_config  # noqa: E402
from pipelines.core.cubestore import CubeRepo  # noqa: E402
from pipelines.core.ledger import Ledger  # noqa: E402
from pipelines.core.stores import open_cube  # noqa: E402
from pipelines.stages.ingest import IngestConfig, ingest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "hz-cube"
# the longer world adds one scene of each sensor (Landsat 05-20, Sentinel-2 05-21) to the shorter
END_A, END_B = dt.date(2023, 5, 16), dt.date(2023, 5, 21)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cubestore-worlds")
    a = create_world(root / "a", WorldConfig.tiny(end=END_A), progress=False)
    b = create_world(root / "b", WorldConfig.tiny(end=END_B), progress=False)
    return a, b


def _cfg(source, out, **kw) -> IngestConfig:
    kw.setdefault("max_days", 3)
    return IngestConfig(source=str(source), out=out, scheduler="threads", chunk=64, **kw)


@pytest.fixture(scope="module")
def reference(worlds, tmp_path_factory) -> xr.Dataset:
    """The plain Zarr folders of an uninterrupted ingest of the short world, loaded."""
    out = tmp_path_factory.mktemp("cubestore-ref") / "cube"
    ingest(_cfg(worlds[0].root, out))
    return open_cube(out).load()


def _assert_equal(got: xr.Dataset, want: xr.Dataset, *, part: bool = False) -> None:
    """Equal array for array; ``part``: ``got`` holds a subset of ``want``'s variables (one
    sensor's stores carry no other sensor's bands)."""
    if not part:
        assert sorted(got.data_vars) == sorted(want.data_vars)
        assert sorted(got.coords) == sorted(want.coords)
    for v in got.data_vars:
        np.testing.assert_array_equal(got[v].values, want[v].values, err_msg=v)
    for c in got.coords:
        if c != "spatial_ref":
            np.testing.assert_array_equal(got[c].values, want[c].values, err_msg=c)
    assert got.rio.crs == want.rio.crs


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a loopback port; the AWS variables that point clients at it."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        try:
            yield env
        finally:
            server.stop()


#: Runs the ingest job and SIGKILLs it from inside, once it wrote 12 chunks after its first
#: commit: in the middle of the second commit's writes, at a known place every time (a kill on a
#: timer may land between commits, where there is nothing to prove).
_KILLED_JOB = """
import os, signal, sys
import icechunk
from icechunk.store import IcechunkStore

state = {"commits": 0, "chunks": 0}
commit, put = icechunk.Session.commit, IcechunkStore.set

def counted_commit(self, *a, **k):
    out = commit(self, *a, **k)
    state["commits"] += 1
    return out

async def killing_put(self, key, value):
    await put(self, key, value)
    if state["commits"] >= 1 and "/c/" in key:
        state["chunks"] += 1
        if state["chunks"] == 12:
            os.kill(os.getpid(), signal.SIGKILL)

icechunk.Session.commit, IcechunkStore.set = counted_commit, killing_put
from pipelines.stages.ingest import main
main([sys.argv[1]])
"""


def _local_chunk_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "chunks").glob("*") if p.is_file())


def _s3_chunk_bytes(prefix: str) -> int:
    import boto3

    pages = (
        boto3.client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=BUCKET, Prefix=f"{prefix}/chunks/")
    )
    return sum(o["Size"] for page in pages for o in page.get("Contents", []))


def _kill_inside_a_commit(cfg: IngestConfig, tmp: Path) -> None:
    """Run the ingest job in a subprocess that is SIGKILLed in the middle of its second commit."""
    cfg_path = tmp / "ingest.yaml"
    dump_config(cfg, cfg_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_JOB, str(cfg_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def _check_killed_and_resumed(cfg: IngestConfig, location: str, chunk_bytes, reference, tmp: Path) -> None:
    _kill_inside_a_commit(cfg, tmp)
    repo = CubeRepo(location)
    # killed inside a commit: chunks were written that no commit of the branch holds
    assert chunk_bytes() > repo._repo.chunk_storage_stats().native_bytes
    left = Ledger(cfg.out, "ingest")
    assert left.repo is not None and 1 <= len(left.units) < reference.sizes["time"]
    partial = open_cube(cfg.out).load()  # the last commit: complete and readable
    want = reference.sel(time=partial.time.values)
    _assert_equal(partial, want, part=True)
    report = ingest(cfg)
    assert len(report["committed"]) == reference.sizes["time"] - len(left.units)
    _assert_equal(open_cube(cfg.out).load(), reference)
    _assert_history_lists_items(CubeRepo(location), Ledger(cfg.out, "ingest"))


def _assert_history_lists_items(repo: CubeRepo, ledger: Ledger) -> None:
    history = repo.history()
    added = [(n, items) for h in history for n, items in h["units"].items()]
    assert sorted(n for n, _ in added) == sorted(ledger.units)  # every unit in exactly one commit
    for name, items in added:
        assert items == ledger.units[name]["items"] and items, name
    assert all(Path(n).stem in h["message"] for h in history for n in h["units"])


@pytest.mark.slow
def test_a_local_repository_killed_inside_a_commit_resumes_to_the_uninterrupted_run(
    worlds, reference, tmp_path
):
    cfg = _cfg(worlds[0].root, tmp_path / "cube", store="icechunk", batch=1)
    location = str(cfg.out / "cube.icechunk")
    _check_killed_and_resumed(cfg, location, lambda: _local_chunk_bytes(Path(location)), reference, tmp_path)
    assert not (cfg.out / "scenes").exists()  # the scenes are in the repository only


@pytest.mark.slow
def test_an_s3_repository_killed_inside_a_commit_resumes_to_the_uninterrupted_run(
    worlds, reference, s3, tmp_path
):
    location = f"s3://{BUCKET}/killed/cube"
    cfg = _cfg(worlds[0].root, tmp_path / "run", store="icechunk", repo=location, batch=1)
    _check_killed_and_resumed(cfg, location, lambda: _s3_chunk_bytes("killed/cube"), reference, tmp_path)
    # another machine (a fresh local folder) resumes from the repository alone: nothing is new
    again = ingest(_cfg(worlds[0].root, tmp_path / "elsewhere", store="icechunk", repo=location))
    assert again["new"] == [] and again["committed"] == []
    _assert_equal(open_cube(location).load(), reference)  # the URL opens the last commit too


@pytest.mark.slow
def test_a_reader_keeps_its_snapshot_while_a_later_run_commits(worlds, reference, tmp_path):
    out = tmp_path / "cube"
    ingest(_cfg(worlds[0].root, out, store="icechunk", batch=4))
    before = open_cube(out)  # lazy, on the repository's last commit
    snapshot = Ledger(out, "ingest").snapshot
    later = ingest(_cfg(worlds[1].root, out, store="icechunk", batch=4))
    assert len(later["committed"]) == 2 and Ledger(out, "ingest").snapshot != snapshot
    _assert_equal(before.load(), reference)  # read after the commit: still the first snapshot
    after = open_cube(out)
    assert after.sizes["time"] == reference.sizes["time"] + len(later["committed"])
    repo = CubeRepo(out / "cube.icechunk")
    _assert_equal(repo.open(snapshot=snapshot).load(), reference)  # time travel by snapshot id
    _assert_history_lists_items(repo, Ledger(out, "ingest"))
    # the first run: the repository's creation, then one commit per batch (4 Sentinel-2, 2 Landsat)
    assert [len(h["units"]) for h in repo.history()[:3]] == [0, 4, 2]


def test_a_repo_location_without_store_icechunk_is_refused(tmp_path):
    from harmonize.errors import HarmonizeError

    cfg = IngestConfig(source=str(tmp_path / "nowhere"), out=tmp_path / "out", repo="s3://bucket/cube")
    with pytest.raises(HarmonizeError, match="store: icechunk"):
        ingest(cfg)
    assert not (tmp_path / "out" / "ledger.json").exists()
