"""Accuracy of a class map on held-out pixels: confusion matrix, per-class F1, baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["confusion_matrix", "scores", "majority_baseline"]


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, codes: Sequence[int]) -> np.ndarray:
    """Counts ``[true class, predicted class]`` over the pixels whose truth is in ``codes``.

    Parameters
    ----------
    truth, pred
        Class codes of the same pixels (any shape; pass the held-out pixels only).
    codes
        The legend's codes, in the matrix's order (pixels whose truth or prediction is outside
        them are not counted).
    """
    codes = [int(c) for c in codes]
    ti = _index(np.asarray(truth).ravel(), codes)
    pi = _index(np.asarray(pred).ravel(), codes)
    ok = (ti >= 0) & (pi >= 0)
    cm = np.zeros((len(codes), len(codes)), np.int64)
    np.add.at(cm, (ti[ok], pi[ok]), 1)
    return cm


def _index(values: np.ndarray, codes: Sequence[int]) -> np.ndarray:
    table = np.full(max(max(codes), int(values.max(initial=0))) + 1, -1, np.int64)
    table[list(codes)] = np.arange(len(codes))
    v = values.astype(np.int64)
    return np.where(v >= 0, table[np.clip(v, 0, len(table) - 1)], -1)


def scores(cm: np.ndarray, codes: Sequence[int], names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Overall accuracy, Cohen's kappa, macro F1 and per-class precision/recall/F1 of ``cm``.

    Returns
    -------
    dict
        ``overall_accuracy``, ``kappa``, ``macro_f1``, ``pixels``, and ``classes``: one dict per
        class with ``code``, ``name``, ``support``, ``precision``, ``recall``, ``f1`` (NaN
        where undefined, e.g. a class never predicted).
    """
    cm = np.asarray(cm, np.float64)
    total = cm.sum()
    diag = np.diag(cm)
    oa = float(diag.sum() / total) if total else float("nan")
    expected = float((cm.sum(0) * cm.sum(1)).sum() / total**2) if total else float("nan")
    kappa = (oa - expected) / (1 - expected) if total and expected < 1 else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = diag / cm.sum(0)
        recall = diag / cm.sum(1)
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where((cm.sum(0) == 0) & (cm.sum(1) > 0), 0.0, f1)
    present = cm.sum(1) > 0
    classes = [
        {
            "code": int(c),
            "name": (names or {}).get(int(c), str(c)),
            "support": int(cm[i].sum()),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
        }
        for i, c in enumerate(codes)
    ]
    return {
        "overall_accuracy": oa,
        "kappa": float(kappa),
        "macro_f1": float(np.nanmean(f1[present])) if present.any() else float("nan"),
        "pixels": int(total),
        "classes": classes,
    }


def majority_baseline(train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
    """Accuracy on the test pixels of always answering the training blocks' commonest class."""
    tr, te = np.asarray(train_labels).ravel(), np.asarray(test_labels).ravel()
    tr, te = tr[tr > 0], te[te > 0]
    values, counts = np.unique(tr, return_counts=True)
    top = int(values[np.argmax(counts)])
    return {"code": top, "overall_accuracy": float((te == top).mean()) if te.size else float("nan")}
