"""Search Landsat and Sentinel-2 scenes in a STAC API or a local stac-geoparquet file.

One entry point, :func:`search`, for two kinds of source:

* a STAC API URL, searched with pystac-client (POST, paged, with timeouts and urllib3 retries
  with backoff on connection errors and 5xx answers);
* a local file of items (stac-geoparquet, newline-delimited JSON or an ItemCollection), read with
  rustac and filtered here. rustac's own DuckDB search of geoparquet needs the DuckDB ``spatial``
  extension downloaded at run time, which fails offline, so the file is read whole and filtered in
  Python: fine for the archives harmonize makes, not for continent-sized files.

STAC APIs differ in what they can filter. The cloud-cover limit goes to the server as CQL2 where
it conforms to the Filter extension (Planetary Computer, Earth Search), as ``query`` where it
conforms only to Query, and nowhere otherwise (``rustac serve`` conforms to neither, and a
``query`` it does not understand makes it return nothing). Whatever the server did, the limit is
applied again on the client, so the result is right either way.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac

from harmonize.errors import (
    EmptySearchError,
    HarmonizeError,
    InvalidBBoxError,
    InvalidDatetimeError,
    InvalidSearchError,
    ItemFileError,
    ItemFileNotFoundError,
    ServerUnreachableError,
    StacResponseError,
    UnknownCollectionError,
)
from harmonize.providers import PROVIDERS, Provider, get_provider
from harmonize.redact import install_log_redaction, redact_text, redact_url

__all__ = ["search", "parse_datetime", "parse_bbox", "validate_bbox", "cloud_filter_params", "is_api_url"]

log = logging.getLogger(__name__)

SENSORS = ("landsat", "sentinel-2")
CLOUD = "eo:cloud_cover"
#: HTTP answers retried with backoff (besides connection errors and timeouts).
RETRY_STATUS = (429, 500, 502, 503, 504)
LOCAL_SUFFIXES = (".parquet", ".geoparquet", ".ndjson", ".jsonl", ".json", ".geojson")

DatetimeLike = str | _dt.datetime | _dt.date | None
Interval = tuple[_dt.datetime | None, _dt.datetime | None]


# ---------------------------------------------------------------------------------------------
# input validation


_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


def _parse_instant(value: DatetimeLike, *, end: bool, original: object) -> _dt.datetime | None:
    """One side of a range; partial dates expand to their first (or, for ``end``, last) instant."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, _dt.date):
        day = _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
        return day + _dt.timedelta(days=1, microseconds=-1) if end else day
    if not isinstance(value, str):
        raise InvalidDatetimeError(
            f"Cannot read {value!r} (in datetime={original!r}) as a date; pass an ISO 8601 string "
            "such as '2023-06-01' or '2023-06-01/2023-08-31', or datetime objects."
        )
    text = value.strip()
    if text in ("", ".."):
        return None
    m = _PARTIAL.match(text)
    try:
        if m:
            year, month, day = int(m[1]), int(m[2] or 0), int(m[3] or 0)
            if not m[2]:
                lo, hi = _dt.datetime(year, 1, 1), _dt.datetime(year + 1, 1, 1)
            elif not m[3]:
                lo = _dt.datetime(year, month, 1)
                hi = lo + _dt.timedelta(days=calendar.monthrange(year, month)[1])
            else:
                lo = _dt.datetime(year, month, day)
                hi = lo + _dt.timedelta(days=1)
            out = hi - _dt.timedelta(microseconds=1) if end else lo
            return out.replace(tzinfo=_dt.timezone.utc)
        parsed = _dt.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as err:
        raise InvalidDatetimeError(
            f"Cannot read {text!r} (in datetime={original!r}) as a date: {err}. Use ISO 8601, e.g. "
            "'2023-06-01', '2023-06-01T10:30:00Z', or a range '2023-06-01/2023-08-31' ('..' for open)."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)


