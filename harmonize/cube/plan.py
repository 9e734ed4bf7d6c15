"""Planning a load from metadata alone: which scenes make which time step on which grid.

:func:`plan_load` is the first of :func:`harmonize.cube.load_cube`'s three steps (plan -> read ->
assemble), as odc-stac's ``parse_items -> output_geobox -> group`` and stackstac's ``prepare``
are. It reads only the parsed items (:class:`harmonize.items.Scene`): it checks the requested
bands, masks and assets, fixes the common grid, keeps the Level-2 scenes on it, applies the
shift table, and groups same-day scenes of one collection, platform and scaling into
:class:`TimeStep` records. Nothing is opened or read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import pystac
from odc.geo.geobox import GeoBox

from harmonize.bands import LST, LST_QA, PAN, REFLECTANCE_BANDS, check_bands
from harmonize.errors import EmptySearchError, HarmonizeError, MissingAssetError, NoOverlapError
from harmonize.grid import DEFAULT_RESOLUTION, common_geobox, scenes_overlapping
from harmonize.items import Scene, parse_items
from harmonize.providers import CollectionProfile, Provider, Scaling, get_provider
from harmonize.qa import MASK_NAMES

__all__ = ["DEFAULT_CHUNKS", "Groupby", "ShiftsLike", "TimeStep", "LoadPlan", "plan_load", "shifts_by_item"]

log = logging.getLogger(__name__)

#: Chunking used when ``chunks`` is not given: one scene per chunk, 512 x 512 pixels.
DEFAULT_CHUNKS: dict[str, int] = {"time": 1, "y": 512, "x": 512}

Groupby = Literal["solar_day", "time", "id"]
#: Per Level-2 item id ``(dx, dy)`` metres, or a shift table of :func:`harmonize.coregister.estimate_shifts`.
ShiftsLike = Mapping[str, tuple[float, float]] | pd.DataFrame | None


@dataclass(frozen=True)
class TimeStep:
    """One time step of the cube: same-day Level-2 scenes of one collection, platform and scaling.

    Attributes
    ----------
    scenes
        The Level-2 scenes fused into this step (one, or several same-day tiles).
    scaling
        The reflectance bands' scaling, shared by the scenes.
    shift
        ``(dx, dy)`` metres added to the scenes' (and their pans') geotransform origin.
    flagged, quality
        The shift table's verdict on this step (``None`` / NaN without a table or a row).
    """

    scenes: tuple[Scene, ...]
    scaling: Scaling
    shift: tuple[float, float] = (0.0, 0.0)
    flagged: bool | None = None
    quality: float = float("nan")

    @property
    def profile(self) -> CollectionProfile:
        """The collection profile of the step's scenes."""
        return self.scenes[0].profile

    @property
    def platform(self) -> str:
        """The normalised platform of the step's scenes."""
        return self.scenes[0].platform

    @property
    def sensor(self) -> str:
        """``"landsat"`` or ``"sentinel-2"``."""
        return self.scenes[0].sensor

    @property
    def time(self) -> datetime:
        """The earliest acquisition time of the step's scenes."""
        return min(s.time for s in self.scenes)

    @property
    def pans(self) -> tuple[Scene, ...]:
        """The Level-1 pan companions of the step's scenes (Landsat only)."""
        return tuple(s.pan for s in self.scenes if s.pan is not None)

    @property
    def family(self) -> tuple[str, str]:
        """Steps of one family are read by one odc-stac load: (collection, blue asset key)."""
        return (self.profile.collection, str(self.profile.assets.get("blue")))


@dataclass(frozen=True)
class LoadPlan:
    """Everything :func:`harmonize.cube.load_cube` reads and builds, decided from metadata.

    Attributes
    ----------
    geobox
        The common grid.
    steps
        The time steps, sorted by time (then by first item id).
    bands
        Reflectance bands to load (canonical names, no pan).
    pan
        Whether the ``pan`` band is loaded (NaN at steps without a pan companion).
    lst
        Whether surface temperature (``lst`` and ``lst_qa``, kelvin) is loaded (NaN at
        Sentinel-2 steps); :mod:`harmonize.cube.thermal`.
    masks
        Boolean masks decoded from QA_PIXEL / SCL.
    requested
        The bands as asked for (recorded in the cube's attributes).
    provider
        The provider profile for signing hrefs and GDAL options, if one was named.
    resampling, chunks, groupby, reflectance, fail_on_error
        The load options.
    shifts
        Level-2 item id -> ``(dx, dy)`` metres added to its (and its pan's) geotransform origin.
    has_table
        Whether a shift table was given (the cube then carries ``shift_flagged`` and
        ``shift_quality``).
    """

    geobox: GeoBox
    steps: tuple[TimeStep, ...]
    bands: tuple[str, ...]
    pan: bool
    masks: tuple[str, ...]
    requested: tuple[str, ...]
    provider: Provider | None
    resampling: str
    chunks: Mapping[str, int]
    groupby: str
    reflectance: bool
    fail_on_error: bool
    shifts: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    has_table: bool = False
    lst: bool = False

    def shift_of(self, item_id: str) -> tuple[float, float]:
        """The shift applied to Level-2 item ``item_id`` (zero where none was given)."""
        return self.shifts.get(item_id, (0.0, 0.0))

    def families(self) -> dict[tuple[str, str], list[int]]:
        """Step positions of each family (:attr:`TimeStep.family`), in time order."""
        out: dict[tuple[str, str], list[int]] = {}
        for i, step in enumerate(self.steps):
            out.setdefault(step.family, []).append(i)
        return out


