"""Named exceptions raised by harmonize.

Every error a user can cause by passing bad input derives from :class:`HarmonizeError`, so a
notebook or a job can catch them all at once; each message says what to do next.
"""

from __future__ import annotations

__all__ = [
    "HarmonizeError",
    "InvalidDatetimeError",
    "InvalidBBoxError",
    "UnknownCollectionError",
    "UnknownProviderError",
    "UnknownBandError",
    "ServerUnreachableError",
    "EmptySearchError",
    "MissingAssetError",
    "AssetReadError",
    "NoOverlapError",
    "CRSMismatchError",
    "WorldError",
    "ModelError",
    "TimeSeriesError",
    "ServerStartError",
    "WeightsChecksumError",
    "NonFiniteWeightsError",
    "ItemFileError",
    "ItemFileNotFoundError",
    "InvalidSearchError",
    "StacResponseError",
    "ConfigError",
    "FootprintMismatchWarning",
    "StoreWriteError",
]


class HarmonizeError(Exception):
    """Base class of every error harmonize raises for bad input or an unusable environment."""


class InvalidDatetimeError(HarmonizeError, ValueError):
    """A datetime or datetime range is malformed or reversed."""


class InvalidBBoxError(HarmonizeError, ValueError):
    """A bounding box is out of order or out of the valid longitude/latitude range."""


class UnknownCollectionError(HarmonizeError, KeyError):
    """A STAC collection id that no provider profile knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownProviderError(HarmonizeError, KeyError):
    """A provider name that has no profile."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownBandError(HarmonizeError, KeyError):
    """A band name that is not canonical or that the items do not carry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ServerUnreachableError(HarmonizeError, ConnectionError):
    """A STAC API could not be reached, even after retries."""


class EmptySearchError(HarmonizeError, LookupError):
    """A search that the caller required to find items found none."""


class MissingAssetError(HarmonizeError, KeyError):
    """An item lacks an asset that the requested bands need."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AssetReadError(HarmonizeError, OSError):
    """An asset exists in the metadata but its file cannot be read."""


class NoOverlapError(HarmonizeError, ValueError):
    """The requested area does not intersect the items' footprints."""


class CRSMismatchError(HarmonizeError, ValueError):
    """Inputs carry different or missing coordinate reference systems."""


class WorldError(HarmonizeError):
    """A simulated world directory is missing, incomplete or was made by another version."""


class ModelError(HarmonizeError, ValueError):
    """A model, model package, checkpoint or model input is unusable (wrong shape, NaN, corrupt)."""


class TimeSeriesError(HarmonizeError, ValueError):
    """A time series cannot be fused, gap-filled or composited as asked (bad method or axis)."""


class ServerStartError(HarmonizeError, RuntimeError):
    """The local STAC API (``rustac serve``) could not be started."""


class WeightsChecksumError(ModelError):
    """A model package's weights file does not match the ``file:checksum`` its ``mlm.json`` records."""


class NonFiniteWeightsError(ModelError):
    """A model package's weights hold NaN or infinite values (a diverged training run)."""


class ItemFileError(HarmonizeError, ValueError):
    """A local STAC item file is empty, truncated, not JSON/GeoParquet, or holds no items."""


class ItemFileNotFoundError(ItemFileError, FileNotFoundError):
    """A local item file (or folder of a world) that does not exist."""


class InvalidSearchError(HarmonizeError, ValueError):
    """A search setting out of range (``max_cloud``, ``page_size``, ``retries``)."""


class StacResponseError(HarmonizeError, ValueError):
    """A STAC API answered something that is not STAC (HTML, garbage, not an ItemCollection)."""


class ConfigError(HarmonizeError, ValueError):
    """A configuration file or override is malformed or has invalid settings."""


class FootprintMismatchWarning(UserWarning):
    """An item's footprint (geometry) disagrees with its files' bounds (``proj:code`` and
    ``proj:transform``): it would load as no data where they differ."""


class StoreWriteError(HarmonizeError, OSError):
    """Writing an output store failed (disk full, permissions); nothing of it was committed."""
