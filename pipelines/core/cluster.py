"""Where a pipeline's dask graphs run: local schedulers, a LocalCluster sized to the machine, or
any dask.distributed scheduler.

``scheduler`` values understood by :func:`dask_scheduler`:

``None`` or ``"local"``
    A ``distributed.LocalCluster`` sized to this machine: the cores this process may run on
    (``os.sched_getaffinity``) and the memory its cgroup allows (cgroup v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``, capped by physical memory), like odc-stats' local cluster.
``"threads"``, ``"synchronous"``, ``"processes"``
    dask's single-machine schedulers (no cluster start-up; no dashboard).
``"tcp://host:port"`` (or any other address)
    An existing dask.distributed scheduler.

With a distributed client the dashboard link is logged and, when ``report`` names a file, a
``distributed.performance_report`` HTML is written there when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask

from harmonize.errors import HarmonizeError
from harmonize.redact import redact_text, redact_url

log = logging.getLogger(__name__)

__all__ = [
    "LOCAL_SCHEDULERS",
    "available_cores",
    "available_memory",
    "dask_scheduler",
    "local_cluster_kwargs",
]

#: dask's in-process / single-machine schedulers.
LOCAL_SCHEDULERS = ("threads", "synchronous", "sync", "single-threaded", "processes")

_CGROUP_LIMITS = (
    "/sys/fs/cgroup/memory.max",  # cgroup v2
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        import psutil

        return int(psutil.virtual_memory().total)


def available_memory() -> int:
    """Bytes of memory this process may use: the cgroup limit if one is set, else physical memory."""
    total = _physical_memory()
    for path in _CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text and text != "max":
            limit = int(text)
            if 0 < limit < total:  # v1 reports a huge number when unlimited
                return limit
    return total


def local_cluster_kwargs(
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: int | str | None = None,
    processes: bool = True,
) -> dict[str, Any]:
    """Arguments of a ``LocalCluster`` sized to the machine.

    By default one single-threaded worker process per core (GDAL reads and numpy both release the
    GIL, but odc-stac's and zarr's Python overhead scales better over processes), each with an
    equal share of the cgroup memory limit.
    """
    cores = available_cores()
    if n_workers is None:
        n_workers = cores if threads_per_worker is None else max(1, cores // threads_per_worker)
    if threads_per_worker is None:
        threads_per_worker = max(1, cores // n_workers)
    if memory_limit is None:
        memory_limit = int(available_memory() * 0.9 / n_workers)
    return {
        "n_workers": int(n_workers),
        "threads_per_worker": int(threads_per_worker),
        "memory_limit": memory_limit,
        "processes": processes,
        "dashboard_address": ":0",  # a free port: several jobs may run side by side
    }


@contextlib.contextmanager
def dask_scheduler(
    scheduler: str | None = None,
    *,
    report: str | os.PathLike[str] | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: int | str | None = None,
    processes: bool = True,
    connect_timeout: float = 20,
) -> Iterator[Any]:
    """Run the ``with`` block's dask computations on ``scheduler``.

    Parameters
    ----------
    scheduler
        ``None``/``"local"`` (a LocalCluster sized to the machine), a dask local scheduler name
        (``"threads"``, ``"synchronous"``, ``"processes"``), or a distributed scheduler address.
    report
        Where to write the ``performance_report`` HTML (distributed schedulers only).
    n_workers, threads_per_worker, memory_limit, processes
        LocalCluster settings; defaults from :func:`local_cluster_kwargs`.
    connect_timeout
        Seconds to wait for a scheduler at an address.

    Yields
    ------
    distributed.Client or None
        The client (registered as the default scheduler), or ``None`` for a local scheduler.
    """
    name = (scheduler or "local").strip()
    if name in LOCAL_SCHEDULERS:
        log.info("dask scheduler: %s", name)
        with dask.config.set(scheduler=name):
            yield None
        return

    from distributed import Client, LocalCluster, performance_report

    with contextlib.ExitStack() as stack:
        if name == "local":
            kw = local_cluster_kwargs(n_workers, threads_per_worker, memory_limit, processes)
            cluster = stack.enter_context(LocalCluster(**kw))
            client = stack.enter_context(Client(cluster))
            log.info(
                "LocalCluster: %d worker(s) x %d thread(s), %s memory each",
                kw["n_workers"],
                kw["threads_per_worker"],
                _fmt_bytes(kw["memory_limit"]),
            )
        else:
            client = stack.enter_context(_connect(Client, name, connect_timeout))
            log.info("connected to dask scheduler %s", redact_url(name))
        log.info("dask dashboard: %s", client.dashboard_link)
        if report is not None:
            Path(report).parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(performance_report(filename=str(report)))
        yield client
    if report is not None:
        log.info("dask performance report: %s", report)


def _connect(client_cls: Any, address: str, timeout: float) -> Any:
    """A client of the scheduler at ``address``, or a HarmonizeError saying it is not there."""
    try:
        return client_cls(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise HarmonizeError(
            f"could not reach the dask scheduler at {redact_url(address)} within {timeout:g} s "
            f"({type(exc).__name__}: {redact_text(str(exc))[:160]}). Start it (`dask scheduler`), check "
            "the address, or run with --scheduler local."
        ) from None


def _fmt_bytes(n: int | str) -> str:
    if isinstance(n, str):
        return n
    return f"{n / 2**30:.1f} GiB"
