"""The five stages, one module each (its config class, its function and its click ``main``):
ingest -> pairs -> train -> infer -> timeseries. A stage reads earlier stages' outputs only
through :mod:`pipelines.core.stores`, never through another stage's module."""
