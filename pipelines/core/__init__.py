"""What every job builds on: configs, the ledger of committed units, the dask scheduler, the
readers of each stage's stores, and the shared click command line. Imports nothing above it."""
