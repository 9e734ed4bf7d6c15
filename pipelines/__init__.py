"""Runnable harmonize jobs, on top of the library and never below it.

Layers, each importing only from those before it: :mod:`pipelines.core` (configs, ledger,
scheduler, store readers, the shared CLI), :mod:`pipelines.evaluation` (scores against a
simulated world's truth), :mod:`pipelines.stages` (ingest, pairs, train, infer, timeseries),
:mod:`pipelines.demo` (every stage on a simulated world, and the report), then
:mod:`pipelines.run` and :mod:`pipelines.cli` (``harmonize run``), :mod:`pipelines.experiments`
and :mod:`pipelines.benchmarks`.
"""
