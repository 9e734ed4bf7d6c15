"""STAC provider profiles: collection ids, asset keys and scalings, as data.

Each provider serves the same physical products under different names. A
:class:`CollectionProfile` maps one provider's collection onto the canonical band table
(:mod:`harmonize.bands`) and carries the fallback scaling used when an item's assets lack
``raster:bands``. Collection knowledge lives in these tables, not in if-branches, so adding a
provider is adding a profile.

Scaling precedence for one asset (see :func:`band_scaling`):

1. the asset's own ``raster:bands`` scale/offset/nodata (item-level values win over the
   collection's, as real Earth Search items require);
2. the profile's rule, which for Sentinel-2 L2A reads ``s2:processing_baseline``: baseline
   04.00 and later (2022-01-25 on) carries ``BOA_ADD_OFFSET = -1000``, i.e. offset -0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

import pystac

from harmonize.bands import PAN, REFLECTANCE_BANDS, Sensor
from harmonize.errors import MissingAssetError, UnknownBandError, UnknownCollectionError, UnknownProviderError

__all__ = [
    "Scaling",
    "CollectionProfile",
    "Provider",
    "PROVIDERS",
    "get_provider",
    "register_provider",
    "profile_for_item",
    "asset_key",
    "asset_href",
    "band_scaling",
    "qa_scaling",
    "item_sensor",
    "normalize_platform",
    "s2_boa_offset",
]

QAKind = Literal["qa_pixel", "scl"]
Level = Literal["L2", "L1"]


@dataclass(frozen=True)
class Scaling:
    """How to turn stored digital numbers into physical values: ``dn * scale + offset``.

    Attributes
    ----------
    scale, offset
        Linear scaling to reflectance.
    nodata
        The stored value that means "no data" (``None`` if the asset has none).
    dtype
        The stored data type.
    """

    scale: float = 1.0
    offset: float = 0.0
    nodata: float | int | None = None
    dtype: str = "uint16"

    def apply(self, dn: Any) -> Any:
        """Scale ``dn`` to physical values, NaN where it equals ``nodata``.

        Works on numpy, dask and xarray; the result is float32.
        """
        import numpy as np

        if hasattr(dn, "where") and hasattr(dn, "dims"):  # xarray
            out = dn.astype("float32") * np.float32(self.scale) + np.float32(self.offset)
            return out.where(dn != self.nodata) if self.nodata is not None else out
        arr = dn.astype("float32") * np.float32(self.scale) + np.float32(self.offset)
        if self.nodata is None:
            return arr
        return np.where(dn == self.nodata, np.float32(np.nan), arr)

    def invert(self, value: Any) -> Any:
        """Quantise physical values back to stored integers (the inverse of :meth:`apply`)."""
        import numpy as np

        info = np.iinfo(self.dtype)
        dn = np.rint((np.asarray(value, dtype="float64") - self.offset) / self.scale)
        lo = info.min + (1 if self.nodata == info.min else 0)
        return np.clip(dn, lo, info.max).astype(self.dtype)


LANDSAT_L2_SR = Scaling(scale=2.75e-5, offset=-0.2, nodata=0, dtype="uint16")
LANDSAT_L1_TOA = Scaling(scale=2.0e-5, offset=-0.1, nodata=0, dtype="uint16")
LANDSAT_QA = Scaling(scale=1.0, offset=0.0, nodata=1, dtype="uint16")
LANDSAT_ST = Scaling(scale=0.00341802, offset=149.0, nodata=0, dtype="uint16")  # ST_B10, kelvin
LANDSAT_ST_QA = Scaling(scale=0.01, offset=0.0, nodata=-9999, dtype="int16")  # ST_QA, kelvin
S2_L2A = Scaling(scale=1e-4, offset=-0.1, nodata=0, dtype="uint16")
S2_L2A_PRE_0400 = Scaling(scale=1e-4, offset=0.0, nodata=0, dtype="uint16")
S2_SCL = Scaling(scale=1.0, offset=0.0, nodata=0, dtype="uint8")


@dataclass(frozen=True)
class CollectionProfile:
    """One provider collection mapped onto canonical bands.

    Attributes
    ----------
    collection
        The STAC collection id at this provider.
    sensor
        ``"landsat"`` or ``"sentinel-2"``.
    level
        ``"L2"`` (surface reflectance) or ``"L1"`` (top of atmosphere; Landsat pan lives here).
    assets
        Canonical band name -> asset key.
    qa_asset, qa_kind
        The quality asset's key and how to decode it.
    scaling
        Fallback scaling per canonical band (and ``"qa"``) when an asset has no ``raster:bands``.
    """

    collection: str
    sensor: Sensor
    level: Level
    assets: Mapping[str, str]
    qa_asset: str
    qa_kind: QAKind
    scaling: Mapping[str, Scaling]

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", MappingProxyType(dict(self.assets)))
        object.__setattr__(self, "scaling", MappingProxyType(dict(self.scaling)))
        missing = [b for b in self.assets if b not in self.scaling]
        if missing:
            raise ValueError(f"profile {self.collection}: no scaling for bands {missing}")

    @property
    def bands(self) -> tuple[str, ...]:
        """Canonical bands this collection carries."""
        return tuple(self.assets)

    def matches(self, item: pystac.Item) -> bool:
        """Whether ``item`` belongs to this collection and carries its asset keys."""
        if item.collection_id != self.collection:
            return False
        return self.qa_asset in item.assets or any(k in item.assets for k in self.assets.values())


@dataclass(frozen=True)
class Provider:
    """A STAC provider: where its API is, which collections it serves, how to read its assets.

    Attributes
    ----------
    name
        Short name used throughout harmonize (``"earth-search"``).
    url
        Default STAC API root (``None`` for the local archive, whose URL is chosen at serve time).
    collections
        Collection profiles, at most one per (sensor, level).
    sign
        Optional hook that returns a readable copy of an item (Planetary Computer's SAS signing:
        pass ``planetary_computer.sign``). Applied by :func:`asset_href`.
    requester_pays
        Whether asset reads must set ``AWS_REQUEST_PAYER=requester``.
    prefer_alternate
        Name of an ``alternate`` href to prefer over the asset's main href (USGS: ``"s3"``).
    """

    name: str
    url: str | None
    collections: tuple[CollectionProfile, ...]
    sign: Callable[[pystac.Item], pystac.Item] | None = None
    requester_pays: bool = False
    prefer_alternate: str | None = None
    description: str = ""

    def collection(self, sensor: Sensor, level: Level = "L2") -> CollectionProfile:
        """The profile of this provider's collection for ``sensor`` at ``level``."""
        for c in self.collections:
            if c.sensor == sensor and c.level == level:
                return c
        raise UnknownCollectionError(
            f"Provider {self.name!r} has no {level} collection for {sensor}; it serves "
            f"{[c.collection for c in self.collections]}."
        )

    def collection_ids(
        self, sensors: tuple[Sensor, ...] = ("landsat", "sentinel-2"), level: Level = "L2"
    ) -> list[str]:
        """Collection ids for the given sensors at ``level`` (skipping sensors it lacks)."""
        return [c.collection for c in self.collections if c.sensor in sensors and c.level == level]

    def gdal_env(self) -> dict[str, str]:
        """GDAL configuration options needed to read this provider's assets."""
        return {"AWS_REQUEST_PAYER": "requester"} if self.requester_pays else {}

    def with_signer(self, sign: Callable[[pystac.Item], pystac.Item]) -> Provider:
        """A copy of this provider that signs items with ``sign`` before reading."""
        return replace(self, sign=sign)


