"""Data-loss, security and bad-input faults an outside probe found (issue 17): each test
reproduces one fault on the code before its fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from harmonize.errors import ServerStartError, TimeSeriesError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ overrides


def test_override_value_with_a_hash_stays_literal():
    from harmonize.overrides import apply_overrides

    got = apply_overrides({}, ["out=/path/proj #2", "name=a#b", "n=3", "bbox=[1, 2, 3, 4]"])
    assert got == {"out": "/path/proj #2", "name": "a#b", "n": 3, "bbox": [1, 2, 3, 4]}
    assert apply_overrides({}, ["out='/x #y'"]) == {"out": "/x #y"}


# ------------------------------------------------------------------ gap_fill settings


def _series() -> xr.DataArray:
    times = pd.date_range("2023-01-01", periods=10, freq="7D")
    return xr.DataArray(
        np.linspace(0.2, 0.8, 10, dtype="float32")[:, None, None] * np.ones((10, 2, 2), "float32"),
        dims=("time", "y", "x"),
        coords={"time": times},
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_gap": "-1D"}, "max_gap"),
        ({"freq": "0D"}, "freq"),
        ({"freq": "1ns"}, "steps"),
    ],
)
def test_gap_fill_refuses_nonsense_axis_settings(kwargs, match):
    from harmonize.gapfill import gap_fill

    with pytest.raises(TimeSeriesError, match=match):
        gap_fill(_series(), method="linear", **kwargs)


# ------------------------------------------------------------------ timeseries CLI


def test_harmonize_timeseries_imports_rioxarray_itself(tmp_path):
    """In a fresh process (nothing imported rioxarray before the command), it works."""
    import rioxarray  # noqa: F401 - writing the input store here only

    from harmonize.io import write_zarr

    times = pd.date_range("2023-03-01", periods=12, freq="5D")
    rng = np.random.default_rng(0)
    shape = (12, 4, 4)
    ds = xr.Dataset(
        {
            "red": (("time", "y", "x"), np.full(shape, 0.05, "float32")),
            "nir": (("time", "y", "x"), (0.3 + rng.normal(0, 0.01, shape)).astype("float32")),
            "clear": (("time", "y", "x"), np.ones(shape, bool)),
        },
        coords={"time": times, "y": 4e6 - 10 * np.arange(4), "x": 5e5 + 10 * np.arange(4),
                "sensor": ("time", ["sentinel-2"] * 12)},
    ).rio.write_crs("EPSG:32633")
    write_zarr(ds, tmp_path / "s2.zarr")
    cmd = [sys.executable, "-m", "harmonize.cli", "timeseries", str(tmp_path / "s2.zarr"),
           str(tmp_path / "out.zarr"), "--method", "linear"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert np.isfinite(xr.open_zarr(tmp_path / "out.zarr")["ndvi"].values).all()


# ------------------------------------------------------------------ serve on a busy port


def test_serve_on_a_busy_port_does_not_yield_another_server(tiny_world):
    from harmonize.world.server import serve

    with serve(tiny_world.root) as first, pytest.raises(ServerStartError, match="in use"):
        with serve(tiny_world.root, port=first.port):
            pytest.fail("serve() yielded the other server's URL")


def test_serve_on_a_port_held_by_any_socket_is_refused(tiny_world):
    from harmonize.world.server import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ServerStartError, match="in use"), serve(tiny_world.root, port=s.getsockname()[1]):
            pass


# ------------------------------------------------------------------ ledger vs. store existence


def test_a_committed_store_deleted_by_hand_is_ingested_again(tiny_world, tmp_path):
    import shutil

    from pipelines.core.ledger import Ledger
    from pipelines.stages.ingest import IngestConfig, ingest

    cfg = IngestConfig(source=str(tiny_world.root), out=tmp_path / "cube", scheduler="synchronous",
                       chunk=64, coregister=False, datetime="2023-05-01/2023-05-06")  # 3 scenes, both sensors
    first = ingest(cfg)
    assert len(first["committed"]) == 3
    gone = sorted(first["committed"])[0]
    shutil.rmtree(Ledger(cfg.out, "ingest").unit_path(gone))
    again = ingest(cfg)
    assert again["committed"] == [gone]
    assert Ledger(cfg.out, "ingest").unit_path(gone).is_dir()


# ------------------------------------------------------------------ credentials never stored or logged

_SECRETS = ("secret", "TOPSECRET", "dXNlcjpzZWNyZXQ=")  # the password, the token, Basic user:secret


def _credentialed(url: str) -> str:
    return url.replace("http://", "http://user:secret@").rstrip("/") + "/?token=TOPSECRET"


def test_redact_url_and_text_mask_userinfo_query_and_headers():
    from harmonize.redact import redact_text, redact_url

    assert redact_url("http://user:secret@host:81/api?token=abc&x=1") == "http://***@host:81/api?token=***&x=***"
    assert redact_url("/local/items.parquet") == "/local/items.parquet"
    line = ("GET http://u:secret@h/?token=TOPSECRET Headers: {'Accept': '*/*', "
            "'Authorization': 'Basic dXNlcjpzZWNyZXQ='} and \"GET /search?sig=TOPSECRET HTTP/1.1\"")
    clean = redact_text(line)
    assert not any(s in clean for s in _SECRETS), clean
    assert "'Accept': '*/*'" in clean and "Authorization" in clean


def test_credentials_in_a_stac_url_reach_no_file_and_no_log(tiny_world, tmp_path):
    """ingest -vv from ``http://user:secret@host/?token=…``: neither the ledger, nor any store's
    zarr.json, nor the debug log (request lines, Authorization header) holds a credential."""
    from harmonize.world.server import serve

    out = tmp_path / "cube"
    with serve(tiny_world.root) as server:
        cmd = [sys.executable, "-m", "pipelines.stages.ingest", str(REPO / "pipelines/configs/ingest.yaml"),
               f"source={_credentialed(server.url)}", f"out={out}", "scheduler=synchronous",
               "coregister=false", "chunk=64", "datetime=2023-05-01/2023-05-04", "-vv"]  # one scene a sensor
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Authorization" in log and "127.0.0.1" in log  # the lines are there, masked
    leaks = [s for s in _SECRETS if s in log]
    assert not leaks, [line for line in log.splitlines() if any(s in line for s in leaks)][:5]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "zarr.json" for p in files)
    for p in files:
        text = p.read_bytes().decode("utf-8", "replace")
        assert not any(s in text for s in _SECRETS), p
    assert "***@127.0.0.1" in (out / "ledger.json").read_text()


def test_urllib3_retry_warnings_do_not_print_the_token(caplog):
    """A server that drops every connection: urllib3 warns on each retry with the request path."""
    import threading

    from harmonize.catalog import search
    from harmonize.errors import ServerUnreachableError

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def drop() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.close()

    t = threading.Thread(target=drop, daemon=True)
    t.start()
    try:
        url = f"http://user:secret@127.0.0.1:{srv.getsockname()[1]}/?token=TOPSECRET"
        with caplog.at_level("DEBUG"), pytest.raises(ServerUnreachableError) as err:
            search(url, retries=2, backoff=0, timeout=2)
    finally:
        stop.set()
        t.join()
        srv.close()
    retries = [r for r in caplog.records if "Retrying" in r.getMessage()]
    assert retries, [r.getMessage() for r in caplog.records]
    text = "\n".join(r.getMessage() for r in caplog.records) + str(err.value)
    assert "token=***" in text
    assert not any(s in text for s in _SECRETS), text


# ------------------------------------------------------------------ infer: COGs, failed runs, weights


def _infer_config(world, package, out, **kw):
    from pipelines.stages.infer import InferStageConfig

    return InferStageConfig(source="search", catalog=str(world.items_path), bbox=world.bbox,
                            datetime="2023-05-10/2023-05-30",  # three Landsat dates: enough, fast
                            model=str(package), device="cpu", out=out, scheduler="synchronous", **kw)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Two tiny packages with different (untrained) weights."""
    import torch

    from harmonize.model import build_model, save_model_package

    root = tmp_path_factory.mktemp("packages")
    torch.manual_seed(0)
    save_model_package(build_model("tiny"), root / "a")
    torch.manual_seed(1)
    m = build_model("tiny")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01)
    save_model_package(m, root / "b")
    return root