def _split_ids(value: Any) -> list[str]:
    """Item ids of one time step (several items may be grouped into one solar day)."""
    return [v for v in str(value).replace(";", ",").split(",") if v] or [str(value)]


def shifts_by_item(
    shifts: ShiftsLike,
) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[bool, float]]]:
    """``{l2 id: (dx, dy)}`` and ``{l2 id: (flagged, quality)}`` from a mapping or a shift table.

    A table (:func:`harmonize.coregister.estimate_shifts`) gives every Level-2 id of a row's
    ``item_id`` (comma-joined for grouped same-day scenes) its ``dx``/``dy``, and its
    ``flagged``/``quality`` when the table has them; a mapping gives shifts only.
    """
    if shifts is None:
        return {}, {}
    if not isinstance(shifts, pd.DataFrame):
        return {k: (float(v[0]), float(v[1])) for k, v in shifts.items()}, {}
    missing = [c for c in ("item_id", "dx", "dy") if c not in shifts.columns]
    if missing:
        raise HarmonizeError(f"a shift table needs the columns item_id, dx, dy; it lacks {missing}")
    moves: dict[str, tuple[float, float]] = {}
    verdicts: dict[str, tuple[bool, float]] = {}
    for r in shifts.itertuples(index=False):
        for item_id in _split_ids(r.item_id):
            moves[item_id] = (float(r.dx), float(r.dy))
            flagged = bool(getattr(r, "flagged", False))
            verdicts[item_id] = (flagged, float(getattr(r, "quality", np.nan)))
    return moves, verdicts


def _check_request(
    scenes: Sequence[Scene], bands: str | Sequence[str] | None, masks: Sequence[str]
) -> tuple[list[Scene], tuple[str, ...], tuple[str, ...]]:
    """The Level-2 scenes, the bands to load (validated) and the masks; raises on bad requests."""
    unknown_masks = [m for m in masks if m not in MASK_NAMES]
    if unknown_masks:
        raise HarmonizeError(f"Unknown mask(s) {unknown_masks}; choose from {list(MASK_NAMES)}.")
    l2 = [s for s in scenes if s.level == "L2"]
    l1 = [s for s in scenes if s.level == "L1"]
    if not l2:
        raise EmptySearchError(
            f"None of the {len(scenes)} items is a Level-2 scene "
            f"(only Level-1 {sorted({s.collection for s in l1})}); "
            "search the Level-2 collections too: pan is loaded alongside them."
        )
    has_pan = bool(l1) or any(s.pan is not None for s in l2)
    requested = (
        check_bands(bands, allow_lst=True)
        if bands is not None
        else REFLECTANCE_BANDS + ((PAN,) if has_pan else ())
    )
    if PAN in requested and not has_pan:
        raise MissingAssetError(
            "Band 'pan' needs the Landsat Collection 2 Level-1 items (landsat-c2l1) among the items; "
            "search that collection too, or leave 'pan' out of bands."
        )
    refl = tuple(b for b in requested if b not in (PAN, LST))
    for s in l2:  # every asset must be there before anything is read
        for b in (*refl, "qa", *((LST, LST_QA) if LST in requested and s.sensor == "landsat" else ())):
            s.asset_key(b)
        if PAN in requested and s.pan is not None:
            s.pan.asset_key(PAN)
    return l2, tuple(requested), tuple(masks)


def _on_grid(l2: list[Scene], geobox: GeoBox) -> list[Scene]:
    inside = scenes_overlapping(l2, geobox)
    if not inside:
        raise NoOverlapError(
            f"The grid {geobox.extent.to_crs('epsg:4326').boundingbox} does not intersect any of the "
            f"{len(l2)} Level-2 items; pass a bbox or geobox inside their footprints."
        )
    if len(inside) < len(l2):
        log.info("dropping %d item(s) outside the grid", len(l2) - len(inside))
    return inside


def _reflectance_scaling(scene: Scene, bands: Sequence[str]) -> Scaling:
    scalings = {b: scene.scaling[b] for b in bands}
    if not scalings:
        return Scaling()
    first = next(iter(scalings.values()))
    odd = {
        b: s
        for b, s in scalings.items()
        if (s.scale, s.offset, s.nodata) != (first.scale, first.offset, first.nodata)
    }
    if odd:
        raise HarmonizeError(
            f"Item {scene.id!r} scales its bands differently ({scalings}); load those bands in "
            "separate load_cube calls."
        )
    return first


