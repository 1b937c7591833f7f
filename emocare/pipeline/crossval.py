"""Which evaluation a run gets: the held-out test split, or k-fold cross-validation over every label.

A 10% test split of a few hundred labels is a handful of posts per class: its macro-F1 misses the model's true
one by 0.08-0.13 (RMSE over draws) at 300 labels, while 5-fold cross-validation's pooled out-of-fold estimate
misses by 0.01-0.04, and the final model then learns from every label (README: "Small data: cross-validation";
``benchmarks/cv_threshold.py``). Below ``split.cv_below`` labelled posts the fusion stage therefore evaluates by
``split.folds``-fold cross-validation, provided every specialist's cached embedding is label-free (frozen
backbone): fusion models then train in seconds per fold on the cached embeddings, and no fold's test posts
shaped the features it is scored on. A specialist fine-tuned on labels saw the split's test posts' neighbours
only through the train split, so its embeddings are honest for the held-out test split alone: that run keeps
the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emocare.data.manifest import Post
from emocare.data.split import content_key
from emocare.io import atomic_path

CV_BELOW = 3000  # params.yaml split.cv_below's default (README: measured)
FOLDS = 5


def label_free(info: dict) -> bool:
    """Whether a specialist's cached embedding was computed without labels: its ``reports/<m>/info.json`` says
    the backbone was frozen (``regime: frozen``, or ``frozen: true`` for an image or video tower), or the
    modality had no data (no embeddings at all)."""
    return bool(info.get("no_data") or info.get("regime") == "frozen" or info.get("frozen"))


def evaluation_plan(labelled: int, split_cfg: dict, infos: dict[str, dict] | None = None) -> dict:
    """``{"kind": "cv" | "test", "folds", "cv_below", "labelled", "why"}``: cross-validation when there are
    fewer than ``split.cv_below`` labelled posts and (when ``infos``, the specialists' info.json, are given)
    every specialist is frozen; otherwise the held-out test split. Without ``infos`` (the split stage, before
    any specialist trained) ``kind`` says what applies if the specialists turn out frozen."""
    below, folds = int(split_cfg.get("cv_below", CV_BELOW)), int(split_cfg.get("folds", FOLDS))
    plan = {"folds": folds, "cv_below": below, "labelled": int(labelled)}
    if labelled >= below:
        return {**plan, "kind": "test", "why": f"{labelled} labelled posts, at least split.cv_below ({below}): "
                                              "the held-out test split is large enough"}
    if infos is None:
        return {**plan, "kind": "cv", "why": f"{labelled} labelled posts, fewer than split.cv_below ({below}): "
                f"{folds}-fold cross-validation if every specialist is frozen (the fusion stage decides), else the "
                "held-out test split"}
    tuned = sorted(m for m, info in infos.items() if not label_free(info) and not info.get("cross_fitted"))
    if tuned:
        return {**plan, "kind": "test", "why": f"fewer than split.cv_below ({below}) labelled posts, but the "
                f"{' and '.join(tuned)} specialist's embeddings were learnt from labels (not frozen), so only "
                "posts it never trained on can test it: the held-out test split"}
    fitted = sorted(m for m, info in infos.items() if info.get("cross_fitted"))
    frozen = (f"the {' and '.join(fitted)} specialist's features of each fold from an encoder tuned without it, "
              "the others frozen") if fitted else "every specialist frozen"
    return {**plan, "kind": "cv", "why": f"{labelled} labelled posts, fewer than split.cv_below ({below}), and "
            f"{frozen}: {folds}-fold cross-validation over all of them, the final models trained on every label"}


def fold_features_path(modality: str) -> str:
    """Where the train stage writes a label-tuned specialist's cross-fitted features (emocare.pipeline.specialists
    .cross_fitted_features); the fusion stage reads them."""
    return f"cache/folds/{modality}.npz"


def save_fold_features(path: str | Path, ids: list[str], features: np.ndarray) -> None:
    """Write ``features`` ([folds, len(ids), dim]; no ids: an empty file, nothing cross-fitted) atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, ids=np.array(ids, dtype=str), features=np.asarray(features, np.float32))


def load_fold_features(path: str | Path, ids: list[str], emb: np.ndarray) -> np.ndarray | None:
    """``[folds, len(ids), dim]``: each fold's features of the cache's rows (``ids``), ``emb`` (the final
    specialist's) where the file has none (unlabelled posts, in no fold's test); None for an empty file."""
    with np.load(path) as f:
        fitted, features = [str(i) for i in f["ids"]], f["features"]
    if not len(fitted):
        return None
    out = np.repeat(np.asarray(emb, np.float32)[None], len(features), axis=0)
    where = {pid: r for r, pid in enumerate(ids)}
    missing = [pid for pid in fitted if pid not in where]
    if missing:
        raise ValueError(f"{path}: {len(missing)} posts not in the embedding cache (first {missing[0]!r}); "
                         "rerun the train stage")
    out[:, [where[pid] for pid in fitted]] = features
    return out


def assign_folds(labels: np.ndarray, groups: list[str], folds: int, seed: int) -> np.ndarray:
    """Each row's fold, 0 .. folds-1 (-1 for an unlabelled row, ``labels < 0``), stratified by class; rows of one
    group (identical content, :func:`emocare.data.split.content_key`) share a fold, so no post is tested on its
    own duplicate. Groups are shuffled (seeded) within their class and dealt to the fold with fewest rows."""
    labels = np.asarray(labels)
    fold = np.full(len(labels), -1)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        if labels[i] >= 0:
            by_group.setdefault(g, []).append(i)
    rng = np.random.default_rng(seed)
    sizes = np.zeros(folds, dtype=int)
    for c in sorted({int(labels[m[0]]) for m in by_group.values()}):
        members = sorted((m for m in by_group.values() if labels[m[0]] == c), key=lambda m: m[0])
        per_class = np.zeros(folds, dtype=int)
        for i in rng.permutation(len(members)):
            f = int(np.lexsort((sizes, per_class))[0])  # fewest of this class, then fewest overall
            fold[members[i]] = f
            per_class[f] += len(members[i])
            sizes[f] += len(members[i])
    return fold


def fold_splits(fold: np.ndarray, f: int) -> np.ndarray:
    """The split of every row for fold ``f``: its rows ``test``, the next fold's ``val`` (early stopping and
    calibration), the others ``train``, unlabelled rows none."""
    folds = int(fold.max()) + 1
    return np.where(fold == f, "test", np.where(fold == (f + 1) % folds, "val", np.where(fold >= 0, "train", "")))


def post_folds(posts: list[Post], labels: np.ndarray, split_cfg: dict) -> np.ndarray:
    """:func:`assign_folds` of ``posts`` (with class indices ``labels``, -1 unlabelled) by ``split.folds`` and
    ``split.seed``: the fusion and baselines stages draw the same folds."""
    return assign_folds(labels, [content_key(p) for p in posts], int(split_cfg.get("folds", FOLDS)),
                        int(split_cfg["seed"]))
