"""The 8 dihedral transforms (flips and 90° rotations) of a sample's arrays: numpy only.

Used by :class:`harmonize.pairs.PairDataset` for training augmentation, and by any in-memory
dataset that wants the same augmentation without the cube (no torch, no dask here).
"""

from __future__ import annotations

import numpy as np

__all__ = ["N_DIHEDRAL", "dihedral"]

#: Number of distinct dihedral transforms of a square (``op`` 0…7).
N_DIHEDRAL = 8


def dihedral(arrays: dict[str, np.ndarray], op: int) -> dict[str, np.ndarray]:
    """Apply one of the 8 dihedral transforms to the last two axes of each array.

    Parameters
    ----------
    arrays
        Name -> array with ``(…, y, x)`` last axes (the same transform for every array, so
        input, target, masks and reference stay aligned).
    op
        0…7: ``op % 4`` quarter turns, after a left-right flip when ``op >= 4``.

    Returns
    -------
    dict
        The transformed arrays (contiguous copies), under the same names.
    """
    out = {}
    for name, a in arrays.items():
        if op >= 4:
            a = a[..., ::-1]
        out[name] = np.ascontiguousarray(np.rot90(a, op % 4, axes=(-2, -1)))
    return out
