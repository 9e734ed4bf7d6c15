"""The embedded default: a deterministic simulated Landsat-8/9 + Sentinel-2 archive.

It writes what real providers serve - Cloud-Optimized GeoTIFFs with the products' digital
numbers, QA_PIXEL and SCL, STAC items shaped like Earth Search v1 and USGS - plus the truth they
were simulated from, so every later step can be measured against it.

>>> from harmonize.world import WorldConfig, create_world
>>> world = create_world("demo-world", WorldConfig.tiny())      # doctest: +SKIP
>>> world.items_path, world.truth, world.manifest["scenes"][0]   # doctest: +SKIP
"""

from harmonize.world.archive import FORMAT, SHIFT_CONVENTION, World, create_world, open_world
from harmonize.world.config import WorldConfig

__all__ = ["WorldConfig", "World", "create_world", "open_world", "FORMAT", "SHIFT_CONVENTION"]
