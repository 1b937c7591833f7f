"""Calibration of the fusion model's probabilities, and how well they are calibrated.

Training weighs classes (rare ones count up to ~4x), so the raw softmax over-predicts rare classes and is
over-confident. A calibration maps logits to ``logits * scale + bias`` (per class), fitted on the validation
split by minimising the unweighted negative log-likelihood:

* ``temperature``: one scale for every class (``1 / T``), no bias: the predicted label never changes;
* ``bcts``: one scale and a bias per class (bias-corrected temperature scaling, Alexandari et al. 2020): the
  bias undoes the class weights' prior shift, so the label can change;
* ``vector``: a scale and a bias per class (Guo et al. 2017);
* ``none``: the identity.

The fusion checkpoint stores the fitted ``{"kind", "scale", "bias"}`` and
:func:`emocare.scoring.fusion_logits` applies it, so every probability the project gives is calibrated.
"""

from __future__ import annotations

import numpy as np

KINDS = ("temperature", "bcts", "vector", "none")
ECE_BINS = 15
LBFGS_STEPS = 200


def identity(n_classes: int) -> dict:
    return {"kind": "none", "scale": [1.0] * n_classes, "bias": [0.0] * n_classes}


def fit_calibration(logits: np.ndarray, labels: np.ndarray, kind: str) -> dict:
    """The ``kind`` calibration of ``logits`` [N, C] that minimises the NLL of ``labels`` [N]."""
    if kind not in KINDS:
        raise ValueError(f"fusion.calibration must be one of {KINDS}, got {kind!r}")
    import torch  # here: the reports describe a calibration without loading torch

    n_classes = logits.shape[1]
    if kind == "none" or len(labels) == 0:
        return identity(n_classes)
    x, y = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.long)
    # log-scale keeps every scale positive: the order of a post's classes by logit never flips
    log_scale = torch.zeros(n_classes if kind == "vector" else 1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=kind != "temperature")
    params = [log_scale] if kind == "temperature" else [log_scale, bias]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=LBFGS_STEPS, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x * log_scale.exp() + bias, y)
        loss.backward()
        return loss

    opt.step(closure)
    scale = log_scale.detach().exp().expand(n_classes)
    return {"kind": kind, "scale": [float(s) for s in scale], "bias": [float(b) for b in bias.detach()]}


def describe(fitted: dict) -> str:
    """The fitted calibration in words, for the reports."""
    temperature = 1 / fitted["scale"][0]
    return {"temperature": f"temperature scaling (T = {temperature:.3f})",
            "bcts": f"bias-corrected temperature scaling (T = {temperature:.3f}, and a bias per class)",
            "vector": "vector scaling (a scale and a bias per class)", "none": "none"}[fitted["kind"]]


def apply(logits: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Calibrated logits (``logits`` unchanged without a calibration)."""
    if not calibration:
        return logits
    return (logits * np.asarray(calibration["scale"], np.float32) + np.asarray(calibration["bias"], np.float32)
            ).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Top-label reliability: per equal-width confidence bin with posts, its posts, mean confidence and accuracy."""
    conf, right = probs.max(1), probs.argmax(1) == labels
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return [{"bin": b, "low": b / bins, "high": (b + 1) / bins, "posts": int((which == b).sum()),
             "confidence": float(conf[which == b].mean()), "accuracy": float(right[which == b].mean())}
            for b in range(bins) if (which == b).any()]


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Top-label expected calibration error: the post-weighted mean |accuracy - confidence| over the bins."""
    if len(labels) == 0:
        return None
    return float(sum(r["posts"] * abs(r["accuracy"] - r["confidence"]) for r in reliability(probs, labels, bins))
                 / len(labels))


def nll(probs: np.ndarray, labels: np.ndarray) -> float | None:
    if len(labels) == 0:
        return None
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
