"""harmonize.world.server: a real `rustac serve` process on loopback, started and stopped cleanly."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pystac
import pytest

from harmonize.errors import HarmonizeError, WorldError
from harmonize.world.server import ServerStartError, find_rustac, serve, server_inputs

UTC = dt.timezone.utc


def _write_world(root: Path, n: int = 6) -> list[dict[str, Any]]:
    """A minimal world directory: collections/*.json, items.ndjson and items.parquet."""
    import rustac

    items = []
    for i in range(n):
        collection = "sentinel-2-l2a" if i % 2 else "landsat-c2-l2"
        item = pystac.Item(
            id=f"scene-{i}",
            collection=collection,
            bbox=[10.0, 45.0, 10.5, 45.5],
            geometry={
                "type": "Polygon",
                "coordinates": [[[10, 45], [10.5, 45], [10.5, 45.5], [10, 45.5], [10, 45]]],
            },
            datetime=dt.datetime(2023, 6, 1 + i, 10, tzinfo=UTC),
            properties={"eo:cloud_cover": 10.0 * i, "proj:code": "EPSG:32632"},
        )
        item.add_asset("red", pystac.Asset(href=(root / "data" / f"scene-{i}-red.tif").as_uri()))
        items.append(item.to_dict(include_self_link=False, transform_hrefs=False))
    (root / "collections").mkdir(parents=True)
    for cid in ("landsat-c2-l2", "sentinel-2-l2a"):
        coll = pystac.Collection(
            id=cid,
            description=cid,
            license="proprietary",
            extent=pystac.Extent(
                pystac.SpatialExtent([[10, 45, 10.5, 45.5]]), pystac.TemporalExtent([[None, None]])
            ),
        )
        (root / "collections" / f"{cid}.json").write_text(json.dumps(coll.to_dict(include_self_link=False)))
    (root / "items.ndjson").write_text("".join(json.dumps(d) + "\n" for d in items))
    rustac.write_sync(str(root / "items.parquet"), items)
    return items


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _post_search(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url + "/search",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("world")
    return root, _write_world(root)


def test_serves_a_world_directory_and_stops(world: tuple[Path, list[dict[str, Any]]]) -> None:
    root, items = world
    with serve(root) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.running()
        landing = _get(server.url + "/")
        assert any(link["rel"] == "search" for link in landing["links"])
        assert sorted(c["id"] for c in _get(server.url + "/collections")["collections"]) == [
            "landsat-c2-l2",
            "sentinel-2-l2a",
        ]
        found = _post_search(server.url, {"limit": 100})["features"]
        assert sorted(f["id"] for f in found) == sorted(d["id"] for d in items)
        by_id = {d["id"]: d for d in items}
        for f in found:  # hrefs come back absolute, exactly as written
            assert f["assets"]["red"]["href"] == by_id[f["id"]]["assets"]["red"]["href"]
            assert f["assets"]["red"]["href"].startswith("file:///")
        port = server.port
    assert server.process.returncode is not None
    assert not _port_open(port)


def test_world_directory_prefers_ndjson_and_loads_collections(
    world: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, _ = world
    inputs = server_inputs(root)
    assert [p.name for p in inputs] == ["landsat-c2-l2.json", "sentinel-2-l2a.json", "items.ndjson"]


def test_serves_explicit_files_including_geoparquet(world: tuple[Path, list[dict[str, Any]]]) -> None:
    # a lone parquet file would pick rustac's DuckDB backend, which needs a download; serve()
    # forces the in-memory backend, so this must answer at once with every item
    root, items = world
    with serve([root / "items.parquet"], startup_timeout=10) as server:
        found = _post_search(server.url, {"limit": 100, "collections": ["sentinel-2-l2a"]})["features"]
    assert sorted(f["id"] for f in found) == sorted(
        d["id"] for d in items if d["collection"] == "sentinel-2-l2a"
    )


def test_paging_uses_a_post_next_link(world: tuple[Path, list[dict[str, Any]]]) -> None:
    root, items = world
    with serve(root) as server:
        page = _post_search(server.url, {"limit": 4})
        nxt = [link for link in page["links"] if link["rel"] == "next"]
        assert len(page["features"]) == 4 and len(nxt) == 1 and nxt[0]["method"] == "POST"
        rest = _post_search(server.url, nxt[0]["body"])
    ids = [f["id"] for f in page["features"] + rest["features"]]
    assert sorted(ids) == sorted(d["id"] for d in items)


def test_port_in_use_surfaces_rustac_stderr(world: tuple[Path, list[dict[str, Any]]]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerStartError, match="(?i)in use"):
            with serve(world[0], port=port, startup_timeout=10):
                pass


def test_unparseable_file_surfaces_rustac_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "items.ndjson"
    bad.write_text("this is not json\n")
    with pytest.raises(ServerStartError, match="exited with code") as info:
        with serve([bad], startup_timeout=10):
            pass
    assert "stderr" in str(info.value)


def test_missing_inputs_are_world_errors(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match="harmonize world create"):
        server_inputs(tmp_path)
    with pytest.raises(WorldError, match="no such file"):
        server_inputs([tmp_path / "nope.parquet"])
    assert issubclass(ServerStartError, HarmonizeError)


def test_missing_rustac_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Path(find_rustac()).name.startswith("rustac")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerStartError, match="pip install rustac"):
        find_rustac()


def test_serve_forever_stops_cleanly_on_ctrl_c(world: tuple[Path, list[dict[str, Any]]]) -> None:
    code = (
        "import sys; from harmonize.world.server import serve_forever\n"
        "sys.exit(serve_forever(sys.argv[1], on_ready=lambda s: print(s.url, flush=True)))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(world[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C as a terminal delivers it: pytest-xdist's workers ignore SIGINT, and a child
        # inherits an ignored signal, so without this the server never sees the interrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        assert len(_post_search(url, {"limit": 100})["features"]) == len(world[1])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not _port_open(int(url.rsplit(":", 1)[1]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is a Linux feature")
def test_server_dies_with_a_killed_parent(world: tuple[Path, list[dict[str, Any]]]) -> None:
    code = (
        "import sys, time; from harmonize.world.server import serve\n"
        "with serve(sys.argv[1]) as s:\n    print(s.url, s.process.pid, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(world[0])], stdout=subprocess.PIPE, text=True)
    server_pid = None
    try:
        assert proc.stdout is not None
        url, pid = proc.stdout.readline().split()
        port, server_pid = int(url.rsplit(":", 1)[1]), int(pid)
        assert _port_open(port)
        proc.kill()  # SIGKILL: no finally block, no context manager exit runs
        proc.wait()
        deadline = time.monotonic() + 10
        while _port_open(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _port_open(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if server_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGKILL)  # only if the test failed: never leave it running
