"""The demo: every stage on a freshly simulated world, then the report scored against its truth.

``harmonize demo OUT`` or ``python -m pipelines.demo OUT``. :func:`run_demo` runs it; the
``open_*`` readers and :func:`demo_paths` find the products of a finished demo folder.
"""

from pipelines.demo.paths import demo_paths, open_cube, open_harmonized, open_timeseries
from pipelines.demo.run import DEMO_PAIRS, DEMO_TRAIN, DemoConfig, run_demo, run_demo_config

__all__ = [
    "DEMO_PAIRS",
    "DEMO_TRAIN",
    "DemoConfig",
    "demo_paths",
    "open_cube",
    "open_harmonized",
    "open_timeseries",
    "run_demo",
    "run_demo_config",
]
