"""Experiments beside the product: presets trained longer and compared against baselines."""
