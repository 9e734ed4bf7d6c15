"""harmonize: Landsat-8/9 and Sentinel-2 into one analysis-ready, cloud-gap-filled time series."""

from harmonize.bands import BANDS, PAN, REFLECTANCE_BANDS
from harmonize.errors import HarmonizeError
from harmonize.providers import PROVIDERS, get_provider

__version__ = "0.1.0"

__all__ = [
    "BANDS",
    "PAN",
    "REFLECTANCE_BANDS",
    "HarmonizeError",
    "PROVIDERS",
    "get_provider",
    "__version__",
]
