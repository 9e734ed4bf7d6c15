"""Inputs and outputs on ``s3://`` against a real S3 endpoint on loopback (moto's server).

GDAL talks HTTP to the endpoint (``AWS_S3_ENDPOINT``, ``AWS_VIRTUAL_HOSTING=FALSE``,
``AWS_HTTPS=NO``), so an in-process mock of botocore would not reach it: the server is a real
HTTP server in a thread. A small WSGI middleware in front of moto records the method, path and
``x-amz-request-payer`` header of every request, which is how the requester-pays test sees what
GDAL actually sent.

* COGs of the simulated world are uploaded to a bucket, the item hrefs rewritten to ``s3://``,
  and :func:`harmonize.cube.load_cube` must give exactly what it gives on the local files
  (including a co-registration shift, which reads through ``vrt:///vsis3/…``).
* Requester pays: loading with a requester-pays provider profile must send
  ``x-amz-request-payer: requester`` on every object read; loading without must not.
* :func:`harmonize.io.write_zarr` and :func:`harmonize.io.write_cogs` write to ``s3://`` and
  read back equal (Zarr through s3fs, COGs through GDAL); :func:`harmonize.io.write_stac_items`
  puts the items beside the COGs in the bucket.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

moto_server = pytest.importorskip(
    "moto.moto_server.threaded_moto_server",
    reason="moto[server] is not installed (pip install 'moto[server]' s3fs): no S3 endpoint to test against",
)
pytest.importorskip(
    "s3fs", reason="s3fs is not installed (pip install s3fs): Zarr cannot be written to s3://"
)

import boto3  # noqa: E402  (moto depends on it)
from werkzeug.serving import make_server  # noqa: E402

from harmonize.bands import REFLECTANCE_BANDS  # noqa: E402
from harmonize.catalog import search  # noqa: E402
from harmonize.cube import load_cube  # noqa: E402
from harmonize.io import write_cogs, write_stac_items, write_zarr  # noqa: E402
from harmonize.providers import get_provider  # noqa: E402

BUCKET = "hz-test"
#: A fortnight of the tiny world: Sentinel-2-A/B and Landsat-8/9 scenes, one clear Landsat date.
WINDOW = "2023-05-01/2023-05-13"


class _RecordingMotoServer(moto_server.ThreadedMotoServer):
    """moto's threaded S3 server with a middleware that records every request."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _record(self, app: Any) -> Any:
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            with self._lock:
                self.requests.append(
                    {
                        "method": environ["REQUEST_METHOD"],
                        "path": environ.get("PATH_INFO", ""),
                        "payer": environ.get("HTTP_X_AMZ_REQUEST_PAYER"),
                    }
                )
            return app(environ, start_response)

        return wsgi

    def _server_entry(self) -> None:  # same as moto's, with the recording middleware
        app = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
        self._server = make_server(
            self._ip_address,
            self._port,
            self._record(app),
            True,
            request_handler=moto_server.MotoRequestHandler,
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    def object_reads(self, prefix: str) -> list[dict[str, Any]]:
        """GET/HEAD requests for objects under ``s3://BUCKET/prefix``."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r["method"] in ("GET", "HEAD") and r["path"].startswith(f"/{BUCKET}/{prefix}")
            ]


@pytest.fixture(scope="module")
def s3() -> Iterator[_RecordingMotoServer]:
    """A moto S3 server on a loopback port, with GDAL, boto3 and s3fs pointed at it."""
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = _RecordingMotoServer()
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REQUEST_PAYER", "AWS_CONFIG_FILE"):
            mp.delenv(var, raising=False)
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            # GDAL (/vsis3/)
            "AWS_S3_ENDPOINT": f"{host}:{port}",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_HTTPS": "NO",
            "AWS_NO_SIGN_REQUEST": "NO",
            # botocore, s3fs
            "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        }
        for k, v in env.items():
            mp.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield server
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def _upload(items: Any, world: Any, prefix: str) -> None:
    """Upload the files of ``items`` to ``s3://BUCKET/prefix/<path under the world root>``."""
    client = boto3.client("s3")
    root = world.root.resolve()
    files = {Path(a.href.removeprefix("file://")) for it in items for a in it.assets.values()}
    for f in sorted(p for p in files if p.is_file() and root in p.parents):
        client.upload_file(str(f), BUCKET, f"{prefix}/{f.relative_to(root).as_posix()}")


def _to_s3(items: Any, world: Any, prefix: str) -> list[Any]:
    """Copies of ``items`` whose file:// hrefs point at the uploaded copies in the bucket."""
    local = world.root.resolve().as_uri() + "/"
    out = []
    for it in items:
        it = it.clone()
        for asset in it.assets.values():
            if asset.href.startswith(local):
                asset.href = f"s3://{BUCKET}/{prefix}/" + asset.href[len(local) :]
        out.append(it)
    assert all(
        a.href.startswith("s3://") for it in out for a in it.assets.values() if a.href.endswith(".tif")
    )
    return out


def _assert_cubes_equal(a: xr.Dataset, b: xr.Dataset) -> None:
    assert list(a.data_vars) == list(b.data_vars)
    assert a.rio.crs == b.rio.crs and a.odc.geobox == b.odc.geobox
    np.testing.assert_array_equal(a["time"].values, b["time"].values)
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_load_cube_reads_cogs_from_s3_equal_to_local(s3, tiny_world):
    items = list(search(str(tiny_world.items_path), bbox=tiny_world.bbox, datetime=WINDOW, include_pan=True))
    _upload(items, tiny_world, "plain")
    remote = _to_s3(items, tiny_world, "plain")
    # one Landsat scene on a shifted grid: its hrefs become vrt:///vsis3/... paths
    landsat = next(it.id for it in items if it.collection_id == "landsat-c2-l2")
    opts = dict(bbox=tiny_world.bbox, shifts={landsat: (12.0, -7.5)})

    want = load_cube(items, **opts).compute()
    got = load_cube(remote, **opts).compute()

    assert want.sizes["time"] == len({it.id for it in items if it.collection_id != "landsat-c2l1"})
    assert np.isfinite(want["red"].values).mean() > 0.5 and want["pan"].notnull().any()
    _assert_cubes_equal(got, want)
    reads = s3.object_reads("plain/data/")
    assert reads, "load_cube did not read through the S3 endpoint"
    assert {r["path"].rsplit("/", 1)[-1] for r in reads} >= {"B04.tif", "SCL.tif"}
    assert all(r["payer"] is None for r in reads), "requester-pays header sent without being asked for"


def test_requester_pays_reaches_gdal(s3, tiny_world):
    assert get_provider("usgs").gdal_env() == {"AWS_REQUEST_PAYER": "requester"}
    earth_search = get_provider("earth-search")  # Landsat hrefs in the requester-pays usgs-landsat bucket
    assert earth_search.requester_pays
    items = list(search(str(tiny_world.items_path), bbox=tiny_world.bbox, datetime=WINDOW))
    assert {it.collection_id for it in items} == {"sentinel-2-l2a", "landsat-c2-l2"}
    _upload(items, tiny_world, "payer")  # its own prefix: GDAL caches what it has read before
    remote = _to_s3(items, tiny_world, "payer")

    got = load_cube(remote, bbox=tiny_world.bbox, provider=earth_search).compute()
    want = load_cube(items, bbox=tiny_world.bbox).compute()

    _assert_cubes_equal(got, want)
    reads = s3.object_reads("payer/data/")
    assert {r["path"].split("/")[4] for r in reads} == {"sentinel-2-l2a", "landsat-c2-l2"}
    assert {r["payer"] for r in reads} == {"requester"}, "some reads lacked x-amz-request-payer: requester"


def _small_cube(world: Any) -> xr.Dataset:
    """A few dates of the world in memory, in a handful of chunks (each chunk is one object)."""
    items = list(search(str(world.items_path), bbox=world.bbox, datetime=WINDOW))
    cube = load_cube(items, geobox=world.geobox).compute()
    return cube.chunk({"time": 3, "y": 64, "x": world.geobox.shape[1]})


def test_write_zarr_to_s3_round_trips(s3, tiny_world):
    import s3fs

    cube = _small_cube(tiny_world)
    url = f"s3://{BUCKET}/out/cube.zarr"
    assert write_zarr(cube, url) == url
    fs = s3fs.S3FileSystem()
    assert fs.exists(f"{BUCKET}/out/cube.zarr/zarr.json") and fs.exists(
        f"{BUCKET}/out/cube.zarr/red/zarr.json"
    )

    back = xr.open_zarr(url)
    assert back.rio.crs == cube.rio.crs and back.rio.transform() == cube.rio.transform()
    for name in cube.data_vars:
        np.testing.assert_array_equal(back[name].values, cube[name].values, err_msg=name)
    np.testing.assert_array_equal(back["time"].values, cube["time"].values)
    assert list(back["sensor"].values) == list(cube["sensor"].values)

    # append more dates to the existing remote store
    later = cube.isel(time=slice(-1, None)).assign_coords(time=cube["time"][-1:] + np.timedelta64(40, "D"))
    write_zarr(later, url, mode="a")
    grown = xr.open_zarr(url)
    assert grown.sizes["time"] == cube.sizes["time"] + 1
    np.testing.assert_array_equal(grown["red"].values[-1], cube["red"].values[-1])

    # replace
    write_zarr(cube.isel(time=[0]), url, mode="w")
    assert xr.open_zarr(url).sizes["time"] == 1


def test_write_cogs_to_s3_and_read_back_with_gdal(s3, tiny_world):
    import rasterio
    import s3fs
    from rio_cogeo.cogeo import cog_validate

    cube = _small_cube(tiny_world).isel(time=slice(0, 3))
    prefix = f"s3://{BUCKET}/cogs"
    urls = write_cogs(cube, prefix, bands=list(REFLECTANCE_BANDS))
    assert len(urls) == 3 and all(
        str(u).startswith(prefix + "/") and str(u).endswith("_hz.tif") for u in urls
    )
    assert not Path("s3:").exists(), "write_cogs wrote into a local folder named 's3:'"
    for i, url in enumerate(urls):
        assert cog_validate(url, quiet=True)[0], url
        with rasterio.open(url) as src:
            assert src.crs == cube.rio.crs and src.transform == cube.rio.transform()
            assert src.descriptions == tuple(REFLECTANCE_BANDS)
            np.testing.assert_array_equal(src.read(3), cube["red"].values[i])

    # their STAC items go beside them in the bucket, pointing at the s3:// files
    items = write_stac_items(urls, cube)
    assert not Path("s3:").exists(), "write_stac_items wrote into a local folder named 's3:'"
    fs = s3fs.S3FileSystem()
    for i, (item, url) in enumerate(zip(items, urls, strict=True)):
        doc = json.loads(fs.cat_file(f"{prefix.removeprefix('s3://')}/{item.id}.json"))
        assert doc["assets"]["data"]["href"] == url
        assert {link["href"] for link in doc["links"] if link["rel"] == "self"} == {
            f"{prefix}/{item.id}.json"
        }
        sources = {link["title"] for link in doc["links"] if link["rel"] == "derived_from"}
        assert sources == set(str(cube["item_id"].values[i]).split(","))

    # overwrite=False keeps what is there: nothing is uploaded again
    before = len([r for r in s3.requests if r["method"] == "PUT" and "/cogs/" in r["path"]])
    assert write_cogs(cube, prefix, bands=list(REFLECTANCE_BANDS), overwrite=False) == urls
    after = len([r for r in s3.requests if r["method"] == "PUT" and "/cogs/" in r["path"]])
    assert after == before