def test_infer_killed_while_writing_cogs_writes_them_on_the_rerun(
    tiny_world, packages, tmp_path, monkeypatch
):
    import harmonize.io
    from pipelines.stages.infer import infer_stage

    config = _infer_config(tiny_world, packages / "a", tmp_path / "out", cogs=True)
    real, calls = harmonize.io.write_cogs, []

    def dies_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job killed in the middle of its COGs
        return real(*args, **kwargs)

    monkeypatch.setattr(harmonize.io, "write_cogs", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        infer_stage(config)
    monkeypatch.setattr(harmonize.io, "write_cogs", real)
    assert len(list((tmp_path / "out" / "cogs").glob("*.tif"))) == 1

    again = infer_stage(config)
    assert again["new"] == [] and again["committed"] == []
    n = again["dates"]
    assert n >= 3 and len(again["cogs"]) == len(again["stac_items"]) == n - 1
    assert len(list((tmp_path / "out" / "cogs").glob("*.tif"))) == n
    assert len(list((tmp_path / "out" / "items").glob("*.json"))) == n
    assert infer_stage(config)["cogs"] == []  # now nothing is missing


def test_a_failed_infer_run_keeps_the_earlier_dates(tiny_world, packages, tmp_path):
    """A second run with an unreadable model (its weights truncated) must not forget the dates
    the first model wrote."""
    import shutil

    from harmonize.errors import ModelError
    from pipelines.core.ledger import Ledger
    from pipelines.stages.infer import infer_stage

    first = infer_stage(_infer_config(tiny_world, packages / "a", tmp_path / "out"))
    broken = tmp_path / "broken"
    shutil.copytree(packages / "b", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError):
        infer_stage(_infer_config(tiny_world, broken, tmp_path / "out"))
    ledger = Ledger(tmp_path / "out", "infer")
    assert sorted(n for n in ledger.units if ledger.committed(n)) == sorted(first["committed"])


def test_weights_that_do_not_match_their_checksum_are_refused(packages, tmp_path):
    import shutil

    from harmonize.errors import WeightsChecksumError
    from harmonize.model import load_model_package

    swapped = tmp_path / "swapped"
    shutil.copytree(packages / "a", swapped)
    shutil.copy(packages / "b" / "model.safetensors", swapped / "model.safetensors")  # valid, other
    load_model_package(packages / "b")
    with pytest.raises(WeightsChecksumError, match="file:checksum"):
        load_model_package(swapped)


def test_nan_weights_are_refused_before_anything_is_written(tiny_world, tmp_path):
    import torch

    from harmonize.errors import NonFiniteWeightsError
    from harmonize.model import build_model, load_model_package, save_model_package
    from pipelines.stages.infer import infer_stage

    m = build_model("tiny")
    with torch.no_grad():
        next(iter(m.parameters())).fill_(float("nan"))
    save_model_package(m, tmp_path / "nan")
    with pytest.raises(NonFiniteWeightsError, match="NaN"):
        load_model_package(tmp_path / "nan")
    with pytest.raises(NonFiniteWeightsError):
        infer_stage(_infer_config(tiny_world, tmp_path / "nan", tmp_path / "out"))
    assert not (tmp_path / "out" / "dates").exists()


# ------------------------------------------------------------------ odd characters in paths


@pytest.fixture(scope="module")
def odd_world(tmp_path_factory):
    """A tiny world in a folder whose name has a space, non-ASCII letters and a '#'."""
    from harmonize.world import WorldConfig, create_world

    root = tmp_path_factory.mktemp("odd") / "mein wörld #1"
    return create_world(root, WorldConfig.tiny(end="2023-05-06"), progress=False)  # 2 S2, 1 Landsat


def test_percent_encoded_hrefs_of_a_world_with_odd_characters_are_read(odd_world):
    from harmonize.catalog import search
    from harmonize.cube import load_cube

    items = search(odd_world.root, include_pan=True)
    href = next(iter(items[0].assets.values())).href
    assert "%20" in href  # a correct URI percent-encodes the folder name
    s2 = [i for i in items if i.collection_id == "sentinel-2-l2a"][:1]
    red = load_cube(s2, bands=["red"])["red"].compute()
    assert np.isfinite(red.values).mean() > 0.9
    landsat = [i for i in items if i.collection_id.startswith("landsat")]
    l2 = next(i for i in landsat if "L2SP" in i.id)
    shifts = pd.DataFrame({"item_id": [l2.id], "dx": [10.0], "dy": [-5.0], "flagged": [False]},
                          index=pd.DatetimeIndex([pd.Timestamp(l2.datetime).tz_localize(None)], name="time"))
    cube = load_cube(landsat, bands=["red"], shifts=shifts, bbox=odd_world.bbox)  # vrt:// paths
    assert np.isfinite(cube["red"].compute().values).any()


def test_cogs_and_stac_items_in_a_folder_with_a_hash(odd_world, tmp_path):
    import pystac
    import rasterio

    from harmonize.catalog import search
    from harmonize.cube import load_cube
    from harmonize.io import write_cogs, write_stac_items
    from harmonize.items import local_href

    s2 = [i for i in search(odd_world.root, sensors=("sentinel-2",))][:1]
    ds = load_cube(s2, bands=["red", "nir"]).compute()
    out = tmp_path / "proj #2"
    cogs = write_cogs(ds, out / "cogs")
    items = write_stac_items(cogs, ds, out / "items")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj #2"]  # nothing outside out
    written = sorted((out / "items").glob("*.json"))
    assert [p.name for p in written] == [f"{items[0].id}.json"]
    back = pystac.Item.from_dict(__import__("json").loads(written[0].read_text()))
    with rasterio.open(local_href(next(iter(back.assets.values())).href)) as src:
        np.testing.assert_allclose(src.read(1), ds["red"].values[0], equal_nan=True)


# ------------------------------------------------------------------ clear errors: item files and APIs


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b'{"type": "FeatureCollection", "features": [{"type": "Fea', "truncated"),
        (b"hello world\n", "cannot be read as STAC items"),
        (b'{"a": 1}\n', "not STAC items"),
        (b'{"type": "FeatureCollection", "features": []}', "no STAC items"),
    ],
)
def test_bad_item_files_are_named(tmp_path, content, match):
    from harmonize.catalog import search
    from harmonize.errors import ItemFileError

    path = tmp_path / "items.json"
    path.write_bytes(content)
    with pytest.raises(ItemFileError, match=match) as err:
        search(path)
    assert str(path) in str(err.value)