def parse_datetime(value: DatetimeLike | Sequence[DatetimeLike]) -> Interval | None:
    """Parse a STAC datetime filter into a closed UTC interval ``(start, end)``.

    Parameters
    ----------
    value
        ``None``; one date or datetime (a string like ``"2023"``, ``"2023-06"``, ``"2023-06-01"``
        or ``"2023-06-01T10:00:00Z"``, or a ``datetime``/``date``); a range ``"start/end"`` with
        ``..`` (or nothing) for an open side; or a pair ``(start, end)``. Partial dates cover
        their whole year, month or day; naive datetimes are taken as UTC.

    Returns
    -------
    tuple or None
        ``(start, end)``, either side ``None`` when open; ``None`` for no filter.

    Raises
    ------
    InvalidDatetimeError
        If a side cannot be parsed, or the range is reversed.
    """
    if value is None:
        return None
    if isinstance(value, str) and "/" in value:
        parts: Sequence[DatetimeLike] = value.split("/")
    elif isinstance(value, (list, tuple)):
        parts = value
    else:
        parts = [value, value]
    if len(parts) != 2:
        raise InvalidDatetimeError(
            f"datetime={value!r} has {len(parts)} parts; give one date or a range 'start/end'."
        )
    start = _parse_instant(parts[0], end=False, original=value)
    end = _parse_instant(parts[1], end=True, original=value)
    if start is not None and end is not None and start > end:
        raise InvalidDatetimeError(
            f"datetime={value!r} is reversed: it starts at {start.isoformat()} after it ends at "
            f"{end.isoformat()}. Swap the two dates."
        )
    if start is None and end is None:
        return None
    return start, end