def _common_names(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    keys = {
        "blue": "blue",
        "green": "green",
        "red": "red",
        "nir": "nir08",
        "swir16": "swir16",
        "swir22": "swir22",
    }
    keys.update(extra or {})
    return keys


def _same(
    scaling: Scaling, bands: tuple[str, ...] = REFLECTANCE_BANDS, qa: Scaling | None = None
) -> dict[str, Scaling]:
    out = {b: scaling for b in bands}
    if qa is not None:
        out["qa"] = qa
    return out


_ES_S2 = CollectionProfile(
    collection="sentinel-2-l2a",
    sensor="sentinel-2",
    level="L2",
    assets=_common_names(),
    qa_asset="scl",
    qa_kind="scl",
    scaling=_same(S2_L2A, qa=S2_SCL),
)
_ES_LANDSAT = CollectionProfile(
    collection="landsat-c2-l2",
    sensor="landsat",
    level="L2",
    # Surface temperature (lwir11 = ST_B10, qa = ST_QA) sits in the same items at both providers.
    assets=_common_names({"lst": "lwir11", "lst_qa": "qa"}),
    qa_asset="qa_pixel",
    qa_kind="qa_pixel",
    scaling=_same(LANDSAT_L2_SR, qa=LANDSAT_QA) | {"lst": LANDSAT_ST, "lst_qa": LANDSAT_ST_QA},
)
_PC_S2 = CollectionProfile(
    collection="sentinel-2-l2a",
    sensor="sentinel-2",
    level="L2",
    assets={"blue": "B02", "green": "B03", "red": "B04", "nir": "B8A", "swir16": "B11", "swir22": "B12"},
    qa_asset="SCL",
    qa_kind="scl",
    scaling=_same(S2_L2A, qa=S2_SCL),
)
_USGS_SR = CollectionProfile(
    collection="landsat-c2l2-sr",
    sensor="landsat",
    level="L2",
    assets=_common_names(),
    qa_asset="qa_pixel",
    qa_kind="qa_pixel",
    scaling=_same(LANDSAT_L2_SR, qa=LANDSAT_QA),
)
_USGS_L1 = CollectionProfile(
    collection="landsat-c2l1",
    sensor="landsat",
    level="L1",
    assets={PAN: "pan"},
    qa_asset="qa_pixel",
    qa_kind="qa_pixel",
    scaling=_same(LANDSAT_L1_TOA, bands=(PAN,), qa=LANDSAT_QA),
)

PROVIDERS: dict[str, Provider] = {}


def register_provider(provider: Provider) -> Provider:
    """Add (or replace) a provider profile, making it available by name everywhere."""
    PROVIDERS[provider.name] = provider
    return provider


register_provider(
    Provider(
        name="earth-search",
        url="https://earth-search.aws.element84.com/v1",
        collections=(_ES_S2, _ES_LANDSAT),
        requester_pays=True,  # its Landsat hrefs point into the requester-pays usgs-landsat bucket
        description="Element 84 Earth Search v1 (AWS open data)",
    )
)
register_provider(
    Provider(
        name="planetary-computer",
        url="https://planetarycomputer.microsoft.com/api/stac/v1",
        collections=(_PC_S2, replace(_ES_LANDSAT)),
        description="Microsoft Planetary Computer (hrefs need SAS signing: pass a signer)",
    )
)
register_provider(
    Provider(
        name="usgs",
        url="https://landsatlook.usgs.gov/stac-server",
        collections=(_USGS_SR, _USGS_L1),
        requester_pays=True,
        prefer_alternate="s3",
        description="USGS LandsatLook (Landsat only; requester-pays S3)",
    )
)
register_provider(
    Provider(
        name="local",
        url=None,
        collections=(_ES_S2, _ES_LANDSAT, replace(_USGS_L1)),
        description="The embedded simulated archive (Earth Search v1 shapes, USGS L1 for pan)",
    )
)


def get_provider(name: str | Provider) -> Provider:
    """Look up a provider profile by name.

    Raises
    ------
    UnknownProviderError
        If no profile has that name; the message lists the known ones.
    """
    if isinstance(name, Provider):
        return name
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProviderError(
            f"Unknown provider {name!r}; known providers are {sorted(PROVIDERS)} "
            "(or register your own with harmonize.providers.register_provider)."
        ) from None


def profile_for_item(item: pystac.Item, provider: str | Provider | None = None) -> CollectionProfile:
    """Find the collection profile that describes ``item``.

    Collection ids are shared between providers (``sentinel-2-l2a`` at Earth Search and at
    Planetary Computer), so the match also requires the profile's asset keys in the item.

    Raises
    ------
    UnknownCollectionError
        If no profile (of ``provider``, or of any provider) matches.
    """
    providers = [get_provider(provider)] if provider is not None else list(PROVIDERS.values())
    for p in providers:
        for c in p.collections:
            if c.matches(item):
                return c
    known = sorted({c.collection for p in providers for c in p.collections})
    same_id = [c for p in providers for c in p.collections if c.collection == item.collection_id]
    if same_id:  # the collection is known; the item lacks the assets its profiles read
        needed = sorted({c.qa_asset for c in same_id} | {k for c in same_id for k in c.assets.values()})
        raise MissingAssetError(
            f"Item {item.id!r} of collection {item.collection_id!r} has assets "
            f"{sorted(item.assets) or 'none'}, but every profile of that collection reads assets "
            f"among {needed}. Search the items again (a search result, not a trimmed copy), or pass "
            "the provider= whose asset keys it uses."
        )
    raise UnknownCollectionError(
        f"Item {item.id!r} is of collection {item.collection_id!r}, which no provider profile "
        f"describes (known: {known}). Search one of those, or register a profile for it."
    )


def asset_key(item: pystac.Item, band: str, profile: CollectionProfile | None = None) -> str:
    """The asset key holding canonical ``band`` (or ``"qa"``) in ``item``."""
    profile = profile or profile_for_item(item)
    if band == "qa":
        key = profile.qa_asset
    elif band in profile.assets:
        key = profile.assets[band]
    else:
        raise UnknownBandError(
            f"Collection {profile.collection!r} has no band {band!r}; it has {list(profile.bands)}."
        )
    if key not in item.assets:
        raise MissingAssetError(
            f"Item {item.id!r} has no asset {key!r} for band {band!r}; it has {sorted(item.assets)}."
        )
    return key


def asset_href(
    item: pystac.Item,
    band: str,
    provider: str | Provider | None = None,
    profile: CollectionProfile | None = None,
) -> str:
    """The href to read for canonical ``band`` of ``item``, signed where the provider signs.

    ``profile`` (the item's collection profile, when the caller has it) saves finding it again.
    """
    prov = get_provider(provider) if provider is not None else None
    if prov is not None and prov.sign is not None:
        item = prov.sign(item)
    key = asset_key(item, band, profile or profile_for_item(item, prov))
    asset = item.assets[key]
    if prov is not None and prov.prefer_alternate:
        alt = asset.extra_fields.get("alternate", {}).get(prov.prefer_alternate)
        if alt and "href" in alt:
            return alt["href"]
    return asset.get_absolute_href() or asset.href


def s2_boa_offset(item: pystac.Item) -> float:
    """Sentinel-2 L2A BOA offset in reflectance implied by ``s2:processing_baseline``.

    ``-0.1`` for baseline 04.00 and later, ``0.0`` before; items without a baseline are assumed
    recent when acquired on or after 2022-01-25.
    """
    baseline = item.properties.get("s2:processing_baseline")
    if baseline is not None:
        major, _, minor = str(baseline).partition(".")
        return -0.1 if (int(major), int(minor or 0)) >= (4, 0) else 0.0
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        return -0.1
    return -0.1 if (dt.year, dt.month, dt.day) >= (2022, 1, 25) else 0.0


def band_scaling(item: pystac.Item, band: str, profile: CollectionProfile | None = None) -> Scaling:
    """Scale, offset, nodata and dtype of canonical ``band`` (or ``"qa"``) in ``item``.

    Item-level ``raster:bands`` win; missing fields fall back to the profile, whose Sentinel-2
    offset follows the processing baseline (:func:`s2_boa_offset`).
    """
    profile = profile or profile_for_item(item)
    key = asset_key(item, band, profile)
    fallback = profile.scaling["qa" if band == "qa" else band]
    if profile.sensor == "sentinel-2" and band != "qa":
        fallback = replace(fallback, offset=s2_boa_offset(item))
    rb = item.assets[key].extra_fields.get("raster:bands") or []
    if not rb:
        return fallback
    rb0 = rb[0]
    return Scaling(
        scale=float(rb0.get("scale", fallback.scale)),
        offset=float(rb0.get("offset", fallback.offset)),
        nodata=rb0.get("nodata", fallback.nodata),
        dtype=str(rb0.get("data_type", fallback.dtype)),
    )


def qa_scaling(item: pystac.Item, profile: CollectionProfile | None = None) -> Scaling:
    """Nodata and dtype of the quality asset (QA_PIXEL or SCL)."""
    return band_scaling(item, "qa", profile)


def normalize_platform(platform: str | None) -> str:
    """Spell a platform the one way harmonize does: ``landsat-8``, ``sentinel-2a`` …"""
    if not platform:
        return "unknown"
    p = platform.strip().lower().replace("_", "-").replace(" ", "-")
    if p.startswith("sentinel-2") or p.startswith("sentinel2"):
        return "sentinel-2" + p[-1] if p[-1] in "abcd" else p
    if p.startswith("landsat"):
        digits = "".join(ch for ch in p if ch.isdigit())
        return f"landsat-{digits}" if digits else p
    return p


def item_sensor(item: pystac.Item) -> Sensor:
    """Which sensor an item is from, by its collection profile."""
    return profile_for_item(item).sensor