def test_a_missing_item_file_is_named(tmp_path):
    from harmonize.catalog import search
    from harmonize.errors import ItemFileNotFoundError

    with pytest.raises(ItemFileNotFoundError, match="missing.json"):
        search(tmp_path / "missing.json")


class _FakeApi:
    """A loopback HTTP server answering GETs with a STAC landing page (or ``get``) and
    searches with ``post``; ``drip`` sends the search answer one byte every ``drip`` seconds."""

    def __init__(self, get: bytes | None = None, post: bytes = b"", drip: float | None = None) -> None:
        import http.server
        import json
        import threading
        import time

        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: bytes, ctype: str = "application/json", slow: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(len(body)) if slow else []:
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(api.drip)
                if not slow:
                    self.wfile.write(body)

            def do_GET(self):
                base = f"http://127.0.0.1:{self.server.server_port}"
                if api.get is not None:
                    return self._send(api.get, "text/html")
                if self.path.startswith("/collections/"):
                    cid = self.path.split("/")[2]
                    return self._send(json.dumps({
                        "type": "Collection", "id": cid, "stac_version": "1.0.0", "description": "d",
                        "license": "l", "links": [],
                        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                   "temporal": {"interval": [[None, None]]}}}).encode())
                return self._send(json.dumps({
                    "type": "Catalog", "id": "fake", "stac_version": "1.0.0", "description": "d",
                    "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                   "https://api.stacspec.org/v1.0.0/collections",
                                   "https://api.stacspec.org/v1.0.0/item-search"],
                    "links": [{"rel": "search", "href": base + "/search", "method": "POST",
                               "type": "application/geo+json"},
                              {"rel": "self", "href": base + "/"}, {"rel": "root", "href": base + "/"}],
                }).encode())

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._send(api.post, slow=api.drip is not None)

        self.get, self.post, self.drip = get, post, drip
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("api", "match"),
    [
        ({"get": b"<html><body>Please log in</body></html>"}, "not STAC"),
        ({"get": b"\x00\x01garbage{{"}, "not STAC"),
        ({"post": b'{"hello": "world"}'}, "not an ItemCollection"),
        ({"post": b"<html>oops</html>"}, "not STAC"),
        ({"post": b'{"type": "FeatureCollection", "features": [{"type": "Feature", "id": 3}]}'}, "not STAC"),
    ],
)
def test_an_api_answering_something_else_than_stac_is_named(api, match):
    from harmonize.catalog import search
    from harmonize.errors import StacResponseError

    with _FakeApi(**api) as url, pytest.raises(StacResponseError, match=match) as err:
        search(url, retries=0)
    assert "127.0.0.1" in str(err.value)


