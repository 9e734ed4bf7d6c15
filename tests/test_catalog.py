"""harmonize.catalog.search against a real `rustac serve` on loopback and against stac-geoparquet.

The archive is made here with pystac: Earth Search v1 shaped items (sentinel-2-l2a,
landsat-c2-l2) plus a few USGS-shaped landsat-c2l1 pan items, with absolute file:// hrefs,
proj fields and a seeded eo:cloud_cover. Every expectation is computed from those item
dictionaries independently of the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pystac
import pytest

from harmonize.catalog import cloud_filter_params, parse_datetime, search
from harmonize.errors import (
    EmptySearchError,
    HarmonizeError,
    InvalidBBoxError,
    InvalidDatetimeError,
    ServerUnreachableError,
    UnknownCollectionError,
    UnknownProviderError,
)
from harmonize.providers import get_provider
from harmonize.world.server import serve

UTC = dt.timezone.utc
# Two footprints, like two neighbouring tiles (WGS84 degrees): west and east.
TILE_W = (10.0, 45.0, 10.6, 45.5)
TILE_E = (11.0, 45.0, 11.6, 45.5)
START = dt.datetime(2023, 5, 1, 10, 20, tzinfo=UTC)
MAX_CLOUD = 30.0


def _polygon(b: tuple[float, float, float, float]) -> dict[str, Any]:
    w, s, e, n = b
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _item(
    collection: str, idx: int, when: dt.datetime, tile: tuple[float, ...], cloud: float, data: Path
) -> dict[str, Any]:
    if collection == "sentinel-2-l2a":
        keys = ["blue", "green", "red", "nir08", "swir16", "swir22", "scl"]
        props = {
            "platform": "sentinel-2a",
            "constellation": "sentinel-2",
            "s2:processing_baseline": "05.09",
            "s2:mgrs_tile": "32TNR" if tile == TILE_W else "32TPR",
        }
        scale, offset = 1e-4, -0.1
        shape, res = [1098, 1098], 10
    elif collection == "landsat-c2-l2":
        keys = ["blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel"]
        props = {"platform": "landsat-8", "instruments": ["oli", "tirs"], "landsat:wrs_path": "193"}
        scale, offset = 2.75e-5, -0.2
        shape, res = [366, 366], 30
    else:
        keys = ["pan", "qa_pixel"]
        props = {"platform": "landsat-9", "landsat:correction": "L1TP"}
        scale, offset = 2e-5, -0.1
        shape, res = [732, 732], 15
    item_id = f"{collection}-{idx:03d}"
    item = pystac.Item(
        id=item_id,
        geometry=_polygon(tile),  # type: ignore[arg-type]
        bbox=list(tile),
        datetime=when,
        collection=collection,
        properties={
            **props,
            "eo:cloud_cover": cloud,
            "proj:code": "EPSG:32632",
            "proj:bbox": [600000.0, 4980000.0, 600000.0 + shape[1] * res, 4980000.0 + shape[0] * res],
            "proj:shape": shape,
            "proj:transform": [res, 0.0, 600000.0, 0.0, -res, 4980000.0 + shape[0] * res],
        },
    )
    for key in keys:
        qa = key in ("scl", "qa_pixel")
        item.add_asset(
            key,
            pystac.Asset(
                href=(data / item_id / f"{key}.tif").as_uri(),
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields={
                    "raster:bands": [
                        {"data_type": "uint8" if key == "scl" else "uint16", "nodata": 0}
                        if qa
                        else {"data_type": "uint16", "nodata": 0, "scale": scale, "offset": offset}
                    ]
                },
            ),
        )
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def make_archive(root: Path) -> list[dict[str, Any]]:
    """Write collections/*.json, items.ndjson and items.parquet under ``root``; return the items."""
    import rustac

    rng = random.Random(42)
    items: list[dict[str, Any]] = []
    plan = [("sentinel-2-l2a", 14, 5), ("landsat-c2-l2", 8, 8), ("landsat-c2l1", 4, 16)]
    for collection, count, step in plan:
        for i in range(count):
            tile = TILE_W if i % 2 == 0 else TILE_E
            cloud = round(rng.uniform(0, 100), 2)
            items.append(
                _item(collection, i, START + dt.timedelta(days=step * i), tile, cloud, root / "data")
            )
    # one item exactly on the cloud limit: `<=` must keep it
    items[3]["properties"]["eo:cloud_cover"] = MAX_CLOUD
    (root / "collections").mkdir(parents=True)
    for collection, _, _ in plan:
        coll = pystac.Collection(
            id=collection,
            description=f"test {collection}",
            license="proprietary",
            extent=pystac.Extent(
                pystac.SpatialExtent([[10.0, 45.0, 11.6, 45.5]]), pystac.TemporalExtent([[START, None]])
            ),
        )
        (root / "collections" / f"{collection}.json").write_text(
            json.dumps(coll.to_dict(include_self_link=False))
        )
    with open(root / "items.ndjson", "w") as f:
        for d in items:
            f.write(json.dumps(d) + "\n")
    rustac.write_sync(str(root / "items.parquet"), items)
    return items


# ----------------------------------------------------------------------------------------------
# independent expectations


def _dt(d: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(d["properties"]["datetime"].replace("Z", "+00:00"))


def expected(
    items: list[dict[str, Any]],
    *,
    collections: set[str],
    bbox: tuple[float, ...] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    max_cloud: float | None = None,
) -> set[str]:
    out = set()
    for d in items:
        if d["collection"] not in collections:
            continue
        if bbox is not None:
            w, s, e, n = d["bbox"]
            if e < bbox[0] or w > bbox[2] or n < bbox[1] or s > bbox[3]:
                continue
        if start is not None and _dt(d) < start or end is not None and _dt(d) > end:
            continue
        if max_cloud is not None and d["properties"]["eo:cloud_cover"] > max_cloud:
            continue
        out.add(d["id"])
    return out


L2 = {"sentinel-2-l2a", "landsat-c2-l2"}


# ----------------------------------------------------------------------------------------------
# a recording, fault-injecting proxy in front of rustac serve


class Proxy:
    """Forwards to ``upstream``, rewriting its URL to ours; records requests; can fail or
    advertise extra conformance classes."""

    def __init__(
        self,
        upstream: str,
        *,
        fail_first: int = 0,
        fail_path: str = "/",
        extra_conformance: tuple[str, ...] = (),
    ) -> None:
        self.upstream = upstream
        self.fail_first = fail_first
        self.fail_path = fail_path
        self.extra_conformance = extra_conformance
        self.requests: list[tuple[str, str, Any]] = []
        self.failures = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self, "GET")

            def do_POST(self) -> None:
                proxy._handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        self.requests.append((method, h.path, json.loads(body) if body else None))
        if self.failures < self.fail_first and h.path.startswith(self.fail_path):
            self.failures += 1
            self._send(h, 503, b'{"code": "unavailable"}')
            return
        req = urllib.request.Request(
            self.upstream + h.path,
            data=body,
            method=method,
            headers={"Content-Type": "application/json"} if body else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        payload = payload.replace(self.upstream.encode(), self.url.encode())
        if self.extra_conformance and h.path.split("?")[0] in ("/", "/conformance"):
            doc = json.loads(payload)
            doc["conformsTo"] = [*doc.get("conformsTo", []), *self.extra_conformance]
            payload = json.dumps(doc).encode()
        self._send(h, status, payload)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def searches(self) -> list[Any]:
        return [
            body for method, path, body in self.requests if method == "POST" and path.startswith("/search")
        ]


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("archive")
    return root, make_archive(root)


@pytest.fixture(scope="module")
def api(archive: tuple[Path, list[dict[str, Any]]]) -> Iterator[str]:
    with serve(archive[0]) as server:
        yield server.url


@pytest.fixture(scope="module")
def items(archive: tuple[Path, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return archive[1]


def _ids(result: Any) -> set[str]:
    ids = [i.id for i in result]
    assert len(ids) == len(set(ids)), "duplicate items"
    return set(ids)


# ----------------------------------------------------------------------------------------------
# searching


def test_search_by_bbox_datetime_collections(api: str, items: list[dict[str, Any]]) -> None:
    bbox = (10.1, 45.1, 10.4, 45.4)  # only the western tile
    result = search(api, collections=["sentinel-2-l2a"], bbox=bbox, datetime="2023-05-06/2023-06-10")
    want = expected(
        items,
        collections={"sentinel-2-l2a"},
        bbox=bbox,
        start=dt.datetime(2023, 5, 6, tzinfo=UTC),
        end=dt.datetime(2023, 6, 11, tzinfo=UTC),
    )
    assert 2 <= len(want) < 14
    assert _ids(result) == want
    assert all(isinstance(i, pystac.Item) for i in result)
    times = [i.datetime for i in result]
    assert times == sorted(times)


def test_default_collections_come_from_the_provider(api: str, items: list[dict[str, Any]]) -> None:
    assert _ids(search(api, provider="local")) == expected(items, collections=L2)
    assert _ids(search(api, provider="local", sensors=("landsat",))) == expected(
        items, collections={"landsat-c2-l2"}
    )
    with_pan = search(api, provider="local", sensors=("landsat",), include_pan=True)
    assert _ids(with_pan) == expected(items, collections={"landsat-c2-l2", "landsat-c2l1"})


def test_results_span_several_pages(api: str, items: list[dict[str, Any]]) -> None:
    with Proxy(api) as proxy:
        result = search(proxy.url, collections=sorted({d["collection"] for d in items}), page_size=10)
    assert _ids(result) == {d["id"] for d in items}
    assert len(result) == len(items) == 26
    pages = proxy.searches()
    assert len(pages) == 3  # 10 + 10 + 6
    assert all(body["limit"] == 10 for body in pages)


def test_cloud_filter_is_right_against_a_server_without_query_or_filter(
    api: str, items: list[dict[str, Any]]
) -> None:
    with urllib.request.urlopen(api + "/conformance") as resp:
        conforms = json.load(resp)["conformsTo"]
    assert not any("#filter" in c or "#query" in c for c in conforms), (
        "rustac now conforms: revisit this test"
    )
    with Proxy(api) as proxy:
        result = search(proxy.url, provider="local", max_cloud=MAX_CLOUD, page_size=7)
    want = expected(items, collections=L2, max_cloud=MAX_CLOUD)
    assert 3 <= len(want) < len(expected(items, collections=L2))
    assert items[3]["id"] in want  # the item exactly at the limit
    assert _ids(result) == want
    assert all("query" not in b and "filter" not in b for b in proxy.searches())


def test_max_items_counts_after_the_cloud_filter(api: str, items: list[dict[str, Any]]) -> None:
    result = search(api, provider="local", max_cloud=MAX_CLOUD, max_items=3, page_size=2)
    assert len(result) == 3
    assert _ids(result) <= expected(items, collections=L2, max_cloud=MAX_CLOUD)


@pytest.mark.parametrize(
    ("conformance", "sent"),
    [
        ("https://api.stacspec.org/v1.0.0-rc.2/item-search#filter", "filter"),
        ("https://api.stacspec.org/v1.0.0-rc.1/item-search#query", "query"),
    ],
)
def test_cloud_limit_goes_to_servers_that_conform(
    api: str, items: list[dict[str, Any]], conformance: str, sent: str
) -> None:
    with Proxy(api, extra_conformance=(conformance,)) as proxy:
        result = search(proxy.url, provider="local", max_cloud=MAX_CLOUD)
    body = proxy.searches()[0]
    if sent == "filter":
        assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, MAX_CLOUD]}
        assert body.get("filter-lang", body.get("filter_lang")) == "cql2-json"
    else:
        assert body["query"] == {"eo:cloud_cover": {"lte": MAX_CLOUD}}
    # whatever rustac made of a parameter it does not implement, nothing cloudier comes back
    assert _ids(result) <= expected(items, collections=L2, max_cloud=MAX_CLOUD)


def test_cloud_filter_params() -> None:
    assert cloud_filter_params(None, conforms_filter=True, conforms_query=True) == {}
    assert "filter" in cloud_filter_params(10, conforms_filter=True, conforms_query=True)
    assert cloud_filter_params(10, conforms_filter=False, conforms_query=True) == {
        "query": {"eo:cloud_cover": {"lte": 10}}
    }
    assert cloud_filter_params(10, conforms_filter=False, conforms_query=False) == {}


@pytest.mark.parametrize(
    "query",
    [
        dict(),
        dict(bbox=(11.1, 45.1, 11.2, 45.2)),
        dict(datetime="2023-05"),
        dict(max_cloud=50.0),
        dict(intersects=_polygon((10.5, 45.0, 10.7, 45.2)), datetime="2023-05-10/.."),
        dict(include_pan=True),
    ],
)
def test_geoparquet_gives_the_same_items_as_the_api(
    api: str, archive: tuple[Path, list[dict[str, Any]]], query: dict[str, Any]
) -> None:
    root, _ = archive
    from_api = search(api, provider="local", **query)
    from_parquet = search(root / "items.parquet", provider="local", **query)
    from_ndjson = search(str(root / "items.ndjson"), provider="local", **query)
    assert len(from_api) > 0
    assert [i.id for i in from_parquet] == [i.id for i in from_api]
    assert [i.id for i in from_ndjson] == [i.id for i in from_api]
    assert [i.properties["eo:cloud_cover"] for i in from_parquet] == [
        i.properties["eo:cloud_cover"] for i in from_api
    ]


def test_asset_hrefs_stay_absolute_through_the_api(api: str, items: list[dict[str, Any]]) -> None:
    by_id = {d["id"]: d for d in items}
    result = search(api, provider="local", include_pan=True)
    assert len(result) == len(items)
    for item in result:
        for key, asset in item.assets.items():
            original = by_id[item.id]["assets"][key]["href"]
            assert original.startswith("file:///")
            assert asset.href == original
            assert asset.get_absolute_href() == original


def test_provider_signer_is_applied(api: str) -> None:
    def sign(item: pystac.Item) -> pystac.Item:
        signed = item.clone()
        for asset in signed.assets.values():
            asset.href += "?token=abc"
        return signed

    provider = get_provider("local").with_signer(sign)
    result = search(api, provider=provider, sensors=("sentinel-2",))
    assert len(result) == 14
    assert all(a.href.endswith("?token=abc") for i in result for a in i.assets.values())


@pytest.mark.parametrize("path", ["/", "/search"])
def test_retries_ride_out_a_server_hiccup(api: str, items: list[dict[str, Any]], path: str) -> None:
    with Proxy(api, fail_first=2, fail_path=path) as proxy:
        result = search(proxy.url, provider="local", retries=3, backoff=0.01, page_size=5)
    assert proxy.failures == 2
    assert _ids(result) == expected(items, collections=L2)


def test_a_server_that_keeps_failing_is_unreachable(api: str) -> None:
    with Proxy(api, fail_first=10**6) as proxy:
        with pytest.raises(ServerUnreachableError, match="503"):
            search(proxy.url, provider="local", retries=2, backoff=0.01)
    assert len(proxy.requests) == 3  # one try and two retries


# ----------------------------------------------------------------------------------------------
# errors


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_fails_fast_with_a_named_error() -> None:
    t0 = time.monotonic()
    with pytest.raises(ServerUnreachableError, match="harmonize world serve"):
        search(f"http://127.0.0.1:{_closed_port()}", retries=1, backoff=0.01, timeout=2)
    assert time.monotonic() - t0 < 5


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        t0 = time.monotonic()
        with pytest.raises(ServerUnreachableError, match="Timeout|ConnectionError"):
            search(f"http://127.0.0.1:{silent.getsockname()[1]}", retries=1, backoff=0.01, timeout=0.3)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    "value",
    [
        "2023-06-30/2023-06-01",
        ("2023-07-01", "2023-06-01"),
        "2023-13-01",
        "June 2023",
        "2023-01-01/2023-02-01/2023-03-01",
    ],
)
def test_bad_datetimes(api: str, value: Any) -> None:
    with pytest.raises(InvalidDatetimeError) as info:
        search(api, datetime=value)
    assert "Swap" in str(info.value) or "ISO 8601" in str(info.value) or "range" in str(info.value)


@pytest.mark.parametrize(
    ("bbox", "hint"),
    [
        ((10.6, 45.0, 10.0, 45.5), "out of order"),
        ((10.0, 45.5, 10.6, 45.0), "out of order"),
        ((45.0, 10.0, 45.5, 190.0), "out of range"),
        ((600000, 4980000, 610000, 4990000), "metres"),
        ((10.0, 45.0, 10.6), "four"),
        (("a", 1, 2, 3), "four"),
    ],
)
def test_bad_bboxes(api: str, bbox: Any, hint: str) -> None:
    with pytest.raises(InvalidBBoxError, match=hint):
        search(api, bbox=bbox)


def test_bbox_and_intersects_together_is_an_error(api: str) -> None:
    with pytest.raises(InvalidBBoxError, match="not both"):
        search(api, bbox=TILE_W, intersects=_polygon(TILE_W))


def test_unknown_collection_lists_what_the_server_has(
    api: str, archive: tuple[Path, list[dict[str, Any]]]
) -> None:
    with pytest.raises(UnknownCollectionError) as info:
        search(api, collections=["sentinel-2-l2a", "landsat-c2l2-sr"])
    msg = str(info.value)
    assert "'landsat-c2l2-sr'" in msg and "landsat-c2-l2" in msg and "sentinel-2-l2a" in msg
    with pytest.raises(UnknownCollectionError, match="landsat-c2l1"):
        search(archive[0] / "items.parquet", collections=["nope"])


def test_unknown_provider_and_sensor(api: str) -> None:
    with pytest.raises(UnknownProviderError, match="earth-search"):
        search(api, provider="no-such-provider")
    with pytest.raises(UnknownCollectionError, match="modis"):
        search(api, sensors=("modis",))


def test_empty_result(api: str) -> None:
    assert len(search(api, provider="local", datetime="2020")) == 0
    with pytest.raises(EmptySearchError, match="Widen"):
        search(api, provider="local", datetime="2020", require=True)


def test_errors_are_harmonize_errors() -> None:
    assert issubclass(ServerUnreachableError, HarmonizeError)
    with pytest.raises(FileNotFoundError, match="STAC API URL"):
        search("/no/such/archive.parquet")


# ----------------------------------------------------------------------------------------------
# datetime parsing


def test_parse_datetime_expands_partial_dates() -> None:
    assert parse_datetime(None) is None
    assert parse_datetime("../..") is None
    start, end = parse_datetime("2024-02")  # type: ignore[misc]
    assert start == dt.datetime(2024, 2, 1, tzinfo=UTC)
    assert end == dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    start, end = parse_datetime("2023/..")  # type: ignore[misc]
    assert start == dt.datetime(2023, 1, 1, tzinfo=UTC) and end is None
    start, end = parse_datetime((dt.date(2023, 1, 2), dt.datetime(2023, 1, 3, 12)))  # type: ignore[misc]
    assert start == dt.datetime(2023, 1, 2, tzinfo=UTC) and end == dt.datetime(2023, 1, 3, 12, tzinfo=UTC)
    instant = dt.datetime(2023, 1, 3, 10, 20, tzinfo=UTC)
    assert parse_datetime("2023-01-03T10:20:00Z") == (instant, instant)


def test_exact_instant_finds_exactly_that_scene(api: str, items: list[dict[str, Any]]) -> None:
    when = items[5]["properties"]["datetime"]
    result = search(api, provider="local", datetime=when)
    assert _ids(result) == {
        d["id"] for d in items if d["properties"]["datetime"] == when and d["collection"] in L2
    }


# ----------------------------------------------------------------------------------------------
# the simulated world, served and searched like a remote archive


def test_the_served_world_holds_every_scene_of_its_manifest(tiny_world: Any) -> None:
    world = tiny_world  # the session fixture of tests/conftest.py
    scenes = world.manifest["scenes"]
    want = Counter(s["collection"] for s in scenes)
    want["landsat-c2l1"] = sum(1 for s in scenes if s.get("l1_id"))
    assert want["sentinel-2-l2a"] > 0 and want["landsat-c2-l2"] > 0
    with serve(world) as server:  # a World serves its root
        found = search(server.url, provider="local", bbox=world.bbox, include_pan=True, page_size=5)
        clear = search(server.url, provider="local", bbox=world.bbox, max_cloud=20)
    assert Counter(i.collection_id for i in found) == want
    assert {i.id for i in clear} == {s["id"] for s in scenes if s["eo:cloud_cover"] <= 20}
    for item in found:
        for asset in item.assets.values():
            assert asset.href.startswith("file:///")
            assert Path(urlsplit(asset.href).path).is_file()
    from_parquet = search(world.items_path, provider="local", bbox=world.bbox, include_pan=True)
    assert [i.id for i in from_parquet] == [i.id for i in found]


# ----------------------------------------------------------------------------------------------
# real Earth Search v1 documents through rustac serve

REAL = Path(__file__).parents[2] / "shared" / "stac-items"
REAL_ITEMS = [
    "earthsearch-v1_landsat-c2-l2_LC08_L2SP_033032_20231008_02_T1.json",
    "earthsearch-v1_sentinel-2-l2a_S2A_13TDE_20231008_0_L2A.json",
]


def test_real_earth_search_items_keep_their_remote_hrefs() -> None:
    if not REAL.is_dir():
        pytest.skip(f"{REAL} (real STAC documents kept beside the repository) is absent")
    files = [
        REAL / "earthsearch-v1_landsat-c2-l2.collection.json",
        REAL / "earthsearch-v1_sentinel-2-l2a.collection.json",
    ]
    docs = {d["id"]: d for d in (json.loads((REAL / f).read_text()) for f in REAL_ITEMS)}
    east = (-104.0, 39.5, -103.5, 40.0)  # inside the Landsat scene, east of the Sentinel-2 tile
    with serve([*files, *(REAL / f for f in REAL_ITEMS)]) as server:
        both = search(
            server.url, provider="earth-search", bbox=(-105.5, 39.7, -105.0, 40.2), datetime="2023-10-08"
        )
        east_only = search(server.url, provider="earth-search", bbox=east, datetime="2023-10-08")
    assert {i.id for i in both} == set(docs)
    assert (
        {i.id for i in east_only}
        == {d["id"] for d in docs.values() if d["bbox"][0] <= east[2] and d["bbox"][2] >= east[0]}
        == {"LC08_L2SP_033032_20231008_02_T1"}
    )
    for item in both:
        hrefs = {k: a.href for k, a in item.assets.items()}
        assert hrefs == {k: a["href"] for k, a in docs[item.id]["assets"].items()}
        assert any(h.startswith("s3://") or h.startswith("https://") for h in hrefs.values())
