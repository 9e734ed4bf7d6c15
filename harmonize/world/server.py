"""A real STAC API on a loopback port, served by the ``rustac serve`` CLI.

``rustac serve`` loads collection JSON files plus items (newline-delimited JSON or
stac-geoparquet) into its in-memory backend and answers the STAC API: landing page,
``/collections``, ``/search`` (GET and POST, paged with a ``next`` link that carries the POST
body), but it does not conform to the Query or Filter extensions (see
:mod:`harmonize.catalog`, which filters on the client where a server cannot).

Two facts about the pip build of rustac shape this module:

* Given a single ``.parquet`` file, ``rustac serve`` picks its DuckDB backend, which needs the
  DuckDB ``spatial`` extension downloaded at run time; offline every search then hangs for 30 s
  and answers 500. So the server is always started with ``--use-duckdb false``: the parquet file
  is loaded into memory like any other item file.
* GET ``/search`` answers 500 ("unsupported value") for some query parameters (``bbox``,
  ``collections`` or ``limit``; which ones changes from one server start to the next). POST
  works with all of them, and pystac-client (hence :func:`harmonize.catalog.search`) uses POST.

Examples
--------
>>> with serve("world/") as server:          # doctest: +SKIP
...     client = pystac_client.Client.open(server.url)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harmonize.errors import ServerStartError, WorldError

__all__ = ["StacServer", "ServerStartError", "serve", "serve_forever", "find_rustac", "server_inputs"]

log = logging.getLogger(__name__)

#: A world directory, a ``World``, or explicit STAC files.
Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Any

#: Item files looked for in a world directory, in order of preference.
ITEM_FILES = ("items.ndjson", "items.parquet")


@dataclass
class StacServer:
    """A running ``rustac serve`` process.

    Attributes
    ----------
    url
        Root URL of the STAC API (``http://127.0.0.1:PORT``), without a trailing slash.
    process
        The ``rustac serve`` process.
    inputs
        The files it loaded.
    """

    url: str
    process: subprocess.Popen[bytes]
    inputs: tuple[Path, ...]
    _stderr: IO[bytes] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        """The TCP port the API listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def stderr_text(self) -> str:
        """What ``rustac serve`` has written to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds.

        Safe to call more than once.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("rustac serve (pid %d) ignored SIGTERM; killing it", self.process.pid)
                self.process.kill()
                self.process.wait()
            log.info("Stopped the STAC API at %s", self.url)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def find_rustac() -> str:
    """Path of the ``rustac`` CLI: beside the running Python first, else on ``PATH``.

    Raises
    ------
    ServerStartError
        If neither has it.
    """
    beside = Path(sys.executable).parent / ("rustac.exe" if os.name == "nt" else "rustac")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rustac")
    if found:
        return found
    raise ServerStartError(
        "The `rustac` command is not installed (looked beside "
        f"{sys.executable} and on PATH). Install it with `pip install rustac` in this environment."
    )


def server_inputs(source: Source) -> tuple[Path, ...]:
    """The files ``rustac serve`` should load for ``source``.

    Parameters
    ----------
    source
        A world directory (``collections/*.json`` plus ``items.ndjson`` or ``items.parquet``;
        newline-delimited JSON is preferred because it is loaded verbatim) or a ``World`` (its
        ``root``), or one or more explicit collection / item / item-collection files.

    Raises
    ------
    WorldError
        If the directory has no item file or a given file does not exist.
    """
    root_attr = getattr(source, "root", None)  # a harmonize.world.World
    if root_attr is not None and not isinstance(source, (str, os.PathLike)):
        paths = [Path(root_attr)]
    elif isinstance(source, (str, os.PathLike)):
        paths = [Path(source)]
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise WorldError("Nothing to serve: pass a world directory or STAC files.")
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        collections = sorted((root / "collections").glob("*.json"))
        items = next((root / name for name in ITEM_FILES if (root / name).is_file()), None)
        if items is None:
            raise WorldError(
                f"{root} holds no {' or '.join(ITEM_FILES)}; create a world there first "
                "(`harmonize world create DIR`) or pass the STAC files to serve."
            )
        if not collections:
            log.warning("%s has no collections/*.json; rustac will make bare collections", root)
        return (*[p.resolve() for p in collections], items.resolve())
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise WorldError(f"Cannot serve {missing}: no such file. Check the paths.")
    return tuple(p.resolve() for p in paths)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` now (a server already listening there would
    otherwise answer in place of the one being started)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=1.0) as resp:  # noqa: S310 - loopback http
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@contextlib.contextmanager
def serve(
    source: Source,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[StacServer]:
    """Serve STAC files as a STAC API on ``host:port`` for the duration of a ``with`` block.

    Parameters
    ----------
    source
        A world directory or explicit STAC files (see :func:`server_inputs`).
    host
        Address to bind; loopback by default.
    port
        TCP port; a free one is picked when ``None``.
    startup_timeout
        Seconds to wait for the API to answer its landing page.

    Yields
    ------
    StacServer
        With ``.url``; the process is stopped (terminate, then kill) when the block exits.

    Raises
    ------
    ServerStartError
        If ``rustac`` is missing, exits early (its stderr is in the message: a port in use, a
        file it cannot parse), or does not answer within ``startup_timeout``.
    WorldError
        If ``source`` has nothing to serve.
    """
    inputs = server_inputs(source)
    exe = find_rustac()
    if port is not None and not _port_free(host, port):
        raise ServerStartError(
            f"Port {port} on {host} is in use (another server answers there); pick another port, "
            "or leave port unset to take a free one."
        )
    port = port if port is not None else _free_port(host)
    netloc = f"[{host.strip('[]')}]:{port}" if ":" in host.strip("[]") else f"{host}:{port}"
    url = f"http://{netloc}"
    # --use-duckdb false: the DuckDB backend needs an extension download (see module docstring).
    cmd = [exe, "serve", "--addr", netloc, "--use-duckdb", "false", *map(str, inputs)]
    stderr = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block the server
    process = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )
    server = StacServer(url=url, process=process, inputs=inputs, _stderr=stderr)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _answers(url):
            if process.poll() is not None:
                raise ServerStartError(
                    f"`rustac serve` exited with code {process.returncode} before answering at {url}. "
                    f"Its stderr:\n{server.stderr_text().strip()}"
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"`rustac serve` did not answer at {url} within {startup_timeout:g} s; raise "
                    f"startup_timeout for large archives. Its stderr:\n{server.stderr_text().strip()}"
                )
            time.sleep(0.05)
        log.info("Serving %d STAC file(s) at %s (pid %d)", len(inputs), url, process.pid)
        yield server
    finally:
        server.stop()


def serve_forever(
    source: Source,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 30.0,
    on_ready: Callable[[StacServer], None] | None = None,
    poll_interval: float = 0.5,
) -> int:
    """Serve ``source`` until interrupted (Ctrl-C or SIGTERM); for ``harmonize world serve``.

    Parameters
    ----------
    source, host, port, startup_timeout
        As for :func:`serve`.
    on_ready
        Called once with the running server (a CLI prints ``server.url`` here).
    poll_interval
        Seconds between checks that the process is still alive.

    Returns
    -------
    int
        0 after a clean stop.

    Raises
    ------
    ServerStartError
        If the server fails to start, or dies while serving (its stderr is in the message).
    """
    previous = signal.getsignal(signal.SIGTERM)

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        with serve(source, host=host, port=port, startup_timeout=startup_timeout) as server:
            log.info("STAC API ready at %s; press Ctrl-C to stop", server.url)
            if on_ready is not None:
                on_ready(server)
            while server.running():
                time.sleep(poll_interval)
            raise ServerStartError(
                f"`rustac serve` at {server.url} exited with code {server.process.returncode}. "
                f"Its stderr:\n{server.stderr_text().strip()}"
            )
    except KeyboardInterrupt:
        log.info("Interrupted; the STAC API has stopped")
        return 0
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when its parent dies, so a killed
    Python process leaves no orphaned server holding the port."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