def test_a_server_dripping_its_answer_hits_the_total_timeout():
    """One byte every 0.3 s never trips the 10 s read timeout; the 1.5 s total one does."""
    import time

    from harmonize.catalog import search
    from harmonize.errors import ServerUnreachableError

    body = b'{"type": "FeatureCollection", "features": [], "links": []}'
    with _FakeApi(post=body, drip=0.3) as url:
        t0 = time.monotonic()
        with pytest.raises(ServerUnreachableError, match="total_timeout"):
            search(url, retries=0, timeout=10, total_timeout=1.5)
        assert time.monotonic() - t0 < 6
        with _FakeApi(post=body, drip=0.001) as fast:  # a slow but finishing answer still works
            assert len(search(fast, retries=0, timeout=10, total_timeout=20)) == 0


def test_harmonize_search_on_a_dripping_server_stops_at_its_total_timeout():
    """The command line's --total-timeout: a named one-line error after it, not a hang."""
    import time

    import pipelines.cli  # noqa: F401 - imported before the clock starts (seconds on a busy box)

    body = b'{"type": "FeatureCollection", "features": [], "links": []}'
    with _FakeApi(post=body, drip=0.3) as url:
        t0 = time.monotonic()
        done = _cli("search", url, "--timeout", "10", "--total-timeout", "1.5")
        assert time.monotonic() - t0 < 8
    assert done.exit_code == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "total_timeout=1.5 s" in done.stderr and "127.0.0.1" in done.stderr, done.stderr[-2000:]


def test_a_local_file_with_only_landsat_items_searches_what_it_has(tiny_world, tmp_path):
    import json

    from harmonize.catalog import search
    from harmonize.errors import UnknownCollectionError

    landsat = search(tiny_world.root, sensors=("landsat",))
    path = tmp_path / "landsat.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [i.to_dict() for i in landsat]}))
    found = search(path)  # default sensors: both; the file has Landsat only
    assert [i.id for i in found] == [i.id for i in landsat]
    with pytest.raises(UnknownCollectionError, match="sentinel-2-l2a"):
        search(path, collections=["sentinel-2-l2a"])  # asked for by name: still an error