def _rfc3339(t: _dt.datetime | None) -> str:
    if t is None:
        return ".."
    return t.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _interval_string(interval: Interval) -> str:
    return f"{_rfc3339(interval[0])}/{_rfc3339(interval[1])}"


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """A ``"west,south,east,north"`` string (a ``--bbox`` option) as a checked box.

    Raises
    ------
    InvalidBBoxError
        If it is not four comma-separated numbers, or :func:`validate_bbox` refuses them.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InvalidBBoxError(
            f"--bbox {text!r} is not four comma-separated numbers; pass west,south,east,north in "
            "degrees, e.g. --bbox -98.4,39.0,-98.3,39.1."
        ) from None
    return validate_bbox(values)


def validate_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """Check a ``(west, south, east, north)`` box in degrees and return it as floats.

    Raises
    ------
    InvalidBBoxError
        If it does not have four finite numbers, is out of order, or leaves
        [-180, 180] x [-90, 90].
    """
    try:
        values = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InvalidBBoxError(
            f"bbox={bbox!r} is not four numbers; pass (west, south, east, north) in degrees."
        ) from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidBBoxError(
            f"bbox={bbox!r} must be four finite numbers (west, south, east, north) in degrees."
        )
    west, south, east, north = values
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        hint = (
            " It looks like (south, west, north, east): swap to lon/lat order."
            if (-90 <= west <= 90 and -90 <= east <= 90 and (abs(south) > 90 or abs(north) > 90))
            else ""
        )
        raise InvalidBBoxError(
            f"bbox={bbox!r} is out of range: longitudes must lie in [-180, 180] and latitudes in "
            f"[-90, 90] (WGS84 degrees, not projected metres).{hint}"
        )
    if south > north:
        raise InvalidBBoxError(
            f"bbox={bbox!r} is out of order: south ({south}) is above north ({north}). "
            "Pass (west, south, east, north)."
        )
    if west > east:
        raise InvalidBBoxError(
            f"bbox={bbox!r} is out of order: west ({west}) is east of east ({east}). Pass "
            "(west, south, east, north); for an area across the antimeridian, search each side."
        )
    return values  # type: ignore[return-value]


def _geometry(intersects: Any) -> dict[str, Any]:
    import shapely.geometry

    geo = getattr(intersects, "__geo_interface__", intersects)
    try:
        shape = shapely.geometry.shape(geo)
    except Exception as err:  # shapely raises several types for bad GeoJSON
        raise InvalidBBoxError(
            f"intersects={intersects!r} is not a GeoJSON geometry ({err}); pass a dict like "
            "{'type': 'Polygon', 'coordinates': [...]} or a shapely geometry."
        ) from None
    if shape.is_empty:
        raise InvalidBBoxError("intersects is an empty geometry; pass the area to search.")
    validate_bbox(shape.bounds)
    return dict(shapely.geometry.mapping(shape))


def cloud_filter_params(
    max_cloud: float | None, *, conforms_filter: bool, conforms_query: bool
) -> dict[str, Any]:
    """Keyword arguments for ``pystac_client.Client.search`` that limit cloud cover server-side.

    CQL2 JSON where the server conforms to Filter, ``query`` where only to Query, nothing where
    to neither (the limit is then applied on the client only).
    """
    if max_cloud is None:
        return {}
    if conforms_filter:
        return {
            "filter": {"op": "<=", "args": [{"property": CLOUD}, max_cloud]},
            "filter_lang": "cql2-json",
        }
    if conforms_query:
        return {"query": {CLOUD: {"lte": max_cloud}}}
    return {}


# ---------------------------------------------------------------------------------------------
# client-side filters (used for local files, and to double-check every server's answer)


def _item_interval(item: pystac.Item) -> Interval:
    start = item.common_metadata.start_datetime or item.datetime
    end = item.common_metadata.end_datetime or item.datetime
    return start, end


def _within_time(item: pystac.Item, interval: Interval | None) -> bool:
    if interval is None:
        return True
    start, end = _item_interval(item)
    lo, hi = interval
    if lo is not None and end is not None and end < lo:
        return False
    return not (hi is not None and start is not None and start > hi)


def _cloud_ok(item: pystac.Item, max_cloud: float | None) -> bool:
    if max_cloud is None:
        return True
    cc = item.properties.get(CLOUD)
    return cc is not None and float(cc) <= max_cloud


class _SpatialFilter:
    def __init__(self, bbox: tuple[float, ...] | None, intersects: dict[str, Any] | None) -> None:
        import shapely.geometry

        self.area = None
        if bbox is not None:
            self.area = shapely.geometry.box(*bbox)
        elif intersects is not None:
            self.area = shapely.geometry.shape(intersects)

    def __call__(self, item: pystac.Item) -> bool:
        if self.area is None:
            return True
        import shapely.geometry

        if item.geometry is not None:
            return bool(self.area.intersects(shapely.geometry.shape(item.geometry)))
        if item.bbox is not None:
            return bool(self.area.intersects(shapely.geometry.box(*item.bbox[:2], *item.bbox[-2:])))
        return False


# ---------------------------------------------------------------------------------------------
# sources


def is_api_url(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a STAC API (http or https URL) rather than a local file."""
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def _local_path(source: str | os.PathLike[str]) -> Path:
    from harmonize.items import local_href

    text = local_href(os.fspath(source))
    path = Path(text)
    if path.is_dir():
        for name in ("items.parquet", "items.ndjson"):
            if (path / name).is_file():
                return path / name
        raise ItemFileNotFoundError(
            f"{path} is a directory without items.parquet or items.ndjson; pass a STAC API URL "
            "or a stac-geoparquet file."
        )
    if not path.is_file():
        raise ItemFileNotFoundError(
            f"{source!r} is neither an http(s) STAC API URL nor an existing file; pass a URL "
            f"like 'http://127.0.0.1:7822' or a stac-geoparquet file ({', '.join(LOCAL_SUFFIXES)})."
        )
    return path


def _read_local(path: Path) -> list[dict[str, Any]]:
    """The item dicts in a local file, or an :class:`ItemFileError` naming the file."""
    import rustac

    what = "stac-geoparquet, newline-delimited JSON or an ItemCollection"
    if path.stat().st_size == 0:
        raise ItemFileError(f"{path} is empty; it should hold STAC items ({what}).")
    try:
        value = rustac.read_sync(str(path))
    except Exception as exc:  # rustac raises RustacError for every parse failure
        raise ItemFileError(
            f"{path} cannot be read as STAC items ({exc}): is it truncated, or not {what}? "
            "Write it again (e.g. `harmonize search URL --json > items.json`)."
        ) from None
    features = value if isinstance(value, list) else (
        value.get("features") if value.get("type") == "FeatureCollection"
        else [value] if value.get("type") == "Feature" else None
    )
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        kind = value.get("type") if isinstance(value, dict) else type(value).__name__
        raise ItemFileError(f"{path} holds a {kind!r}, not STAC items ({what}).")
    if not features:
        raise ItemFileError(f"{path} holds no STAC items; write the items of a search into it ({what}).")
    if any(not f.get("id") for f in features):  # rustac makes a Feature of any JSON object
        raise ItemFileError(f"{path} holds JSON objects without an id: not STAC items ({what}).")
    return features


