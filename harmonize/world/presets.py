"""Named worlds: a :class:`~harmonize.world.WorldConfig` for each kind of place one fuses for.

>>> from harmonize.world.presets import preset_config
>>> preset_config("cloudy-season").wet_season
('06-01', '08-15')
>>> preset_config("realistic-land", seed=3).seed
3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harmonize.errors import WorldError
from harmonize.world.config import WorldConfig

__all__ = ["Preset", "PRESETS", "DEFAULT_PRESET", "preset_config", "preset_names"]

#: What :func:`preset_config` gives when no preset is named.
DEFAULT_PRESET = "demo"

# Farmland that looks like farmland: small irregular fields with texture, hedgerows on edges.
_REALISTIC_LAND: dict[str, Any] = dict(
    mean_field_ha=2.5, field_texture=1.0, hedgerow_fraction=0.4, field_irregularity=1.0
)


@dataclass(frozen=True)
class Preset:
    """A named world.

    Attributes
    ----------
    name
        What ``--preset`` / ``--world-preset`` / ``world_preset`` take.
    summary
        What the world is for, in one line.
    fields
        :class:`WorldConfig` fields over its defaults.
    tiny_fields
        Fields over ``fields`` for its tiny version (``preset_config(name, tiny=True)``), where
        the full-size fields do not fit 1.28 km (a zone boundary that must cross the AOI).
    """

    name: str
    summary: str
    fields: dict[str, Any] = field(default_factory=dict)
    tiny_fields: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "demo",
            "the demo world: 5.12 km, 2023, 6 ha flat fields, independent clouds per scene "
            "(Sentinel-2 keeps about 3 clear looks per pixel a month)",
        ),
        Preset(
            "realistic-land",
            "the demo's place and sky on realistic farmland: 2.5 ha irregular fields with patchy "
            "vigour, sowing rows and wet patches, hedgerows and tree lines on 40 % of edges",
            dict(_REALISTIC_LAND),
        ),
        Preset(
            "cloudy-season",
            "realistic farmland with a wet season (1 June - 15 August) whose clouds persist for "
            "weeks and drift slowly: Sentinel-2 gets fewer than one clear look per pixel a month "
            "then (about 0.5), and Landsat's looks (about 0.3) are the dates it adds",
            dict(_REALISTIC_LAND, wet_season=("06-01", "08-15")),
        ),
        Preset(
            "two-zones",
            "the demo's kind of fields and sky (6 ha flat fields, clouds per scene) across the UTM "
            "zone 14/15 boundary (96 W), 2023: two Sentinel-2 "
            "tiles (14SQJ in EPSG:32614, 15STD in EPSG:32615) meeting and overlapping in the AOI, "
            "mosaicked per pass, and two Landsat paths (28 and 27, 7 days apart) each covering 70 % "
            "of it (40 % sidelap)",
            dict(two_zones=True, origin=(756_920.0, 4_321_000.0)),
            tiny_fields=dict(origin=(758_940.0, 4_321_000.0)),
        ),
    )
}


def preset_names() -> list[str]:
    """The names of every preset, in the order :data:`PRESETS` lists them."""
    return list(PRESETS)


def preset_config(name: str | None = None, *, tiny: bool = False, **overrides: Any) -> WorldConfig:
    """The :class:`WorldConfig` of preset ``name``, with ``overrides`` on top.

    Parameters
    ----------
    name
        A preset (:func:`preset_names`); ``None`` gives :data:`DEFAULT_PRESET`.
    tiny
        Start from :meth:`WorldConfig.tiny` (1.28 km, six weeks) instead of the full-size world.
    **overrides
        Further :class:`WorldConfig` fields (``seed``, ``size_km``, ``start`` ...).

    Raises
    ------
    WorldError
        If ``name`` is not a preset; the message lists the presets.
    pydantic.ValidationError
        If an override is not a valid :class:`WorldConfig` field value.
    """
    key = DEFAULT_PRESET if name is None else name
    if key not in PRESETS:
        raise WorldError(
            f"unknown world preset {name!r}; choose one of: {', '.join(PRESETS)} "
            "(`harmonize world presets` says what each is for)"
        )
    preset = PRESETS[key]
    fields = {**preset.fields, **(preset.tiny_fields if tiny else {}), **overrides}
    return WorldConfig.tiny(**fields) if tiny else WorldConfig(**fields)