# ------------------------------------------------------------------ clear errors: CLI and configs


def _cli(*args: str):
    """The installed ``harmonize`` command run in this process (``result.stderr``, exit code)."""
    from click.testing import CliRunner

    from pipelines.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_bad_bbox_max_cloud_yaml_and_settings_are_one_line_errors(tiny_world, tmp_path):
    cases = [
        (["search", str(tiny_world.root), "--bbox", "1,2,a,4"], "not four comma-separated numbers"),
        (["search", str(tiny_world.root), "--max-cloud", "120"], "between 0 and 100"),
        (["world", "create", str(tmp_path / "w"), "--size-km", "-3"], "size_km: Input should be greater"),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: train\na: [1,\n")
    cases += [
        (["train", str(bad)], f"{bad} is not valid YAML at line 3"),
        (["run", str(bad)], f"{bad} is not valid YAML at line 3"),
        (["run", str(REPO / "pipelines/configs/ingest.yaml"), "chunk=-1", "sourse=x", "--dry-run"],
         "chunk: Input should be greater than 0"),
    ]
    for args, match in cases:
        done = _cli(*args)
        assert done.exit_code == 2, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        assert match in done.stderr, (args, done.stderr[-2000:])
    assert "sourse: unknown setting" in done.stderr


def test_an_unreachable_scheduler_is_a_named_error():
    from harmonize.errors import HarmonizeError
    from pipelines.core.cluster import dask_scheduler

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HarmonizeError, match=f"tcp://127.0.0.1:{port}.*--scheduler local"):
        with dask_scheduler(f"tcp://127.0.0.1:{port}", connect_timeout=2):
            pytest.fail("connected to nothing")


def test_disk_full_during_ingest_names_the_store_and_commits_nothing(tiny_world, tmp_path):
    """The file-size limit (RLIMIT_FSIZE) makes the kernel refuse the writes of a store's chunks,
    as a full disk would: the run fails with a StoreWriteError naming the store, the ledger
    lists no unit, no partial store is left, and a run with room resumes."""
    import resource
    import signal

    from harmonize.errors import StoreWriteError
    from pipelines.core.ledger import Ledger
    from pipelines.stages.ingest import IngestConfig, ingest

    cfg = IngestConfig(source=str(tiny_world.root), out=tmp_path / "cube", scheduler="synchronous",
                       chunk=64, coregister=False, datetime="2023-05-01/2023-05-06", batch=1)
    ingest(cfg.model_copy(update={"datetime": "2023-05-01/2023-05-01"}))  # ledger and grid exist
    before = Ledger(cfg.out, "ingest").units
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, old[1]))
    try:
        with pytest.raises(StoreWriteError, match=r"scenes|\.zarr") as err:
            ingest(cfg)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)
    assert "Nothing of it was committed" in str(err.value)
    assert Ledger(cfg.out, "ingest").units == before
    assert not [p for p in cfg.out.rglob("*") if p.name.startswith(".tmp-")]
    again = ingest(cfg)
    assert again["committed"] and all(Ledger(cfg.out, "ingest").committed(n) for n in again["committed"])


# ------------------------------------------------------------------ GDAL retries over HTTP


def test_odc_loaders_gdal_retry_options_reach_every_asset_read():
    """odc-loader's reader sets GDAL_HTTP_MAX_RETRY/GDAL_HTTP_RETRY_DELAY; harmonize's driver
    keeps them beside its own options."""
    from harmonize.cube.gdal import Driver

    env = Driver(strict=True, gdal_env={"AWS_REQUEST_PAYER": "requester"}).capture_env()
    assert int(env["GDAL_HTTP_MAX_RETRY"]) >= 3 and float(env["GDAL_HTTP_RETRY_DELAY"]) > 0
    assert env["AWS_REQUEST_PAYER"] == "requester"


class _FlakyFiles:
    """Serves a folder over HTTP with byte ranges (as GDAL's /vsicurl/ reads COGs), answering the
    first ``failures`` requests of each file with 503 (a transient server error), then the file."""

    def __init__(self, root: Path, failures: int = 2) -> None:
        import http.server
        import threading
        from collections import Counter
        from urllib.parse import unquote

        files = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, body: bool) -> None:
                name = unquote(self.path.lstrip("/").split("?")[0])
                files.seen[name] += 1
                if files.seen[name] <= failures:
                    files.failed += 1
                    return self._empty(503)
                path = files.root / name
                if not path.is_file():
                    return self._empty(404)
                data = path.read_bytes()
                rng = self.headers.get("Range")
                if rng:
                    lo, hi = rng.split("=")[1].split("-")
                    lo, hi = int(lo), min(int(hi or len(data) - 1), len(data) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {lo}-{hi}/{len(data)}")
                    data = data[lo:hi + 1]
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self):
                self._serve(True)

            def do_HEAD(self):
                self._serve(False)

        self.root, self.seen, self.failed = root, Counter(), 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _FlakyFiles:
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _served(item, root: Path, url: str):
    """A copy of ``item`` whose assets point at ``url`` instead of the folder ``root``."""
    from harmonize.items import local_href

    remote = item.clone()
    for a in remote.assets.values():
        a.href = f"{url}/{Path(local_href(a.href)).relative_to(root)}"
    return remote


