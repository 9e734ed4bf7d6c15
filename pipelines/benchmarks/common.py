"""What every benchmark shares: the machine it ran on, the one JSON document it prints, and its
command line read into keyword arguments for Python callers (tests)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from typing import Any

import click

__all__ = ["machine", "print_document", "options_from_argv"]


def machine() -> dict[str, Any]:
    """A short description of the machine a figure was measured on.

    Returns
    -------
    dict
        ``cpus`` (usable cores), ``python``, ``platform`` and ``gpu`` (CUDA device name or ``None``).
    """
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover - torch missing or broken
        gpu = None
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": gpu,
    }


def print_document(name: str, figures: dict[str, Any]) -> None:
    """Print one benchmark's figures as one indented JSON document, with the machine.

    Parameters
    ----------
    name
        The benchmark (``world``, ``load`` …), the document's ``benchmark`` field.
    figures
        What the benchmark measured.
    """
    doc = {"benchmark": name, "machine": machine(), **figures}
    click.echo(json.dumps(doc, indent=2, default=str))


def options_from_argv(command: click.Command, argv: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments ``command``'s callback would get for the command line ``argv``.

    Parameters
    ----------
    command
        A benchmark's click command.
    argv
        Its options, as on the command line (``["--dates", "36", ...]``).

    Returns
    -------
    dict
        Option name (``dates``, ``size_km`` …) -> parsed value, defaults filled in.
    """
    with command.make_context(command.name, list(argv)) as ctx:
        return dict(ctx.params)
