"""Benchmarks that print one JSON document with the machine they ran on:
``python -m pipelines.benchmarks {world,load,pairs,infer,timeseries}``."""