def test_gdal_retries_a_cog_answering_503_first_and_fails_named_without_retries(tiny_world, monkeypatch):
    """A server answers the first two requests of each COG with 503: the load retries and equals
    the local read; with the user's GDAL_HTTP_MAX_RETRY=0 it fails with AssetReadError naming it."""
    from harmonize.catalog import search
    from harmonize.cube import load_cube
    from harmonize.errors import AssetReadError

    local = search(tiny_world.root, sensors=("sentinel-2",))[:1]
    root = tiny_world.root.resolve()
    expected = load_cube(local, bands=["red"])["red"].compute()
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    with _FlakyFiles(root) as server:
        got = load_cube([_served(local[0], root, server.url)], bands=["red"])["red"].compute()
    assert server.failed >= 2, "the server did fail requests: GDAL retried them"
    np.testing.assert_array_equal(got.values, expected.values)
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    with _FlakyFiles(root) as server, pytest.raises(AssetReadError) as err:  # a new port: no cache
        load_cube([_served(local[0], root, server.url)], bands=["red"])["red"].compute()
    assert server.url in str(err.value) and "B04" in str(err.value)


def test_an_item_without_assets_is_told_so_not_that_its_collection_is_unknown(tiny_world):
    from harmonize.catalog import search
    from harmonize.errors import MissingAssetError
    from harmonize.items import parse_items

    item = search(tiny_world.root, sensors=("sentinel-2",), max_items=1)[0].clone()
    item.assets = {}
    with pytest.raises(MissingAssetError, match="has assets none") as err:
        parse_items([item])
    assert "no provider profile" not in str(err.value) and "sentinel-2-l2a" in str(err.value)


# ------------------------------------------------------------------ default CRS


SHARED = REPO.parent / "shared" / "stac-items"


def test_default_grid_crs_is_the_scenes_native_crs_not_the_aoi_centres_zone(tiny_world):
    """Real Earth Search Landsat scene in EPSG:32613 with an AOI whose centre lies in zone 14:
    the grid stays in 32613 (nothing reprojected); Sentinel-2's CRS wins over Landsat's."""
    import dataclasses

    import pystac

    from harmonize.catalog import search
    from harmonize.grid import aoi_crs, common_geobox
    from harmonize.items import parse_item, parse_items

    path = SHARED / "earthsearch-v1_landsat-c2-l2_LC08_L2SP_033032_20231008_02_T1.json"
    if not path.is_file():
        pytest.skip(f"real provider items not found at {SHARED}")
    scene = parse_item(pystac.Item.from_file(str(path)))
    bbox = (-104.0, 40.0, -99.6, 40.5)  # centre -101.8: UTM zone 14; overlaps the scene (zone 13)
    from odc.geo import geom

    assert aoi_crs(geom.box(*bbox, "epsg:4326")).epsg == 32614
    assert common_geobox([scene], bbox=bbox).crs.epsg == 32613

    scenes = parse_items(search(tiny_world.root, include_pan=True))
    s2_epsg = next(s for s in scenes if s.sensor == "sentinel-2").crs
    moved = [dataclasses.replace(s, crs="EPSG:32601") if s.sensor == "landsat" else s for s in scenes]
    assert str(common_geobox(moved).crs).upper() == str(s2_epsg).upper()
    only_landsat = [s for s in moved if s.sensor == "landsat"]
    assert common_geobox(only_landsat).crs.epsg == 32601


# ------------------------------------------------------------------ footprint vs. file bounds


def _with_crs(doc: dict, code: str) -> dict:
    import copy

    doc = copy.deepcopy(doc)
    for holder in [doc["properties"], *doc["assets"].values()]:
        for k in ("proj:code", "proj:epsg"):
            if k in holder:
                holder[k] = code if k == "proj:code" else int(code.split(":")[1])
    return doc


