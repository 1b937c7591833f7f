"""Classification metrics from one confusion matrix, with scikit-learn's conventions (zero_division=0).

Tests check them against scikit-learn, whose import alone (2.4 s here) would slow every stage's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def confusion(labels: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """[k, k] counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(labels) * k + np.asarray(pred), minlength=k * k).reshape(k, k)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    tp, support, predicted = np.diag(cm).astype(float), cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=support + predicted > 0)
    return precision, recall, f1, support


def scores(logits: np.ndarray, labels: np.ndarray, weights: torch.Tensor | None = None) -> dict:
    """Weighted cross-entropy loss, macro-F1, weighted-F1 and accuracy of predictions.

    F1 averages run over the classes that occur in ``labels`` or in the predictions, so a class
    absent from a small split does not count as a zero.
    """
    import torch  # here: the labelling page imports this module and must not wait for torch

    pred = logits.argmax(1)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long(), weight=weights)
    cm = confusion(labels, pred, logits.shape[1])
    _, _, f1, support = _per_class(cm)
    seen = (support > 0) | (cm.sum(0) > 0)
    n = int(cm.sum())
    return {"loss": float(loss), "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
            "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
            "accuracy": float(np.trace(cm) / n) if n else 0.0}


def summary(labels: np.ndarray, logits: np.ndarray) -> dict:
    """``n``, macro-F1, weighted-F1 and accuracy of a set of posts (``None`` scores for an empty set)."""
    if len(labels) == 0:
        return {"n": 0, "macro_f1": None, "weighted_f1": None, "accuracy": None}
    s = scores(logits, labels)
    return {"n": int(len(labels)), "macro_f1": s["macro_f1"], "weighted_f1": s["weighted_f1"],
            "accuracy": s["accuracy"]}


def report_dict(labels: np.ndarray, pred: np.ndarray, names: list[str]) -> dict:
    """The classification report (per-class P/R/F1/support, accuracy, macro and weighted averages) as a dict,
    in scikit-learn's ``classification_report(output_dict=True)`` layout, over all classes (named ``names``)."""
    k = len(names)
    cm = confusion(labels, pred, k)
    precision, recall, f1, support = _per_class(cm)
    n = int(support.sum())
    out: dict = {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]),
                     "support": int(support[i])} for i, c in enumerate(names)}
    out["accuracy"] = float(np.trace(cm) / n) if n else 0.0
    for name, w in (("macro avg", np.full(k, 1 / k)), ("weighted avg", support / max(n, 1))):
        out[name] = {"precision": float(precision @ w), "recall": float(recall @ w), "f1-score": float(f1 @ w),
                     "support": n}
    return out


def macro_f1(labels: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Macro-F1 of predicted class indices over the classes in ``labels`` or ``pred`` (as :func:`scores`)."""
    cm = confusion(labels, pred, k)
    _, _, f1, support = _per_class(cm)
    seen = (support > 0) | (cm.sum(0) > 0)
    return float(f1[seen].mean()) if seen.any() else 0.0
