"""Fakes for tests (harmonize's and its users'): provider-shaped STAC items, learnable pairs.

The real item documents differ in asset keys, in whether ``raster:bands`` is present and in how
Sentinel-2's BOA offset is declared. :func:`make_item` reproduces those differences on a tiny
footprint, so provider logic can be tested without the network or third-party files.

:class:`SyntheticPairs` is a small learnable Landsat -> Sentinel-2 dataset with a known mapping,
and :func:`synthetic_datasets` the dataset factory that serves it to ``harmonize train``
(``dataset: {factory: "harmonize.testing:synthetic_datasets"}``). Torch and scipy are imported
only when a sample is made, so :func:`make_item` needs neither.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pystac

from harmonize.bands import THERMAL
from harmonize.providers import get_provider

__all__ = ["make_item", "SyntheticPairs", "synthetic_datasets"]

Shape = Literal["earth-search", "planetary-computer", "usgs", "local"]


def make_item(
    provider: Shape,
    sensor: Literal["landsat", "sentinel-2"],
    *,
    item_id: str | None = None,
    when: dt.datetime = dt.datetime(2023, 10, 8, 17, 40, tzinfo=dt.timezone.utc),
    epsg: int = 32613,
    transform: tuple[float, ...] | None = None,
    shape: tuple[int, int] = (8, 8),
    cloud_cover: float = 10.0,
    processing_baseline: str | None = "05.09",
    raster_bands: bool | None = None,
    href_root: str = "file:///tmp/harmonize-test",
    level: Literal["L2", "L1"] = "L2",
    footprint_from_grid: bool = False,
    native_resolution: bool = False,
    wrs_path_row: tuple[int, int] | None = None,
    thermal: bool = False,
) -> pystac.Item:
    """Build a small item the way ``provider`` would serve it.

    Parameters
    ----------
    provider
        Whose item shape to imitate.
    sensor
        ``"landsat"`` or ``"sentinel-2"``.
    raster_bands
        Whether assets carry ``raster:bands``; default as the provider does (Earth Search and
        Planetary Computer's Landsat: yes; Planetary Computer's Sentinel-2 and USGS: no).
    processing_baseline
        ``s2:processing_baseline`` for Sentinel-2 items (``None`` to omit it).
    footprint_from_grid
        Make ``geometry``/``bbox`` the grid's true extent in lon/lat (needed where code derives a
        grid or an overlap from the footprint); default a fixed box near the real items (Colorado).
    native_resolution
        Give each asset its own ``proj:transform``/``proj:shape`` at the band's native resolution
        (Sentinel-2 B8A/B11/B12 and SCL at 20 m, Landsat Level-1 QA_PIXEL at 30 m), as real items
        do; ``transform``/``shape`` then describe the finest band. Default: one grid for all.
    wrs_path_row
        ``landsat:wrs_path``/``landsat:wrs_row`` for Landsat items (zero-padded strings, as served).
    thermal
        Also give a Landsat Level-2 item the surface temperature assets (``lwir11``, ``qa``).

    Returns
    -------
    pystac.Item
        With absolute hrefs under ``href_root``.
    """
    prov = get_provider(provider)
    profile = prov.collection(sensor, level)
    res = 10.0 if sensor == "sentinel-2" else (15.0 if level == "L1" else 30.0)
    if transform is None:
        x0 = 399960.0 if sensor == "sentinel-2" else 449085.0
        transform = (res, 0.0, x0, 0.0, -res, 4500000.0 if sensor == "sentinel-2" else 4581915.0)
    geometry, bbox = _footprint(transform, shape, epsg, from_grid=footprint_from_grid)
    if item_id is None:
        stamp = when.strftime("%Y%m%d")
        item_id = f"S2A_13TDE_{stamp}_0_L2A" if sensor == "sentinel-2" else f"LC08_L2SP_033032_{stamp}_02_T1"
    props = _properties(provider, sensor, epsg, cloud_cover, processing_baseline, wrs_path_row)
    item = pystac.Item(item_id, geometry, bbox, when, props, collection=profile.collection)
    with_rb = raster_bands
    if with_rb is None:
        with_rb = not (provider == "usgs" or (provider == "planetary-computer" and sensor == "sentinel-2"))
    keys = {
        **{b: k for b, k in profile.assets.items() if thermal or b not in THERMAL},
        "qa": profile.qa_asset,
    }
    for band, key in keys.items():
        extra = _asset_fields(profile, band, sensor, res, transform, shape, native_resolution, with_rb)
        if provider == "usgs":
            extra["alternate"] = {"s3": {"storage:requester_pays": True, "href": f"s3://usgs-landsat/{item_id}_{key}.TIF"}}
        item.add_asset(
            key,
            pystac.Asset(
                href=f"{href_root}/{item_id}_{key}.tif",
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields=extra,
            ),
        )
    item.collection_id = profile.collection
    return item


def _footprint(
    transform: tuple[float, ...], shape: tuple[int, int], epsg: int, *, from_grid: bool
) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON geometry and bbox: the grid's true extent in lon/lat, or a fixed box near the real
    items (Colorado; exactness is not needed there)."""
    if from_grid:
        from odc.geo import geom

        x0, y0 = transform[2], transform[5]
        x1, y1 = x0 + shape[1] * transform[0], y0 + shape[0] * transform[4]
        box = geom.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), f"EPSG:{epsg}")
        footprint = box.to_crs("epsg:4326")
        return footprint.json, list(footprint.boundingbox)
    w, s, e, n = -104.3, 40.2, -104.1, 40.4
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {"type": "Polygon", "coordinates": [ring]}, [w, s, e, n]