def _group_key(scene: Scene, groupby: str, lon: float) -> Any:
    if groupby == "solar_day":
        return (scene.time + timedelta(hours=lon / 15.0)).date()
    if groupby == "time":
        return scene.time
    if groupby == "id":
        return scene.id
    raise ValueError(f"groupby must be 'solar_day', 'time' or 'id', not {groupby!r}.")


def _time_steps(
    l2: list[Scene],
    bands: Sequence[str],
    *,
    groupby: str,
    lon: float,
    moves: Mapping[str, tuple[float, float]],
    verdicts: Mapping[str, tuple[bool, float]],
) -> tuple[TimeStep, ...]:
    """Same-day scenes of one collection, platform and scaling grouped into steps, in time order."""
    groups: dict[Any, list[Scene]] = {}
    scalings: dict[Any, Scaling] = {}
    for s in sorted(l2, key=lambda s: (s.time, s.id)):
        scaling = _reflectance_scaling(s, bands)
        key = (
            s.collection,
            s.profile.assets.get("blue"),
            s.platform,
            (scaling.scale, scaling.offset, scaling.nodata),
            _group_key(s, groupby, lon),
        )
        groups.setdefault(key, []).append(s)
        scalings[key] = scaling
    steps = []
    for key, members in groups.items():
        shifted = [moves[s.id] for s in members if s.id in moves]
        if len(set(shifted)) > 1:
            log.warning("same-day scenes of step %s have different shifts; recording the first", key)
        verdict = next((verdicts[s.id] for s in members if s.id in verdicts), (None, float("nan")))
        steps.append(
            TimeStep(
                scenes=tuple(members),
                scaling=scalings[key],
                shift=shifted[0] if shifted else (0.0, 0.0),
                flagged=verdict[0],
                quality=verdict[1],
            )
        )
    return tuple(sorted(steps, key=lambda st: (st.time, st.scenes[0].id)))


def plan_load(
    items: Iterable[pystac.Item | Scene],
    bands: str | Sequence[str] | None = None,
    *,
    geobox: GeoBox | None = None,
    bbox: Sequence[float] | None = None,
    crs: Any = None,
    resolution: float = DEFAULT_RESOLUTION,
    groupby: Groupby = "solar_day",
    provider: str | Provider | None = None,
    shifts: ShiftsLike = None,
    reflectance: bool = True,
    masks: Sequence[str] = ("clear",),
    resampling: str = "bilinear",
    chunks: Mapping[str, int] | None = None,
    fail_on_error: bool = True,
) -> LoadPlan:
    """Plan a :func:`harmonize.cube.load_cube` from metadata alone (same parameters).

    Returns
    -------
    LoadPlan
        The grid, the time steps and the options; nothing has been opened.

    Raises
    ------
    EmptySearchError, UnknownCollectionError, UnknownBandError, MissingAssetError, NoOverlapError
        As :func:`harmonize.cube.load_cube` documents.
    """
    scenes = parse_items(items, provider)
    if not scenes:
        raise EmptySearchError(
            "load_cube got no items; widen the search (bbox, datetime, cloud cover) "
            "or check the collection ids."
        )
    l2, requested, mask_names = _check_request(scenes, bands, masks)
    gbox = common_geobox(l2, bbox=bbox, crs=crs, resolution=resolution, geobox=geobox)
    l2 = _on_grid(l2, gbox)
    moves, verdicts = shifts_by_item(shifts)
    unknown_ids = sorted(set(moves) - {s.id for s in l2})
    if unknown_ids:
        raise MissingAssetError(
            f"shifts name item(s) {unknown_ids} that are not among the Level-2 items on this grid; "
            "key shifts by the Level-2 item id."
        )
    ((lon, _),) = gbox.extent.centroid.to_crs("epsg:4326").points
    refl = tuple(b for b in requested if b not in (PAN, LST))
    steps = _time_steps(l2, refl, groupby=groupby, lon=lon, moves=moves, verdicts=verdicts)
    unmatched = [s.id for s in scenes if s.level == "L1" and not any(s is st.pan for st in l2)]
    if PAN in requested and unmatched:
        log.warning(
            "Level-1 item(s) %s match no Level-2 scene on the grid; their pan is not loaded", unmatched
        )
    return LoadPlan(
        geobox=gbox,
        steps=steps,
        bands=refl,
        pan=PAN in requested,
        masks=mask_names,
        requested=requested,
        provider=get_provider(provider) if provider is not None else None,
        resampling=resampling,
        chunks=dict(DEFAULT_CHUNKS if chunks is None else chunks),
        groupby=groupby,
        reflectance=bool(reflectance),
        fail_on_error=bool(fail_on_error),
        shifts=moves,
        has_table=isinstance(shifts, pd.DataFrame),
        lst=LST in requested,
    )