class _DeadlineExceeded(Exception):
    """A search ran past its total timeout (raised inside pystac-client, mapped below)."""


def _checked_io_class() -> type:
    from pystac_client.stac_api_io import StacApiIO

    class CheckedIO(StacApiIO):
        """pystac-client's IO, checking that every search page is an ItemCollection."""

        where = "The STAC API"
        _paging = False

        def get_pages(self, url: Any, method: str | None = None, parameters: Any = None) -> Iterator[Any]:
            self._paging = True
            try:
                yield from super().get_pages(url, method=method, parameters=parameters)
            finally:
                self._paging = False

        def read_json(self, *args: Any, **kwargs: Any) -> Any:
            page = super().read_json(*args, **kwargs)
            if self._paging and not (isinstance(page, dict) and isinstance(page.get("collections"), list)):
                _check_page(page, self.where)  # a search page (collection pages are checked by pystac)
            return page

    return CheckedIO


def _make_io(timeout: float, retries: int, backoff: float, deadline: float | None = None) -> Any:
    from urllib3.util.retry import Retry

    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUS,
        allowed_methods=None,  # searches are POSTs but idempotent: retry them too
        raise_on_status=False,  # hand back the last 5xx so its status reaches the error message
    )
    io = _checked_io_class()(timeout=timeout, max_retries=retry)
    if deadline is not None:
        io.session.hooks["response"].append(_body_before(deadline))
    return io


def _body_before(deadline: float) -> Callable[..., Any]:
    """A requests response hook that reads the body itself, a chunk as it arrives, and gives up
    at ``deadline`` (``time.monotonic()``): the per-request timeout bounds each socket read
    only, so a server dripping a byte every few seconds would otherwise never time out."""

    def read(response: Any, *args: Any, **kwargs: Any) -> Any:
        chunks = []
        while True:
            if time.monotonic() > deadline:
                response.close()
                raise _DeadlineExceeded()
            chunk = response.raw.read1(1 << 16, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
        response._content = b"".join(chunks)  # what requests' .content would have read
        response._content_consumed = True
        return response

    return read


def _unreachable(
    err: BaseException, url: str, retries: int, total_timeout: float | None = None
) -> ServerUnreachableError | None:
    """The ServerUnreachableError an APIError stands for, or None for other API errors."""
    import requests

    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, _DeadlineExceeded):
            return ServerUnreachableError(
                f"The STAC API at {redact_url(url)} did not finish answering within the search's "
                f"total_timeout={total_timeout:g} s (a stalled or very slow server). Try again "
                "later, or raise total_timeout= (--total-timeout)."
            )
        cause = cause.__cause__ or cause.__context__
    status = getattr(err, "status_code", None)
    if status is not None and status >= 500 or status == 429:
        return ServerUnreachableError(
            f"The STAC API at {redact_url(url)} answered HTTP {status} after {retries} retries "
            f"({redact_text(str(err))[:200]}). Try again later, or raise retries=/backoff=."
        )
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, (requests.ConnectionError, requests.Timeout)):
            return ServerUnreachableError(
                f"Could not reach the STAC API at {redact_url(url)} after {retries} retries "
                f"({type(cause).__name__}). Check the URL and your network; for the local archive "
                "start it with `harmonize world serve DIR` and search the URL it prints."
            )
        cause = cause.__cause__ or cause.__context__
    return None


def _check_collections(requested: list[str], available: Iterable[str], where: str) -> None:
    have = sorted(set(available))
    missing = [c for c in requested if c not in have]
    if missing:
        raise UnknownCollectionError(
            f"{where} has no collection {', '.join(map(repr, missing))}; it has {have}. "
            "Pass collections= from that list, or the provider= whose ids it uses."
        )


