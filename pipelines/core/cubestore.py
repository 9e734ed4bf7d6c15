"""A transactional cube store: a stage's units as groups of one Icechunk repository.

Plain Zarr on a local disk commits a unit by renaming its folder into place; object storage has
no rename, so a job killed while writing ``s3://…`` leaves a half-written store that looks
complete. An `Icechunk <https://icechunk.io>`_ repository is versioned, transactional Zarr on a
local folder or S3: chunks written in a session stay invisible until ``commit`` writes a new
snapshot and moves the branch to it in one conditional write. So here:

- each batch of units (one group per acquisition, ``scenes/<name>.zarr``) is one commit, whose
  metadata lists the units it added and the STAC items each was made from (:meth:`history`);
- the repository's root group holds the ledger of every committed unit and the stage's metadata
  (the grid), committed with the data, so the list of units and the units cannot disagree;
- a job killed at any moment leaves the branch at its last commit, readable and complete; the
  next run sees that commit's units and redoes only the rest;
- a reader opens one snapshot (:meth:`open`), so every unit it reads belongs to the same commit,
  whatever a writer commits meanwhile.

``location`` is a local folder or ``s3://bucket/prefix``. For S3 the usual AWS variables apply
(``AWS_ACCESS_KEY_ID`` …, ``AWS_REGION``); a non-AWS endpoint is read from
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` or GDAL's ``AWS_S3_ENDPOINT`` + ``AWS_HTTPS``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from harmonize.errors import HarmonizeError
from harmonize.io import prepare_for_zarr

__all__ = ["BRANCH", "RepoUnit", "CubeRepo", "storage_for", "is_remote"]

#: The branch every stage commits to.
BRANCH = "main"
_UNITS, _META = "harmonize_units", "harmonize_meta"


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is an object-store URL (``s3://…``) rather than a local folder."""
    return "://" in os.fspath(location) and not os.fspath(location).startswith("file://")


def _s3_endpoint() -> str | None:
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url:
        return url
    host = os.environ.get("AWS_S3_ENDPOINT")  # GDAL's spelling: host[:port], scheme in AWS_HTTPS
    if host:
        scheme = "http" if os.environ.get("AWS_HTTPS", "YES").upper() in ("NO", "FALSE", "0") else "https"
        return host if "://" in host else f"{scheme}://{host}"
    return None


def storage_for(location: str | os.PathLike[str]) -> Any:
    """The Icechunk storage of a local folder or an ``s3://bucket/prefix`` URL.

    Raises
    ------
    HarmonizeError
        For a URL scheme other than ``s3://``.
    """
    import icechunk

    loc = os.fspath(location)
    if not is_remote(loc):
        return icechunk.local_filesystem_storage(str(Path(loc.removeprefix("file://")).resolve()))
    scheme, _, rest = loc.partition("://")
    if scheme != "s3":
        raise HarmonizeError(f"a cube repository lives in a local folder or on s3://, not {scheme}://")
    bucket, _, prefix = rest.partition("/")
    endpoint = _s3_endpoint()
    return icechunk.s3_storage(
        bucket=bucket,
        prefix=prefix.strip("/") or None,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        endpoint_url=endpoint,
        allow_http=bool(endpoint and endpoint.startswith("http://")),
        force_path_style=endpoint is not None,
        from_env=True,
    )


