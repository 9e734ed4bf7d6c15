"""``python -m pipelines.demo [OUT] [--size-km KM] [--tiny]``: the demo (same as ``harmonize demo``)."""

from pipelines.demo.run import main

main()
