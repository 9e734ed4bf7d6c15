"""Runnable harmonize jobs: each a function plus ``python -m pipelines.<stage>``."""