def _resolve_provider(source: Any, provider: str | Provider | None) -> Provider:
    if provider is not None:
        return get_provider(provider)
    if is_api_url(source):
        root = source.rstrip("/")
        for p in PROVIDERS.values():
            if p.url and p.url.rstrip("/") == root:
                return p
    log.debug(
        "No provider given for %s; using the 'local' profile (Earth Search v1 ids)",
        redact_url(source) if is_api_url(source) else source,
    )
    return get_provider("local")


def _collection_ids(prov: Provider, sensors: Sequence[str], include_pan: bool) -> list[str]:
    unknown = [s for s in sensors if s not in SENSORS]
    if unknown or not sensors:
        raise UnknownCollectionError(
            f"Unknown sensors {unknown or list(sensors)}; choose from {list(SENSORS)}."
        )
    ids = prov.collection_ids(tuple(sensors))  # type: ignore[arg-type]
    if include_pan and "landsat" in sensors:
        ids += prov.collection_ids(("landsat",), level="L1")
    if not ids:
        raise UnknownCollectionError(
            f"Provider {prov.name!r} has no collection for sensors {list(sensors)}; it serves "
            f"{[c.collection for c in prov.collections]}."
        )
    return ids


def _search_api(
    url: str,
    *,
    collections: list[str],
    bbox: tuple[float, ...] | None,
    intersects: dict[str, Any] | None,
    interval: Interval | None,
    max_cloud: float | None,
    max_items: int | None,
    page_size: int,
    timeout: float,
    retries: int,
    backoff: float,
    total_timeout: float | None = None,
    defaulted: bool = False,
) -> Iterator[pystac.Item]:
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses
    from pystac_client.exceptions import APIError

    install_log_redaction()  # urllib3's retry warnings and pystac-client's request logs
    where = f"The STAC API at {redact_url(url)}"
    try:
        deadline = time.monotonic() + total_timeout if total_timeout is not None else None
        io = _make_io(timeout, retries, backoff, deadline)
        io.where = where
        client = Client.open(url, stac_io=io, timeout=timeout)
        missing = [c for c in collections if client.get_collection(c) is None]
        if missing:
            collections = _present(collections, (c.id for c in client.get_collections()), where, defaulted)
        server_side = cloud_filter_params(
            max_cloud,
            conforms_filter=client.conforms_to(ConformanceClasses.FILTER),
            conforms_query=client.conforms_to(ConformanceClasses.QUERY),
        )
        if max_cloud is not None and not server_side:
            log.info(
                "%s conforms to neither Filter nor Query: filtering %s <= %g on the client",
                redact_url(url),
                CLOUD,
                max_cloud,
            )
        kwargs: dict[str, Any] = dict(
            method="POST",
            collections=collections,
            limit=page_size,
            # with a client-side filter the server's first max_items may not all pass it
            max_items=max_items if (max_cloud is None or server_side) else None,
            **server_side,
        )
        if bbox is not None:
            kwargs["bbox"] = list(bbox)
        if intersects is not None:
            kwargs["intersects"] = intersects
        if interval is not None:
            kwargs["datetime"] = _interval_string(interval)
        result = client.search(**kwargs)
        for n, page in enumerate(result.pages(), start=1):
            log.debug("%s: page %d with %d items", redact_url(url), n, len(page.items))
            yield from page.items
    except APIError as err:
        mapped = _unreachable(err, url, retries, total_timeout)
        if mapped is not None:
            raise mapped from err
        raise
    except (ValueError, pystac.STACError, pystac.errors.STACTypeError) as err:  # JSONDecodeError: ValueError
        if isinstance(err, HarmonizeError):
            raise
        raise StacResponseError(
            f"{where} answered something that is not STAC ({type(err).__name__}: "
            f"{redact_text(str(err))[:200]}). Check that the URL is the API's root (the landing "
            "page with a 'search' link) and that no login page or proxy answers in its place."
        ) from None


def _check_page(page: Any, where: str) -> None:
    """Refuse a search page that is not an ItemCollection (pystac-client would take a page
    without ``features`` as the end of the results, silently)."""
    if not (
        isinstance(page, dict)
        and page.get("type") == "FeatureCollection"
        and isinstance(page.get("features"), list)
    ):
        raise StacResponseError(
            f"{where} answered a search with {_describe(page)}, not an ItemCollection "
            "(a FeatureCollection of items). Check that the URL is a STAC API."
        )