@pytest.mark.parametrize("name", [
    "earthsearch-v1_sentinel-2-l2a_S2A_13TDE_20231008_0_L2A.json",
    "earthsearch-v1_landsat-c2-l2_LC08_L2SP_033032_20231008_02_T1.json",
])
def test_an_item_whose_proj_code_disagrees_with_its_footprint_is_named(name):
    import json
    import warnings

    import pystac

    from harmonize.errors import FootprintMismatchWarning
    from harmonize.items import parse_item

    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"real provider items not found at {SHARED}")
    doc = json.loads(path.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error", FootprintMismatchWarning)
        parse_item(pystac.Item.from_dict(doc))  # as published: consistent
    wrong = pystac.Item.from_dict(_with_crs(doc, "EPSG:32633"))  # another hemisphere's zone
    with pytest.warns(FootprintMismatchWarning, match=doc["id"]):
        parse_item(wrong)


def test_a_world_item_with_a_wrong_proj_code_is_named_when_it_loads_as_nan(tiny_world):
    import pystac

    from harmonize.catalog import search
    from harmonize.cube import load_cube
    from harmonize.errors import FootprintMismatchWarning

    item = search(tiny_world.root, sensors=("sentinel-2",), max_items=1)[0]
    from harmonize.items import item_crs

    zone = int(str(item_crs(item)).split(":")[1])
    wrong = pystac.Item.from_dict(_with_crs(item.to_dict(), f"EPSG:{zone + 2}"))
    with pytest.warns(FootprintMismatchWarning, match=item.id):
        cube = load_cube([wrong], bands=["red"], bbox=tiny_world.bbox)
    assert np.isnan(cube["red"].values).all()  # what the warning is about


# ------------------------------------------------------------------ progress on a terminal


def test_stage_runs_show_a_bar_on_a_terminal_and_log_lines_otherwise(tiny_world, tmp_path, caplog):
    """A terminal (a pty) gets a bar of committed stores and not their lines; a pipe (a job's
    log) keeps the lines; ``progress=false`` wins over the terminal."""
    import io
    import logging
    import os

    from pipelines.core.cli import progress_bars, wants_progress

    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        assert wants_progress({}, [], tty)
        assert not wants_progress({}, ["progress=false"], tty)
        assert not wants_progress({"progress": False}, [], tty)
    os.close(master)
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe:
        assert not wants_progress({}, [], pipe)
    os.close(read)

    from pipelines.stages.ingest import IngestConfig, ingest

    cfg = IngestConfig(source=str(tiny_world.root), out=tmp_path / "cube", scheduler="synchronous",
                       chunk=64, coregister=False, datetime="2023-05-01/2023-05-06")  # 3 scenes
    screen = io.StringIO()
    root = logging.getLogger()
    with caplog.at_level(logging.INFO):
        root.handlers.append(caplog.handler) if caplog.handler not in root.handlers else None
        with progress_bars(True, stream=screen):
            report = ingest(cfg)
    n = len(report["committed"])
    assert n >= 3 and f"committed: {n}" in screen.getvalue().replace("\r", "\n")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("committed scenes/")]
    assert lines == []  # the bar replaced them
    caplog.clear()
    with caplog.at_level(logging.INFO), progress_bars(False):
        again = ingest(cfg.model_copy(update={"datetime": "2023-05-11/2023-05-12"}))
    assert again["committed"]
    assert any(r.getMessage().startswith("committed scenes/") for r in caplog.records)


# ------------------------------------------------------------------ checkpoints


class _NotATensor:
    """A pickled object in an optimizer file (what a weights-only load refuses)."""


def test_a_pickled_optimizer_file_is_refused_without_advising_weights_only_false(tmp_path):
    import json

    import torch

    from harmonize.errors import ModelError
    from harmonize.model import build_model
    from harmonize.train.checkpoints import load_checkpoint, save_weights

    model = build_model("tiny")
    ckpt = tmp_path / "epoch-0001"
    ckpt.mkdir()
    (ckpt / "state.json").write_text(json.dumps({"epoch": 1, "unet_config": model.config.model_dump()}))
    save_weights(model, ckpt / "model.safetensors")
    torch.save({"optimizer": _NotATensor()}, ckpt / "optimizer.pt")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(ModelError, match="optimizer.pt holds pickled") as err:
        load_checkpoint(ckpt, model, opt, sched, None, torch.device("cpu"), epochs=3)
    assert "weights_only=False" not in str(err.value)


# ------------------------------------------------------------------ time series inputs


def _ndvi_cube(n: int, sensor: str) -> xr.Dataset:
    import rioxarray  # noqa: F401 - .rio

    shape = (n, 2, 2)
    bands = {b: (("time", "y", "x"), np.full(shape, v, "float32"))
             for b, v in {"blue": 0.03, "green": 0.05, "red": 0.05, "nir": 0.3}.items()}
    return xr.Dataset(
        {**bands, "clear": (("time", "y", "x"), np.ones(shape, bool))},
        coords={"time": pd.date_range("2023-05-01", periods=n, freq="5D"), "y": [10.0, 0.0],
                "x": [0.0, 10.0], "sensor": ("time", [sensor] * n)},
    ).rio.write_crs("EPSG:32633")


def test_a_one_date_series_with_harmonic_and_a_landsat_cube_as_s2_are_named():
    from harmonize.timeseries import ndvi_timeseries

    with pytest.raises(TimeSeriesError, match="harmonic.*1 date"):
        ndvi_timeseries(_ndvi_cube(1, "sentinel-2"), method="harmonic")
    with pytest.raises(TimeSeriesError, match="Sentinel-2 argument holds \\['landsat'\\]"):
        ndvi_timeseries(_ndvi_cube(5, "landsat"), method="linear")
    _, filled = ndvi_timeseries(_ndvi_cube(9, "sentinel-2"), method="harmonic", n_harmonics=2)
    assert np.isfinite(filled.values).all()  # enough dates: the fit works