@dataclass
class RepoUnit:
    """One unit to commit: its group name, dataset, source items and ledger info."""

    name: str
    dataset: xr.Dataset
    items: Sequence[str]
    info: Mapping[str, Any] = field(default_factory=dict)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class CubeRepo:
    """The Icechunk repository of one stage's units (see the module docstring).

    Parameters
    ----------
    location
        Local folder or ``s3://bucket/prefix``; created on first use.
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        import icechunk

        if "ICECHUNK_LOG" not in os.environ:
            # a run holds the output folder's lock, so the local store's "not safe for concurrent
            # commits" warning (printed on every opening) does not apply
            icechunk.set_logs_filter("icechunk=warn,icechunk::storage::object_store=error")
        self.location = os.fspath(location)
        self._repo = icechunk.Repository.open_or_create(storage_for(self.location))

    def __repr__(self) -> str:
        return f"CubeRepo({self.location!r})"

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> str:
        """Id of the branch's last commit."""
        return self._repo.lookup_branch(BRANCH)

    def _root_attrs(self, snapshot: str | None) -> dict[str, Any]:
        import zarr

        session = self._repo.readonly_session(snapshot_id=snapshot or self.snapshot())
        try:
            return dict(zarr.open_group(session.store, mode="r", zarr_format=3).attrs)
        except FileNotFoundError:  # a new repository: no root group yet
            return {}

    def units(self, snapshot: str | None = None) -> dict[str, dict[str, Any]]:
        """``{unit name: {"items": [...], "committed": ..., ...}}`` at ``snapshot`` (default: last)."""
        return dict(self._root_attrs(snapshot).get(_UNITS, {}))

    def meta(self, snapshot: str | None = None) -> dict[str, Any]:
        """The stage metadata committed with the units (the grid, the source …)."""
        return dict(self._root_attrs(snapshot).get(_META, {}))

    def open(self, names: Sequence[str] | None = None, snapshot: str | None = None) -> xr.Dataset:
        """The units ``names`` (default: all) of one snapshot as one lazy dataset sorted by time.

        Raises
        ------
        HarmonizeError
            If the snapshot holds none of them.
        """
        from pipelines.core.units import combine_units

        snap = snapshot or self.snapshot()
        names = sorted(self.units(snap)) if names is None else list(names)
        if not names:
            raise HarmonizeError(f"the cube repository {self.location} holds no committed unit yet")
        return combine_units([self.open_unit(n, snap) for n in names])

    def open_unit(self, name: str, snapshot: str | None = None) -> xr.Dataset:
        """One unit of one snapshot, lazy (cached: a snapshot never changes)."""
        from pipelines.core.units import open_unit_store

        snap = snapshot or self.snapshot()
        session = self._repo.readonly_session(snapshot_id=snap)
        return open_unit_store(session.store, group=name, key=(self.location, snap, name))

    def history(self) -> list[dict[str, Any]]:
        """Every commit, oldest first: ``snapshot``, ``written_at``, ``message`` and ``units``
        (``{unit name: [item ids]}`` that commit added or replaced)."""
        out = []
        for info in self._repo.ancestry(branch=BRANCH):
            meta = dict(info.metadata or {})
            out.append(
                {
                    "snapshot": info.id,
                    "written_at": info.written_at,
                    "message": info.message,
                    "units": dict(meta.get("units", {})),
                }
            )
        return out[::-1]

    # ------------------------------------------------------------------ writing
    def commit(
        self, units: Sequence[RepoUnit], *, message: str, meta: Mapping[str, Any] | None = None
    ) -> str:
        """Write ``units`` and commit them with the updated ledger in one transaction.

        Nothing is visible to readers (or to a later run) before this returns: a process killed
        inside leaves the branch at the previous commit.

        Returns
        -------
        str
            The new snapshot id.
        """
        import dask
        import zarr

        # computed where the scheduler runs (a cluster's workers too), written from this process:
        # a session is not shared with workers (icechunk.xarray.to_icechunk would fork and merge
        # it, but its writer no longer matches xarray's ZarrStore API)
        datasets = dask.compute(*[prepare_for_zarr(u.dataset) for u in units])
        session = self._repo.writable_session(BRANCH)
        for unit, ds in zip(units, datasets, strict=True):
            ds.to_zarr(session.store, group=unit.name, mode="w", zarr_format=3, consolidated=False)
        root = zarr.open_group(session.store, mode="a", zarr_format=3)
        ledger = dict(root.attrs.get(_UNITS, {}))
        added = {}
        for unit in units:
            items = sorted(set(unit.items))
            ledger[unit.name] = {"items": items, "committed": _now(), **dict(unit.info)}
            added[unit.name] = items
        attrs = {_UNITS: ledger}
        if meta is not None:
            attrs[_META] = dict(meta)
        root.attrs.update(attrs)
        return session.commit(message, metadata={"units": added})

    def set_meta(self, meta: Mapping[str, Any], message: str = "stage metadata") -> str:
        """Commit the stage metadata alone (the grid a first run fixes)."""
        import zarr

        session = self._repo.writable_session(BRANCH)
        zarr.open_group(session.store, mode="a", zarr_format=3).attrs.update({_META: dict(meta)})
        return session.commit(message, metadata={"units": {}})

    def iter_units(self, snapshot: str | None = None) -> Iterator[tuple[str, xr.Dataset]]:
        """``(name, dataset)`` of every unit of one snapshot."""
        snap = snapshot or self.snapshot()
        for name in sorted(self.units(snap)):
            yield name, self.open_unit(name, snap)
