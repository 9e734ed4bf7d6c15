"""Co-registration against the simulator's manifest: which Landsat scenes were registered, and how well.

:func:`coregistration_table` lists every Landsat step of an ingested cube with the shift the
ingest applied (``shift_x``/``shift_y``, zero for a flagged scene), the shift the simulator
injected (the manifest's ``shift``, passed in as a mapping: this module does not read the
simulator), its clear land fraction and the error. :func:`coregistration_summary` reduces it to
the issue's two figures over the *usable* scenes (at least ``min_clear`` of the land clear): the
fraction co-registered, and the RMSE of the applied shift against the injected one (a flagged
scene counts with its whole injected shift).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pipelines.evaluation.truth import land_mask, sensor_part

__all__ = ["USABLE_CLEAR", "coregistration_table", "coregistration_summary"]

#: A Landsat scene is *usable* with at least this share of its land pixels clear.
USABLE_CLEAR = 0.10


Manifest = Callable[[str], Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]


def _injected(scene: Manifest, item_id: str) -> tuple[float, float]:
    """The manifest's ``[dx, dy]`` of ``item_id`` (a mapping id -> entry, or a lookup function), on
    the world's CRS: a scene in another UTM zone (a two-zone world) gives ``shift_world``, its
    ``shift`` being in its own CRS, rotated by the grid convergence from the cube's."""
    entry = scene(item_id) if callable(scene) else scene[item_id]
    dx, dy = entry.get("shift_world", entry["shift"])
    return float(dx), float(dy)


def coregistration_table(
    cube: xr.Dataset,
    manifest: Manifest,
    truth: xr.Dataset,
) -> pd.DataFrame:
    """Every Landsat scene of ``cube``: applied shift, injected shift, clear land fraction, error.

    Parameters
    ----------
    cube
        The ingested cube (both sensors), with the Landsat steps' ``item_id``, ``shift_x``,
        ``shift_y`` and ``shift_flagged`` coordinates.
    manifest
        The injected shift per scene: a mapping item id -> manifest entry (with ``shift``), or a
        function of the item id giving it (``World.scene``).
    truth
        The simulator's truth (its ``landcover`` sets which pixels are land).

    Returns
    -------
    pandas.DataFrame
        Indexed by time: ``item_id``, ``dx``, ``dy`` (applied), ``true_dx``, ``true_dy``,
        ``flagged``, ``clear_land`` (fraction) and ``error_m`` (distance between applied and
        injected shift).
    """
    landsat = sensor_part(cube, "landsat")
    land = land_mask(truth[["landcover"]].load(), landsat)
    n_land = max(int(land.sum()), 1)
    clear_land = (landsat["clear"] & land).sum(("y", "x")).values / n_land
    ids = [str(v) for v in landsat["item_id"].values]
    true = np.array([_injected(manifest, i) for i in ids], dtype=float).reshape(-1, 2)
    dx = np.asarray(landsat["shift_x"].values, float) if "shift_x" in landsat.coords else np.zeros(len(ids))
    dy = np.asarray(landsat["shift_y"].values, float) if "shift_y" in landsat.coords else np.zeros(len(ids))
    flagged = (
        np.asarray(landsat["shift_flagged"].values, bool)
        if "shift_flagged" in landsat.coords
        else np.ones(len(ids), bool)
    )
    return pd.DataFrame(
        {
            "item_id": ids,
            "dx": dx,
            "dy": dy,
            "true_dx": true[:, 0],
            "true_dy": true[:, 1],
            "flagged": flagged,
            "clear_land": np.asarray(clear_land, float),
            "error_m": np.hypot(dx - true[:, 0], dy - true[:, 1]),
        },
        index=pd.DatetimeIndex(landsat["time"].values, name="time"),
    )


def coregistration_summary(table: pd.DataFrame, *, min_clear: float = USABLE_CLEAR) -> dict[str, float]:
    """The co-registration figures over the usable scenes of :func:`coregistration_table`.

    Parameters
    ----------
    table
        :func:`coregistration_table`'s output.
    min_clear
        Clear land fraction from which a scene is usable.

    Returns
    -------
    dict
        ``scenes``, ``usable``, ``coregistered`` (usable and not flagged),
        ``coregistered_fraction`` (of the usable scenes; NaN without one) and ``shift_rmse_m``
        (applied against injected shift, RMSE over the usable scenes, flagged ones included).
    """
    usable = table["clear_land"].to_numpy() >= min_clear
    ok = usable & ~table["flagged"].to_numpy()
    err = table["error_m"].to_numpy()[usable]
    return {
        "scenes": float(len(table)),
        "usable": float(usable.sum()),
        "coregistered": float(ok.sum()),
        "coregistered_fraction": float(ok.sum() / usable.sum()) if usable.any() else float("nan"),
        "shift_rmse_m": float(np.sqrt(np.mean(err**2))) if usable.any() else float("nan"),
    }
