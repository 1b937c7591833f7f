"""Calibration of the fusion model's probabilities, and how well they are calibrated.

Training weighs classes (rare ones count up to ~4x), so the raw softmax over-predicts rare classes and is
over-confident. A calibration maps logits to ``logits * scale + bias`` (per class), fitted on the validation
split by minimising the unweighted negative log-likelihood:

* ``temperature``: one scale for every class (``1 / T``), no bias: the predicted label never changes;
* ``bcts``: one scale and a bias per class (bias-corrected temperature scaling, Alexandari et al. 2020): the
  bias undoes the class weights' prior shift, so the label can change;
* ``vector``: a scale and a bias per class (Guo et al. 2017);
* ``matrix``: ``logits @ W + bias`` with a full matrix ``W`` whose off-diagonal entries are held near 0 by an
  L2 penalty (matrix scaling with off-diagonal regularisation, the logit form of Dirichlet calibration, Kull
  et al. 2019): a class's probability may then also move with the other classes' logits;
* ``none``: the identity.

The fusion checkpoint stores the fitted ``{"kind", "scale", "bias"}`` (``scale``: a list per class, or for
``matrix`` the rows of ``W``) and
:func:`emocare.scoring.fusion_logits` applies it, so every probability the project gives is calibrated.
"""

from __future__ import annotations

import numpy as np

KINDS = ("temperature", "bcts", "vector", "matrix", "none")
# the kinds without per-class biases: they keep every decision, and the class weights' shift of the probabilities
KEEPS_DECISIONS = ("temperature", "none")
ECE_BINS = 15
LBFGS_STEPS = 200
OFF_DIAGONAL_L2 = 0.1  # matrix: the penalty on the mean squared off-diagonal entry (README: how much it matters)
FLOOR_DRAWS = 200  # label draws behind ece_floor: its own spread is then under 0.001


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
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=kind != "temperature")
    if kind == "matrix":
        w = torch.eye(n_classes, dtype=torch.float64, requires_grad=True)
        off = 1 - torch.eye(n_classes, dtype=torch.float64)
        pairs = max(n_classes * (n_classes - 1), 1)
        _minimise([w, bias], lambda: torch.nn.functional.cross_entropy(x @ w + bias, y)
                  + OFF_DIAGONAL_L2 * ((w * off) ** 2).sum() / pairs)
        return {"kind": kind, "scale": w.detach().tolist(), "bias": bias.detach().tolist()}
    # log-scale keeps every scale positive: the order of a post's classes by logit never flips
    log_scale = torch.zeros(n_classes if kind == "vector" else 1, dtype=torch.float64, requires_grad=True)
    _minimise([log_scale] if kind == "temperature" else [log_scale, bias],
              lambda: torch.nn.functional.cross_entropy(x * log_scale.exp() + bias, y))
    scale = log_scale.detach().exp().expand(n_classes)
    return {"kind": kind, "scale": [float(s) for s in scale], "bias": bias.detach().tolist()}


def _minimise(params: list, loss) -> None:
    """Minimise ``loss()`` over the tensors ``params`` in place with L-BFGS (a few parameters, full batch)."""
    import torch

    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=LBFGS_STEPS, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)


def describe(fitted: dict) -> str:
    """The fitted calibration in words, for the reports."""
    kind = fitted["kind"]
    if kind in ("temperature", "bcts"):
        temperature = 1 / fitted["scale"][0]
        return (f"temperature scaling (T = {temperature:.3f})" if kind == "temperature" else
                f"bias-corrected temperature scaling (T = {temperature:.3f}, and a bias per class)")
    return {"vector": "vector scaling (a scale and a bias per class)",
            "matrix": "matrix scaling (a matrix over the classes' logits and a bias per class, off-diagonal L2)",
            "none": "none"}[kind]


def apply(logits: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Calibrated logits (``logits`` unchanged without a calibration)."""
    if not calibration:
        return logits
    scale, bias = np.asarray(calibration["scale"], np.float32), np.asarray(calibration["bias"], np.float32)
    return ((logits @ scale if scale.ndim == 2 else logits * scale) + bias).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _bin(conf: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's equal-width bin, 0 .. bins - 1 (a confidence of 1 in the last)."""
    return np.minimum((conf * bins).astype(int), bins - 1)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Top-label reliability: per equal-width confidence bin with posts, its posts, mean confidence and accuracy."""
    conf, right = probs.max(1), probs.argmax(1) == labels
    which = _bin(conf, bins)
    return [{"bin": b, "low": b / bins, "high": (b + 1) / bins, "posts": int((which == b).sum()),
             "confidence": float(conf[which == b].mean()), "accuracy": float(right[which == b].mean())}
            for b in range(bins) if (which == b).any()]


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Top-label expected calibration error: the post-weighted mean |accuracy - confidence| over the bins."""
    if len(labels) == 0:
        return None
    return float(sum(r["posts"] * abs(r["accuracy"] - r["confidence"]) for r in reliability(probs, labels, bins))
                 / len(labels))


def ece_floor(probs: np.ndarray, bins: int = ECE_BINS, draws: int = FLOOR_DRAWS, seed: int = 0) -> float | None:
    """The ECE that perfectly calibrated probabilities with these confidences would read on this many posts:
    the mean over ``draws`` of the ECE when each post's top label is right with probability its confidence
    (consistency resampling, Broecker & Smith 2007). The binned ECE of a finite set is 0 only where every
    confidence is 0 or 1, so an ECE at or under this floor is as calibrated as the set can show."""
    if len(probs) == 0:
        return None
    conf = probs.max(1).astype(np.float64)
    which = _bin(conf, bins)
    rng = np.random.default_rng(seed)
    gaps = [np.abs(np.bincount(which, weights=(rng.random(len(conf)) < conf) - conf, minlength=bins)).sum()
            for _ in range(draws)]  # one draw at a time: memory stays one row of posts
    return float(np.mean(gaps) / len(conf))


def nll(probs: np.ndarray, labels: np.ndarray) -> float | None:
    if len(labels) == 0:
        return None
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
