"""Incremental, resumable job outputs: a ledger of committed units and atomic commits.

A job's output folder holds *units* (one Zarr store per scene date, say) and a ledger::

    OUT/ledger.json     {"stage", "units": {name: {"items": [...], "committed": ..., ...}}, "meta"}
    OUT/runs.jsonl      one line per run: when, what was new, what was committed, seconds
    OUT/.lock           held (flock) while a run writes, so overlapping cron runs do not collide

Each unit is written under a temporary name in the same folder and committed by an atomic
``rename``; the ledger is rewritten (temporary file + ``os.replace``) right after each commit.
So a run killed at any moment leaves every committed unit complete and listed, at most one
half-written temporary folder (removed by the next run), and the next run redoes only the units
that were not committed. Items a unit was made from are recorded with it: a later run processes
only items that no unit records yet.

A ledger can instead keep its units in a transactional cube repository
(:class:`pipelines.core.cubestore.CubeRepo`, Icechunk, local or ``s3://``; see
:meth:`Ledger.attach_repo`): then the repository's last commit is the truth about what is
committed (its units and their items are committed with the data), ``ledger.json`` records where
the repository is and mirrors its list, and :meth:`Ledger.commit_units` commits a batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harmonize.errors import HarmonizeError

log = logging.getLogger(__name__)

__all__ = ["Ledger", "tree_checksum", "file_checksum", "atomic_write_text", "commit_dir"]

_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".old-"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (readers see the old
    or the new file, never a partial one)."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def commit_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder ``tmp`` to ``final`` atomically, replacing an older ``final``.

    ``rename(2)`` cannot replace a non-empty folder, so an existing ``final`` is first renamed
    aside and deleted after the new one is in place (a crash in between leaves a ``.old-``
    folder that :meth:`Ledger.clean` removes; the ledger still lists the unit).
    """
    trash = None
    if final.exists():
        trash = final.with_name(f"{_TRASH_PREFIX}{final.name}.{uuid.uuid4().hex[:8]}")
        os.rename(final, trash)
    os.rename(tmp, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def file_checksum(path: Path) -> str:
    """SHA-256 of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_checksum(root: Path, *, exclude: Iterable[str] = ()) -> dict[str, tuple[str, int]]:
    """``{relative path: (sha256, mtime_ns)}`` of every file under ``root`` (names in ``exclude``
    skipped), to prove that a no-op run changed nothing."""
    skip = set(exclude)
    out: dict[str, tuple[str, int]] = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.name not in skip:
            out[str(p.relative_to(root))] = (file_checksum(p), p.stat().st_mtime_ns)
    return out


class Ledger:
    """The committed units of one job output folder (see the module docstring).

    Parameters
    ----------
    root
        The output folder (created if missing).
    stage
        Name of the stage writing it; a ledger of another stage is refused.
    """

    FILE = "ledger.json"

    def __init__(self, root: str | os.PathLike[str], stage: str) -> None:
        self.root = Path(root)
        self.stage = stage
        self.path = self.root / self.FILE
        if self.path.exists():
            doc = json.loads(self.path.read_text())
            if doc.get("stage") != stage:
                raise HarmonizeError(
                    f"{self.root} holds the output of stage {doc.get('stage')!r}, not {stage!r}; "
                    "give this stage its own output folder."
                )
            self.units: dict[str, dict[str, Any]] = doc.get("units", {})
            self.meta: dict[str, Any] = doc.get("meta", {})
        else:
            self.units, self.meta = {}, {}
        self.repo: Any = None
        self.snapshot: str | None = None
        if self.meta.get("repo"):
            self.attach_repo(self.meta["repo"])

    # ------------------------------------------------------------------ cube repository
    def repo_location(self, location: str | os.PathLike[str]) -> str:
        """Where a repository named ``location`` is: a URL as given, a relative path under root."""
        from pipelines.core.cubestore import is_remote

        loc = os.fspath(location)
        return loc if is_remote(loc) or os.path.isabs(loc) else str(self.root / loc)

    def attach_repo(self, location: str | os.PathLike[str]) -> None:
        """Keep this ledger's units in the cube repository at ``location`` (a local path, relative
        to the output folder, or ``s3://bucket/prefix``), created if missing; the units and the
        stage metadata are read from its last commit (nothing is written here)."""
        from pipelines.core.cubestore import CubeRepo

        if self.repo is not None and self.meta.get("repo") == os.fspath(location):
            return
        self.repo = CubeRepo(self.repo_location(location))
        self.snapshot = self.repo.snapshot()
        self.units = self.repo.units(self.snapshot)
        self.meta = {**self.meta, **self.repo.meta(self.snapshot), "repo": os.fspath(location)}

    def commit_units(self, units: Sequence[Any], message: str) -> str:
        """Commit :class:`~pipelines.core.cubestore.RepoUnit` s to the repository in one
        transaction (with the stage metadata), then mirror the ledger; returns the snapshot id."""
        if self.repo is None:
            raise HarmonizeError(f"{self.root} keeps its units as folders; commit them one by one")
        meta = {k: v for k, v in self.meta.items() if k != "repo"}
        self.snapshot = self.repo.commit(units, message=message, meta=meta)
        self.units = self.repo.units(self.snapshot)
        self.save()
        return self.snapshot

    # ------------------------------------------------------------------ queries
    @property
    def exists(self) -> bool:
        """Whether anything was ever committed here."""
        return self.path.exists() or bool(self.units)

    def items(self) -> set[str]:
        """Every STAC item id some committed unit still on disk was made from (a unit deleted
        by hand is redone, not trusted)."""
        return {i for n, u in self.units.items() if self.committed(n) for i in u.get("items", [])}

    def unit_path(self, name: str) -> Path:
        """Where unit ``name`` lives."""
        return self.root / name

    def committed(self, name: str) -> bool:
        """Whether unit ``name`` is committed and still on disk (in the repository's last commit)."""
        if self.repo is not None:
            return name in self.units
        return name in self.units and self.unit_path(name).exists()

    def committed_paths(self) -> list[Path]:
        """Paths of every committed unit still on disk, sorted by name (none for a repository:
        open its units with :meth:`CubeRepo.open`)."""
        if self.repo is not None:
            return []
        return [self.unit_path(n) for n in sorted(self.units) if self.committed(n)]

    def fingerprint(self) -> str:
        """A short hash of the committed units and their items (changes when anything is committed)."""
        doc = {k: sorted(v.get("items", [])) for k, v in sorted(self.units.items())}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ writing
    def tmp_path(self, name: str) -> Path:
        """A fresh temporary path for unit ``name`` in the same folder (same file system)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{_TMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}"

    def commit(self, name: str, tmp: Path, items: Iterable[str], **info: Any) -> Path:
        """Move ``tmp`` into place as unit ``name`` and record it with its ``items`` and ``info``."""
        final = self.unit_path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        commit_dir(tmp, final) if tmp.is_dir() else os.replace(tmp, final)
        self.units[name] = {"items": sorted(set(items)), "committed": _now(), **info}
        self.save()
        log.debug("committed %s", final)
        return final

    def forget(self, name: str) -> None:
        """Drop unit ``name`` from the ledger and the disk."""
        self.units.pop(name, None)
        p = self.unit_path(name)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        self.save()

    def save(self) -> None:
        """Write the ledger atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"stage": self.stage, "units": self.units, "meta": self.meta, "updated": _now()}
        atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n")

    def clean(self) -> list[Path]:
        """Remove leftovers of killed runs (temporary and replaced folders); return them."""
        gone = []
        if not self.root.exists():
            return gone
        # temporary units live in the root; replaced ones beside their unit (e.g. scenes/)
        folders = [
            self.root,
            *(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and not p.suffix),
        ]
        for folder in folders:
            for p in folder.iterdir():
                if p.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    gone.append(p)
        if gone:
            log.info("removed %d leftover(s) of an interrupted run in %s", len(gone), self.root)
        return gone

    def log_run(self, **fields: Any) -> None:
        """Append one JSON line about this run to ``runs.jsonl``."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "runs.jsonl", "a") as f:
            f.write(json.dumps({"at": _now(), "stage": self.stage, **fields}, default=str) + "\n")

    def runs(self) -> list[dict[str, Any]]:
        """Every run logged so far, oldest first."""
        p = self.root / "runs.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the output folder for a run.

        Raises
        ------
        HarmonizeError
            If another run holds it (an overlapping scheduled run: let it finish).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as f:  # "a": taking the lock does not touch the file
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HarmonizeError(
                    f"another run is writing {self.root} (it holds {self.root / '.lock'}); wait for it "
                    "to finish, or schedule runs further apart."
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
