"""Quantification: each class's share of a set of posts, estimated from the model's probabilities.

Counting each post's top label (classify and count) inherits the classifier's bias, and a share of posts
moves with the mix the classifier was trained on. The estimators (Forman 2008; Bella et al. 2010):

* ``count``: the share of posts whose top label is the class;
* ``pcc``: probabilistic classify and count, the mean calibrated probability;
* ``acc``: adjusted classify and count: the top-label shares ``q`` solved for the true shares ``p`` in
  ``q = M p``, with ``M[i, j]`` the validation split's rate of predicting ``i`` for a post of class ``j``;
* ``pacc``: the same with mean probabilities on both sides;
* ``em``: maximum likelihood under prior shift (Saerens et al. 2002): the calibrated probabilities are
  re-weighted by the ratio of the period's shares to the validation mix until the shares they average to
  stop moving. With a bias-corrected calibration it is hard to beat (Alexandari et al. 2020).

The adjusted estimators and ``em`` need the bundle's validation statistics (:func:`validation_stats`, stored in the
fusion checkpoint and in a predictions file's ``.models.json``). Confidence intervals come from the
bootstrap: the posts of a period resampled with replacement.
"""

from __future__ import annotations

import numpy as np

METHODS = ("count", "pcc", "acc", "pacc", "em")
NEEDS_STATS = ("acc", "pacc", "em")
DEFAULT = "pcc"  # chosen on real text: README, Trends that measure the community
EM_STEPS = 200
EM_TOL = 1e-6
BOOTSTRAP = 200
LEVEL = 0.95


def validation_stats(probs: np.ndarray, labels: np.ndarray) -> dict:
    """What the adjusted estimators need from the validation split: per true class (columns), the rate of each
    top label (``confusion``), the mean probability of each class (``mean_probs``), and the class mix (``prior``)."""
    k = probs.shape[1]
    confusion, mean_probs = np.zeros((k, k)), np.zeros((k, k))
    for j in range(k):
        rows = labels == j
        if rows.any():
            confusion[:, j] = np.bincount(probs[rows].argmax(1), minlength=k) / rows.sum()
            mean_probs[:, j] = probs[rows].mean(0)
        else:  # a class the split lacks: assume it is recognised perfectly rather than invent an error rate
            confusion[j, j] = mean_probs[j, j] = 1.0
    prior = np.bincount(labels, minlength=k) / max(len(labels), 1)
    return {"posts": int(len(labels)), "confusion": confusion.round(6).tolist(),
            "mean_probs": mean_probs.round(6).tolist(), "prior": prior.round(6).tolist()}


def _adjust(observed: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The shares ``p`` (non-negative, summing to 1) nearest to solving ``observed = matrix @ p``."""
    p = np.linalg.lstsq(matrix, observed, rcond=None)[0].clip(0, None)
    return p / p.sum() if p.sum() > 0 else observed


def _em(probs: np.ndarray, w: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The shares under which the prior-adjusted posteriors of ``probs`` average to themselves."""
    prior = prior.clip(1e-6, None)
    shares = prior
    for _ in range(EM_STEPS):
        post = probs * (shares / prior)
        post /= post.sum(1, keepdims=True)
        new = w @ post / w.sum()
        if np.abs(new - shares).max() < EM_TOL:
            return new
        shares = new
    return shares


def estimate(probs: np.ndarray, method: str, stats: dict | None = None, weights: np.ndarray | None = None
             ) -> np.ndarray:
    """Each class's estimated share [C] among the posts ``probs`` [N, C] (each post counted ``weights`` times)."""
    if method not in METHODS:
        raise ValueError(f"quantification method must be one of {', '.join(METHODS)}, not {method!r}")
    if method in NEEDS_STATS and not (stats and (method != "em" or "prior" in stats)):
        raise ValueError(f"{method} needs the bundle's validation statistics (a predictions file from "
                         "`emocare predict` with this version writes them to its .models.json); use pcc or count")
    w = np.ones(len(probs)) if weights is None else weights
    if method == "em":
        return _em(probs, w, np.asarray(stats["prior"]))
    if method in ("count", "acc"):
        observed = np.bincount(probs.argmax(1), weights=w, minlength=probs.shape[1]) / w.sum()
    else:
        observed = w @ probs / w.sum()
    if method in ("count", "pcc"):
        return observed
    return _adjust(observed, np.asarray(stats["confusion" if method == "acc" else "mean_probs"]))


def interval(probs: np.ndarray, method: str, stats: dict | None = None, resamples: int = BOOTSTRAP,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap's central ``LEVEL`` interval (low [C], high [C]) of :func:`estimate` over the posts."""
    rng = np.random.default_rng(seed)
    n = len(probs)
    draws = np.stack([estimate(probs, method, stats, np.bincount(rng.integers(0, n, n), minlength=n))
                      for _ in range(resamples)])
    tail = 100 * (1 - LEVEL) / 2
    return np.percentile(draws, tail, axis=0), np.percentile(draws, 100 - tail, axis=0)