def _properties(
    provider: str,
    sensor: str,
    epsg: int,
    cloud_cover: float,
    processing_baseline: str | None,
    wrs_path_row: tuple[int, int] | None,
) -> dict[str, Any]:
    """Item properties as ``provider`` spells them (platform names, baseline, WRS path/row)."""
    props: dict[str, Any] = {
        "platform": "sentinel-2a" if sensor == "sentinel-2" else "landsat-8",
        "eo:cloud_cover": cloud_cover,
        "proj:epsg": epsg,
    }
    if sensor == "sentinel-2" and processing_baseline is not None:
        props["s2:processing_baseline"] = processing_baseline
    if provider == "planetary-computer" and sensor == "sentinel-2":
        props["platform"] = "Sentinel-2A"
    if provider == "usgs":
        props["platform"] = "LANDSAT_8"
    if sensor == "landsat" and wrs_path_row is not None:
        props["landsat:wrs_path"] = f"{wrs_path_row[0]:03d}"
        props["landsat:wrs_row"] = f"{wrs_path_row[1]:03d}"
    return props


def _asset_fields(
    profile: Any,
    band: str,
    sensor: str,
    res: float,
    transform: tuple[float, ...],
    shape: tuple[int, int],
    native_resolution: bool,
    with_rb: bool,
) -> dict[str, Any]:
    """One asset's projection fields (at the band's native resolution if asked) and raster:bands."""
    extra: dict[str, Any] = {"proj:shape": list(shape), "proj:transform": list(transform)}
    if native_resolution:
        r = _native_res(band, sensor)
        if r is not None and r != res:
            f = r / res
            t = list(transform)
            extra = {
                "proj:shape": [max(1, round(shape[0] / f)), max(1, round(shape[1] / f))],
                "proj:transform": [t[0] * f, t[1], t[2], t[3], t[4] * f, t[5]],
            }
    if with_rb:
        scaling = profile.scaling[band]
        rb: dict[str, Any] = {"data_type": scaling.dtype, "nodata": scaling.nodata}
        if band != "qa":
            rb.update(scale=scaling.scale, offset=scaling.offset)
        extra["raster:bands"] = [rb]
    return extra


def _native_res(band: str, sensor: str) -> float | None:
    """Native resolution of canonical ``band`` (or ``"qa"``: SCL 20 m, QA_PIXEL 30 m)."""
    from harmonize.bands import BANDS

    if band == "qa":
        return 20.0 if sensor == "sentinel-2" else 30.0
    return BANDS[band].resolution(sensor) if band in BANDS else None


# ---------------------------------------------------------------------------------------------
# a small learnable synthetic dataset (tests, smoke runs, benchmarks)


