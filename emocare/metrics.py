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


# Percentile bootstrap over the scored posts: every test figure carries a 95% interval. 1000 resamples put the
# bounds' own Monte Carlo error near 0.005 macro-F1; a fixed seed makes a report reproducible.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
_CHUNK = 4_000_000  # resampled posts per vectorised step: the [resamples, n] index array stays ~32 MB


def _resample_chunks(n: int, resamples: int, seed: int):
    """[r, n] index arrays (drawn with replacement), ``resamples`` rows in all, the same for the same seed."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // max(n, 1))
    for start in range(0, resamples, step):
        yield rng.integers(0, n, size=(min(step, resamples - start), n))


def _batch_f1(labels: np.ndarray, pred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-resample macro-F1 [r] (over the classes seen, as :func:`scores`), per-class F1 [r, k] and accuracy [r]
    of label and prediction arrays [r, n], from one bincount of all the resamples' confusion matrices."""
    r, n = labels.shape
    cm = np.bincount((np.arange(r)[:, None] * k * k + labels * k + pred).ravel(), minlength=r * k * k)
    cm = cm.reshape(r, k, k).astype(float)
    tp, support, predicted = np.diagonal(cm, axis1=1, axis2=2), cm.sum(2), cm.sum(1)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=support + predicted > 0)
    seen = (support > 0) | (predicted > 0)
    macro = (f1 * seen).sum(1) / np.maximum(seen.sum(1), 1)
    return macro, f1, tp.sum(1) / n


def interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """The central ``level`` percentile interval of bootstrap ``values``, rounded to 4 places."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap_intervals(labels: np.ndarray, probs: np.ndarray, ece_bins: int, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED) -> dict:
    """95% percentile-bootstrap intervals of macro-F1, weighted-F1, accuracy, per-class F1 (by class index) and
    top-label ECE (``ece_bins`` equal-width bins, as :func:`emocare.calibration.ece`) of predictions ``probs``
    [n, k] (probabilities; logits serve all but ECE) for ``labels`` [n], resampling the posts."""
    labels = np.asarray(labels)
    n, k = probs.shape
    if n == 0:
        return {}
    pred, conf = probs.argmax(1), probs.max(1).astype(np.float64)
    gap = (pred == labels) - conf  # ECE: |sum of (right - confidence)| per bin, summed over bins, over n
    which = np.minimum((conf * ece_bins).astype(int), ece_bins - 1)
    macro, per_class, acc, weighted, ece = [], [], [], [], []
    for idx in _resample_chunks(n, resamples, seed):
        y = labels[idx]
        m, f1, a = _batch_f1(y, pred[idx], k)
        support = np.stack([(y == c).sum(1) for c in range(k)], 1)
        r = len(idx)
        bins = np.bincount((np.arange(r)[:, None] * ece_bins + which[idx]).ravel(), weights=gap[idx].ravel(),
                           minlength=r * ece_bins).reshape(r, ece_bins)
        macro.append(m), per_class.append(f1), acc.append(a)
        weighted.append((f1 * support).sum(1) / n), ece.append(np.abs(bins).sum(1) / n)
    per_class = np.concatenate(per_class)
    return {"macro_f1": interval(np.concatenate(macro)), "weighted_f1": interval(np.concatenate(weighted)),
            "accuracy": interval(np.concatenate(acc)), "ece": interval(np.concatenate(ece)),
            "per_class_f1": [interval(per_class[:, c]) for c in range(k)], "resamples": resamples, "level": LEVEL}


def macro_f1_interval(labels: np.ndarray, pred: np.ndarray, k: int, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """The 95% bootstrap interval of the macro-F1 of predicted class indices ``pred`` (None for no posts)."""
    if len(labels) == 0:
        return None
    labels, pred = np.asarray(labels), np.asarray(pred)
    return interval(np.concatenate([_batch_f1(labels[i], pred[i], k)[0]
                                    for i in _resample_chunks(len(labels), resamples, seed)]))


def paired_difference(labels: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, k: int,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict | None:
    """Macro-F1 of ``pred_a`` minus that of ``pred_b`` on the same posts, with its 95% paired-bootstrap interval:
    each resample scores both models on the same drawn posts, so what the posts share cancels out."""
    if len(labels) == 0:
        return None
    labels, pred_a, pred_b = np.asarray(labels), np.asarray(pred_a), np.asarray(pred_b)
    point = _batch_f1(labels[None], pred_a[None], k)[0][0] - _batch_f1(labels[None], pred_b[None], k)[0][0]
    diffs = np.concatenate([_batch_f1(labels[i], pred_a[i], k)[0] - _batch_f1(labels[i], pred_b[i], k)[0]
                            for i in _resample_chunks(len(labels), resamples, seed)])
    return {"difference": round(float(point), 4), "interval": interval(diffs), "n": int(len(labels))}
