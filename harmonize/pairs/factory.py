"""The dataset factory of ``harmonize train``: search, load a cube, index its pairs, serve them.

:func:`datasets_from_config` reads a training config's ``dataset`` mapping and returns the
train and validation :class:`~harmonize.pairs.PairDataset`. The grid is explicit (``bbox``,
``crs``, ``resolution``) or derived by :func:`harmonize.cube.load_cube` from the Sentinel-2
footprints; a reference is an explicit store path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harmonize.errors import HarmonizeError
from harmonize.pairs.dataset import PairDataset
from harmonize.pairs.index import PairConfig, build_pair_index
from harmonize.pairs.reference import open_reference_store

__all__ = ["datasets_from_config"]

_DEFAULT_CHUNKS = {"time": 1, "y": 512, "x": 512}


def datasets_from_config(config: Any) -> tuple[PairDataset, PairDataset | None]:
    """Dataset factory of ``harmonize train``: load a cube, index its pairs, serve train and val.

    Parameters
    ----------
    config
        A :class:`harmonize.train.TrainConfig` (its ``dataset`` mapping is read), or the mapping
        itself. Keys:

        ``source``
            Where the items are: a STAC API URL, an item file, or a directory holding
            ``items.parquet``. Required.
        ``bbox``, ``datetime``, ``max_cloud``
            Passed to :func:`harmonize.catalog.search`; ``bbox`` also bounds the cube.
        ``crs``, ``resolution``
            The cube's grid (:func:`harmonize.cube.load_cube`); without ``bbox``, ``crs`` and
            ``resolution`` the grid is the Sentinel-2 items' footprint on the 10 m grid.
        ``chunks``
            dask chunks of the cube (default ``{"time": 1, "y": 512, "x": 512}``).
        ``pairs``
            :class:`~harmonize.pairs.PairConfig` fields (``max_days``, ``min_clear``, ``patch_size`` …).
        ``cache``
            A folder for Zarr caches of the samples (``train.zarr``, ``val.zarr``), reused by
            later epochs and runs.
        ``reference``
            A Zarr store of reference reflectance on ``time, y, x`` (the cube's grid or one
            containing it); validation samples then carry it and training scores against it.

    Returns
    -------
    tuple
        ``(train, val)``; ``val`` is ``None`` when the index has no validation windows.
    """
    params = dict(getattr(config, "dataset", config) or {})
    if "source" not in params:
        raise HarmonizeError("dataset.source is required: a STAC API URL, an item file or an item folder")
    if "truth" in params:
        raise HarmonizeError(
            "dataset.truth is no longer read: pass dataset.reference: PATH, a Zarr store of "
            "reference reflectance on time, y, x"
        )
    cube = _load(params)
    index = build_pair_index(cube, PairConfig(**params.get("pairs", {})))
    cache = params.get("cache")
    train = PairDataset(cube, index, "train", cache=None if cache is None else Path(cache) / "train.zarr")
    val = None
    if (index["split"] == "val").any():
        reference = params.get("reference")
        val = PairDataset(
            cube,
            index,
            "val",
            reference=None if reference is None else open_reference_store(reference),
            cache=None if cache is None else Path(cache) / "val.zarr",
        )
    return train, val


def _load(params: dict[str, Any]) -> Any:
    """Search ``params["source"]`` and load its items (with pan) as one lazy cube."""
    from harmonize.catalog import search
    from harmonize.cube import load_cube

    items = search(
        params["source"],
        bbox=params.get("bbox"),
        datetime=params.get("datetime"),
        max_cloud=params.get("max_cloud"),
        include_pan=True,
        require=True,
    )
    grid = {k: params[k] for k in ("crs", "resolution") if params.get(k) is not None}
    return load_cube(items, bbox=params.get("bbox"), chunks=params.get("chunks", _DEFAULT_CHUNKS), **grid)