def _describe(obj: Any) -> str:
    if not isinstance(obj, dict):
        return f"a JSON {type(obj).__name__}"
    keys = ", ".join(map(repr, list(obj)[:5]))
    return f"a JSON object of type {obj.get('type')!r} (keys {keys})" if obj else "an empty JSON object"


def _present(requested: list[str], available: Iterable[str], where: str, defaulted: bool) -> list[str]:
    """The requested collections the source has. Collections named by the caller must all be
    there; defaulted ones (the provider's for ``sensors``) may be partly absent: a file holding
    only Landsat items is searched for Landsat."""
    have = set(available)
    present = [c for c in requested if c in have]
    if not defaulted or not present:
        _check_collections(requested, have, where)
    absent = [c for c in requested if c not in have]
    if absent:
        log.info("%s has no %s; searching %s", where, ", ".join(absent), ", ".join(present))
    return present


def _search_local(
    path: Path,
    *,
    collections: list[str],
    spatial: _SpatialFilter,
    interval: Interval | None,
    defaulted: bool = False,
) -> Iterator[pystac.Item]:
    features = _read_local(path)
    collections = _present(
        collections, (f.get("collection") for f in features if f.get("collection")), str(path), defaulted
    )
    wanted = set(collections)
    for feature in features:
        if feature.get("collection") not in wanted:
            continue
        item = pystac.Item.from_dict(feature)
        if spatial(item) and _within_time(item, interval):
            yield item


def _is_percent(value: Any) -> bool:
    try:
        return 0 <= float(value) <= 100
    except (TypeError, ValueError):
        return False


def _sort_key(item: pystac.Item) -> tuple[str, str, str]:
    start, _ = _item_interval(item)
    return (start.isoformat() if start else "", item.collection_id or "", item.id)


