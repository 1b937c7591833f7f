"""The learning curve: the fusion model's macro-F1 against the number of labels it trained on, and what the next
labels are likely to add.

Each point retrains the fusion model on a nested share of the training posts (the first 25%, 50% ... of one
seeded order, so every smaller set lies inside the larger ones) and scores it on the same posts as the full
model: the test split, or under cross-validation each fold's test posts (the shares then taken of every fold's
training posts) pooled. The full point is the bundle's own evaluation. When a specialist was fine-tuned, its
embeddings came from every training label at each point: the curve then varies the fusion model's labels only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from emocare.cache import Cache
from emocare.io import write_json, write_text
from emocare.labels import LabelSet
from emocare.metrics import macro_f1_interval, paired_difference, summary
from emocare.models.fusion import load_fusion
from emocare.pipeline.evaluate import Predictions
from emocare.pipeline.fusion_training import fold_view, train_fusion
from emocare.pipeline.plots import learning_curve_png
from emocare.scoring import cached_fusion_logits

SHARES = (0.25, 0.5)  # of the training posts, besides all of them (the bundle's own evaluation)


def _subset_view(cache: Cache, splits: np.ndarray, share: float, seed: int) -> tuple[Cache, int]:
    """The cache with only the first ``share`` of the training rows (one seeded order) left in ``train``."""
    train = np.flatnonzero(splits == "train")
    order = train[np.random.default_rng(seed).permutation(len(train))]
    keep = order[:max(1, int(round(share * len(train))))]
    view = np.where(splits == "train", "", splits)
    view[keep] = "train"
    return replace(cache, splits=view), len(keep)


def learning_curve(cache: Cache, full: Predictions, fusion_cfg: dict, train_cfg: dict, classes: LabelSet,
                   work_dir: str | Path, fold: np.ndarray | None = None, shares: tuple = SHARES,
                   fold_features: dict[str, np.ndarray] | None = None) -> dict:
    """Points ``{"share", "labels", "n", "macro_f1", "interval"}`` (``labels``: training posts behind the point,
    per fold under cross-validation) ending with ``full``, the bundle's own predictions, and ``next``: the last
    step's gain with its paired interval and that gain per 100 labels. ``fold`` given: cross-validation, with
    ``fold_features`` as :func:`~emocare.pipeline.fusion_training.cross_validate` takes them (a cross-fitted
    encoder was tuned on all of its fold's training posts: the smaller points re-learn the fusion model only)."""
    k, seed = len(classes), int(train_cfg["seed"])
    runs = [(f, fold_view(cache, fold, f, fold_features)) for f in range(int(fold.max()) + 1)] \
        if fold is not None else [(0, cache)]
    points, preds = [], []
    for share in shares:
        rows, logits, used = [], [], []
        for f, run in runs:
            view, n = _subset_view(run, run.splits, share, seed + f)
            path = Path(work_dir) / f"curve-{share}-{f}.pt"
            train_fusion(view, fusion_cfg, train_cfg, path, classes, desc=f"learning curve {share:.0%}")
            model, _ = load_fusion(path)
            r = view.rows_with("test", model.modalities)
            rows.append(r), logits.append(cached_fusion_logits(model, view, r)), used.append(n)
        rows, logits = np.concatenate(rows), np.concatenate(logits)
        order = np.argsort(rows)
        preds.append((rows[order], logits[order]))
        points.append({"share": share, "labels": int(round(np.mean(used)))})
    n_full = [int(((run.splits == "train") & (cache.labels >= 0)).sum()) for _, run in runs]
    preds.append((full.rows, full.logits))
    points.append({"share": 1.0, "labels": int(round(np.mean(n_full)))})
    for point, (rows, logits) in zip(points, preds, strict=True):
        labels = cache.labels[rows]
        point.update(n=int(len(rows)), macro_f1=summary(labels, logits)["macro_f1"],
                     interval=macro_f1_interval(labels, logits.argmax(1), k))
    return {"points": points, "next": _next_labels(cache, points, preds, k)}


def _next_labels(cache: Cache, points: list[dict], preds: list, k: int) -> dict | None:
    """The last step's gain (on the posts both points scored) with its paired interval, and per 100 labels: with
    returns that diminish, the next few hundred labels are likely to add no more than this rate."""
    if len(points) < 2:
        return None
    (r0, l0), (r1, l1) = preds[-2], preds[-1]
    common = np.intersect1d(r0, r1)
    a, b = l1[np.searchsorted(r1, common)].argmax(1), l0[np.searchsorted(r0, common)].argmax(1)
    gain = paired_difference(cache.labels[common], a, b, k)
    step = points[-1]["labels"] - points[-2]["labels"]
    if gain is None or step <= 0:
        return None
    per_100 = 100 / step
    return {"from_labels": points[-2]["labels"], "to_labels": points[-1]["labels"], **gain,
            "per_100_labels": round(gain["difference"] * per_100, 4),
            "per_100_labels_interval": [round(v * per_100, 4) for v in gain["interval"]]}


def write_learning_curve(curve: dict, out_dir: str | Path) -> None:
    """``learning_curve.json``, the DVC plot's ``learning_curve.csv`` and ``learning_curve.png``."""
    out_dir = Path(out_dir)
    write_json(out_dir / "learning_curve.json", curve)
    write_text(out_dir / "learning_curve.csv", "labels,macro_f1,low,high\n" + "".join(
        f"{p['labels']},{p['macro_f1']},{p['interval'][0]},{p['interval'][1]}\n" for p in curve["points"]
        if p["interval"]))
    learning_curve_png(curve["points"], out_dir / "learning_curve.png")