# ------------------------------------------------------------------ boto3 credentials


def test_boto3_profile_and_env_credentials_reach_gdal_and_s3fs(tmp_path, monkeypatch, tiny_world):
    """A shared-credentials profile and environment keys, resolved by boto3's chain, are what
    GDAL and s3fs then sign with: a COG uploaded to a moto S3 server on loopback reads back."""
    import boto3
    import rasterio
    import s3fs
    from moto.server import ThreadedMotoServer

    from harmonize.credentials import configure_s3_access

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        # configure_s3_access writes os.environ itself: every variable it may set is registered
        # with monkeypatch first, so none leaks into later tests (a leaked AWS_REQUEST_PAYER hung
        # test_s3's reads from its own moto server)
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_REQUEST_PAYER", "AWS_REGION"):
            monkeypatch.delenv(var, raising=False)
        creds = tmp_path / "credentials"
        creds.write_text(
            "[analyst]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profilesecret\n"
        )
        for k, v in {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_S3_ENDPOINT": f"{host}:{port}",
                     "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_HTTPS": "NO",
                     "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"}.items():
            monkeypatch.setenv(k, v)
        opts = configure_s3_access("analyst", requester_pays=True)
        assert opts["AWS_ACCESS_KEY_ID"] == "AKIDPROFILE"
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == "profilesecret"
        assert os.environ["AWS_REQUEST_PAYER"] == "requester"
        cog = next(tiny_world.root.rglob("B04.tif"))
        boto3.client("s3").create_bucket(Bucket="creds")
        boto3.client("s3").upload_file(str(cog), "creds", "b04.tif")
        with rasterio.Env(), rasterio.open("/vsis3/creds/b04.tif") as src, rasterio.open(cog) as local:
            np.testing.assert_array_equal(src.read(1), local.read(1))
        assert s3fs.S3FileSystem().ls("creds") == ["creds/b04.tif"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")  # the environment comes first in the chain
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
        assert configure_s3_access()["AWS_ACCESS_KEY_ID"] == "AKIDENV"
    finally:
        server.stop()


def test_a_truncated_checkpoint_names_the_file_and_the_earlier_one(tmp_path):
    import json

    import torch

    from harmonize.errors import ModelError
    from harmonize.model import build_model
    from harmonize.train.checkpoints import load_checkpoint, save_weights

    model = build_model("tiny")
    for name in ("epoch-0001", "epoch-0002"):
        ckpt = tmp_path / name
        ckpt.mkdir()
        (ckpt / "state.json").write_text(json.dumps({"epoch": 1, "unet_config": model.config.model_dump()}))
        save_weights(model, ckpt / "model.safetensors")
    weights = tmp_path / "epoch-0002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])  # killed while copying, disk trouble
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(ModelError, match="epoch-0002.*corrupt.*epoch-0001"):
        load_checkpoint(tmp_path / "epoch-0002", model, opt, sched, None, torch.device("cpu"), epochs=3)


def test_resume_auto_falls_back_from_a_corrupt_latest_checkpoint(tmp_path, caplog):
    """A run killed while its disk failed: the latest checkpoint's weights are truncated.
    ``resume="auto"`` names it and resumes from the one before; with every one corrupt the load
    still says which file is broken."""
    import torch

    from harmonize.errors import ModelError
    from harmonize.model import build_model
    from harmonize.train.checkpoints import checkpoint_to_resume, load_checkpoint, save_checkpoint

    model = build_model("tiny")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    root = tmp_path / "checkpoints"
    for epoch in (1, 2):
        state = {"epoch": epoch, "unet_config": model.config.model_dump(), "global_step": epoch}
        save_checkpoint(root, epoch, model, opt, sched, None, state, keep=3)
    weights = root / "epoch-0002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with caplog.at_level("WARNING", logger="harmonize.train.checkpoints"):
        chosen = checkpoint_to_resume(tmp_path, "auto")
    assert chosen == root / "epoch-0001"
    assert "epoch-0002" in caplog.text and "trying the one before" in caplog.text
    saved = load_checkpoint(chosen, model, opt, sched, None, torch.device("cpu"), epochs=3)
    assert saved["epoch"] == 1
    first = root / "epoch-0001" / "optimizer.pt"
    first.write_bytes(first.read_bytes()[:100])
    chosen = checkpoint_to_resume(tmp_path, "auto")
    assert chosen == root / "epoch-0002", "none reads: the latest, whose load names its broken file"
    with pytest.raises(ModelError, match="epoch-0002.*corrupt.*epoch-0001"):
        load_checkpoint(chosen, model, opt, sched, None, torch.device("cpu"), epochs=3)
