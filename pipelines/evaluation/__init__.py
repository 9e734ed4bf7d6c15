"""Scoring against a simulated world's truth. The library never knows it runs on a simulation;
these functions take the truth as an explicit dataset.

- :mod:`pipelines.evaluation.truth`: the truth on a cube's grid and days, per-sensor parts, the
  interior and land masks;
- :mod:`pipelines.evaluation.harmonization`: each way of making Landsat Sentinel-2-like, scored on
  the pair index's held-out windows;
- :mod:`pipelines.evaluation.timeseries`: gap-filled NDVI against true NDVI, and what Landsat adds.
"""

from pipelines.evaluation.harmonization import (
    harmonization_table,
    index_patch_size,
    test_windows,
    train_block_mask,
)
from pipelines.evaluation.timeseries import (
    GAPFILL_METHODS,
    clear_observation_gain,
    gapfill_table,
    ndvi_observations,
    ndvi_rmse_against_truth,
    observation_error_table,
    same_day_ndvi_agreement,
    subsample_pixels,
)
from pipelines.evaluation.truth import calendar_day, interior_mask, land_mask, sensor_part, truth_on_grid

__all__ = [
    "GAPFILL_METHODS",
    "calendar_day",
    "clear_observation_gain",
    "gapfill_table",
    "harmonization_table",
    "index_patch_size",
    "interior_mask",
    "land_mask",
    "ndvi_observations",
    "ndvi_rmse_against_truth",
    "observation_error_table",
    "same_day_ndvi_agreement",
    "sensor_part",
    "subsample_pixels",
    "test_windows",
    "train_block_mask",
    "truth_on_grid",
]