class SyntheticPairs:
    """Learnable Landsat -> Sentinel-2 pairs with a known mapping, for tests and smoke runs.

    A map-style dataset (``len`` and indexing; a ``torch.utils.data.DataLoader`` takes it) of
    :func:`harmonize.train.fit`'s sample dicts. The reference: piecewise-constant fields with
    sharp edges (6 bands). Sentinel-2 target: the reference plus small noise, with a cloud-like
    blob marked invalid (NaN) in some samples. Landsat input: the reference blurred (Gaussian,
    ``blur`` = 1.5 px: a 30 m footprint on the 10 m grid) and mapped per band by a known ``gain``
    and ``offset`` (the bandpass difference); pan: the mean of the visible reference bands with
    less blur (15 m), which carries the sharp detail.

    Parameters
    ----------
    n, size
        Number of samples and their side in pixels.
    seed
        Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
    noise, cloud_fraction, blur
        Target noise (standard deviation), share of samples with a cloud, input blur (pixels).
    gain, offset
        Per-band Landsat = gain * blurred reference + offset (defaults :attr:`GAIN`, :attr:`OFFSET`).
    """

    GAIN = (0.95, 1.03, 0.97, 1.05, 0.98, 1.02)
    OFFSET = (0.01, -0.005, 0.008, -0.01, 0.004, 0.006)

    def __init__(self, n: int = 32, size: int = 32, *, seed: int = 0, noise: float = 0.002,
                 cloud_fraction: float = 0.3, blur: float = 1.5,
                 gain: Sequence[float] | None = None, offset: Sequence[float] | None = None) -> None:
        self.n, self.size, self.seed = n, size, seed
        self.noise, self.cloud_fraction, self.blur = noise, cloud_fraction, blur
        self.gain = np.asarray(gain if gain is not None else self.GAIN, dtype=np.float64)
        self.offset = np.asarray(offset if offset is not None else self.OFFSET, dtype=np.float64)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i``: ``input``, ``target``, ``valid`` and ``reference`` as torch tensors."""
        import torch
        from scipy.ndimage import gaussian_filter

        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        s = self.size
        # Voronoi fields: each pixel takes the spectrum of its nearest seed point.
        k = int(rng.integers(4, 10))
        pts = rng.uniform(0, s, size=(k, 2))
        spectra = rng.uniform([0.02, 0.04, 0.03, 0.15, 0.10, 0.05], [0.10, 0.14, 0.18, 0.45, 0.35, 0.25],
                              size=(k, 6))
        yy, xx = np.mgrid[0:s, 0:s]
        d = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
        reference = spectra[np.argmin(d, axis=0)].transpose(2, 0, 1)
        gain = self.gain[:, None, None]
        off = self.offset[:, None, None]
        blurred = np.stack([gaussian_filter(b, self.blur, mode="reflect") for b in reference])
        landsat = blurred * gain + off
        pan = gaussian_filter(reference[:3].mean(0), 0.6, mode="reflect")
        x = np.concatenate([landsat, pan[None]]).astype(np.float32)
        target = (reference + rng.normal(0, self.noise, reference.shape)).astype(np.float32)
        valid = np.ones((s, s), dtype=bool)
        if rng.uniform() < self.cloud_fraction:
            cy, cx, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(s / 8, s / 4)
            valid = (yy - cy) ** 2 + (xx - cx) ** 2 > r**2
            target[:, ~valid] = np.nan
        return {"input": torch.from_numpy(x), "target": torch.from_numpy(target),
                "valid": torch.from_numpy(valid), "reference": torch.from_numpy(reference.astype(np.float32))}


def synthetic_datasets(config: Any) -> tuple[SyntheticPairs, SyntheticPairs]:
    """Dataset factory for smoke runs of ``harmonize train``.

    Parameters
    ----------
    config
        A :class:`harmonize.train.TrainConfig` whose ``dataset`` mapping may set ``n_train``
        (64), ``n_val`` (16), ``size`` (64) and ``seed`` (0), as in
        ``dataset: {factory: "harmonize.testing:synthetic_datasets", n_train: 64, size: 64}``.

    Returns
    -------
    tuple
        ``(train, val)``: :class:`SyntheticPairs` with seeds ``seed`` and ``seed + 1``.
    """
    d = config.dataset
    size = int(d.get("size", 64))
    return (SyntheticPairs(int(d.get("n_train", 64)), size, seed=int(d.get("seed", 0))),
            SyntheticPairs(int(d.get("n_val", 16)), size, seed=int(d.get("seed", 0)) + 1))