def search(
    source: str | os.PathLike[str],
    *,
    collections: Sequence[str] | None = None,
    provider: str | Provider | None = None,
    sensors: Sequence[str] = SENSORS,
    bbox: Sequence[float] | None = None,
    intersects: Mapping[str, Any] | Any | None = None,
    datetime: DatetimeLike | Sequence[DatetimeLike] = None,
    max_cloud: float | None = None,
    max_items: int | None = None,
    page_size: int = 100,
    require: bool = False,
    timeout: float = 30,
    retries: int = 3,
    backoff: float = 0.5,
    include_pan: bool = False,
    total_timeout: float | None = 300,
) -> pystac.ItemCollection:
    """Find Landsat and Sentinel-2 items in a STAC API or a local stac-geoparquet file.

    Parameters
    ----------
    source
        A STAC API root URL (``http(s)://…``), or a local item file (stac-geoparquet,
        ndjson, ItemCollection JSON) or a directory holding ``items.parquet``.
    collections
        Collection ids to search. Default: the ``provider``'s collections for ``sensors``.
    provider
        A provider profile name (:data:`harmonize.providers.PROVIDERS`) or object. Default: the
        profile whose URL is ``source``, else ``"local"`` (Earth Search v1 ids). Its signer, if
        any, is applied to every item found.
    sensors
        Sensors whose collections to search when ``collections`` is not given.
    bbox
        ``(west, south, east, north)`` in WGS84 degrees.
    intersects
        A GeoJSON geometry (dict or object with ``__geo_interface__``); not with ``bbox``.
    datetime
        A date, datetime, ``"start/end"`` range (``..`` for open) or ``(start, end)`` pair;
        partial dates (``"2023-06"``) cover their whole period.
    max_cloud
        Keep items with ``eo:cloud_cover <= max_cloud`` (percent). Sent to servers that conform
        to Filter (CQL2) or Query, and always checked on the client.
    max_items
        Stop after this many items (after the cloud filter).
    page_size
        Items per page requested from an API.
    require
        Raise :class:`~harmonize.errors.EmptySearchError` when nothing is found.
    timeout, retries, backoff
        Per-request timeout (s), retries on connection errors and HTTP 429/5xx, and the urllib3
        backoff factor between them.
    include_pan
        Also search the provider's Landsat Level-1 collection (the 15 m pan band).
    total_timeout
        Seconds the whole API search may take (``None``: no limit); ``timeout`` bounds each
        socket read only, which a server sending a byte every few seconds never reaches.

    Returns
    -------
    pystac.ItemCollection
        Items sorted by time, then collection and id; asset hrefs as the source gave them.

    Raises
    ------
    InvalidDatetimeError, InvalidBBoxError
        For malformed or reversed dates, or a bad box or geometry.
    UnknownProviderError
        For a provider name without a profile.
    UnknownCollectionError
        For unknown sensors, or collections the source does not have (the message lists those
        it has).
    ServerUnreachableError
        If the API cannot be reached, or keeps answering 5xx, after ``retries``.
    EmptySearchError
        If ``require`` and nothing matched.
    InvalidSearchError
        For ``max_cloud`` outside 0-100, or ``page_size``, ``max_items``, ``retries`` or
        ``total_timeout`` out of range.
    ItemFileError
        If a local ``source`` is missing (:class:`~harmonize.errors.ItemFileNotFoundError`, a
        ``FileNotFoundError``), empty, truncated or holds no STAC items.
    StacResponseError
        If the API answers HTML, garbage, or pages that are not ItemCollections.
    """
    interval = parse_datetime(datetime)
    if bbox is not None and intersects is not None:
        raise InvalidBBoxError("Pass either bbox= or intersects=, not both.")
    box = validate_bbox(bbox) if bbox is not None else None
    geometry = _geometry(intersects) if intersects is not None else None
    if total_timeout is not None and not total_timeout > 0:
        raise InvalidSearchError(f"total_timeout={total_timeout!r} must be a positive number of seconds.")
    if max_cloud is not None and not _is_percent(max_cloud):
        raise InvalidSearchError(f"max_cloud={max_cloud!r} must be a percentage between 0 and 100.")
    if page_size < 1 or (max_items is not None and max_items < 0):
        raise InvalidSearchError("page_size must be >= 1 and max_items >= 0 (or None).")
    if retries < 0:
        raise InvalidSearchError("retries must be >= 0.")
    prov = _resolve_provider(source, provider)
    if isinstance(collections, str):
        collections = [collections]
    ids = list(collections) if collections is not None else _collection_ids(prov, sensors, include_pan)
    if not ids:
        raise UnknownCollectionError("collections=[] searches nothing; pass at least one collection id.")
    max_cloud = float(max_cloud) if max_cloud is not None else None

    if is_api_url(source):
        where = redact_url(str(source))
        found: Iterator[pystac.Item] = _search_api(
            str(source),
            collections=ids,
            bbox=box,
            intersects=geometry,
            interval=interval,
            max_cloud=max_cloud,
            max_items=max_items,
            page_size=page_size,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            total_timeout=total_timeout,
            defaulted=collections is None,
        )
    else:
        path = _local_path(source)
        where = str(path)
        found = _search_local(
            path, collections=ids, spatial=_SpatialFilter(box, geometry), interval=interval,
            defaulted=collections is None,
        )

    log.info(
        "Searching %s for %s (bbox=%s, datetime=%s, max_cloud=%s)",
        where,
        ids,
        box,
        _interval_string(interval) if interval else None,
        max_cloud,
    )
    items: list[pystac.Item] = []
    seen: set[tuple[str | None, str]] = set()
    for item in found:
        key = (item.collection_id, item.id)
        if key in seen or not _cloud_ok(item, max_cloud):
            continue
        seen.add(key)
        items.append(prov.sign(item) if prov.sign is not None else item)
        if max_items is not None and len(items) >= max_items:
            break
    if isinstance(found, Iterator) and hasattr(found, "close"):
        found.close()  # type: ignore[attr-defined]
    items.sort(key=_sort_key)
    log.info("Found %d items in %s", len(items), where)
    if require and not items:
        raise EmptySearchError(
            f"No items in {where} for collections {ids}, bbox={box}, "
            f"datetime={_interval_string(interval) if interval else None}, max_cloud={max_cloud}. "
            "Widen the area or the dates, raise max_cloud, or check the collections."
        )
    return pystac.ItemCollection(items, clone_items=False)
