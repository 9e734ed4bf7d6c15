"""``python -m pipelines.demo [OUT] [--size-km KM] [--tiny]``: the demo (same as ``harmonize demo``)."""

from pipelines.demo.run import main

if __name__ == "__main__":  # a spawned helper process imports this module too: it must not run the demo
    main()
