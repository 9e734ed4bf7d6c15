"""The per-epoch history of a run: ``history.csv`` and the log table."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

__all__ = ["HISTORY_COLUMNS", "write_history", "log_row"]

log = logging.getLogger(__name__)

#: The leading columns of ``history.csv`` (any other keys of the rows follow, sorted).
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_psnr", "val_ssim", "lr", "seconds"]


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """Write one row per epoch to the CSV ``path`` (missing values empty)."""
    keys = HISTORY_COLUMNS + sorted({k for r in history for k in r} - set(HISTORY_COLUMNS))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in history:
            w.writerow({k: r.get(k, "") for k in keys})


def log_row(row: dict[str, float], header: bool) -> None:
    """Log an epoch's row as a table line (after the column names when ``header``)."""
    if header:
        log.info("%5s %11s %11s %8s %7s %9s %8s", *HISTORY_COLUMNS)
    log.info("%5d %11.6f %11.6f %8.3f %7.4f %9.2e %8.1f", row["epoch"], row["train_loss"],
             row.get("val_loss", float("nan")), row.get("val_psnr", float("nan")),
             row.get("val_ssim", float("nan")), row["lr"], row["seconds"])
