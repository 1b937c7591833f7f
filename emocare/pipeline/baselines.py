"""Pipeline step ``baselines``: what EmoCare is measured against, trained and scored on the same split or folds.

* ``majority``: every post gets the training posts' most frequent class;
* ``tfidf_lr``: TF-IDF of word 1-2-grams + logistic regression (balanced class weights, C chosen on validation);
* ``frozen_lr``: logistic regression (same) on the text backbone's frozen pooled features, L2-normalised: the
  cached text embeddings when the text specialist is frozen, else computed here through the text model's code.

Each scores its test posts (the test split, or every fold's, pooled) with a 95% bootstrap interval.
"""

from __future__ import annotations

import numpy as np
import torch

from emocare.data.manifest import Post
from emocare.labels import LabelSet
from emocare.metrics import macro_f1, macro_f1_interval
from emocare.models.text import build as build_text_model
from emocare.runtime import resolve_device
from emocare.scoring import features

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


def logistic_regression(x_train, y_train: np.ndarray, x_val, y_val: np.ndarray, x_test, k: int) -> tuple:
    """Test predictions of a balanced logistic regression whose C (of :data:`C_GRID`) scored best on validation;
    returns (predictions, C)."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x_train, y_train)
        score = macro_f1(y_val, clf.predict(x_val), k) if len(y_val) else 0.0
        if best is None or score > best[0]:
            best = (score, c, clf)
    return best[2].predict(x_test), best[1]


def tfidf_lr(texts: list[str], labels: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray,
             k: int) -> tuple[np.ndarray, float]:
    """TF-IDF (word 1-2-grams, seen in two training posts at least) + logistic regression: predictions for
    ``test`` rows and the C chosen on ``val``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(train) >= 50 else 1, sublinear_tf=True)
    x = vec.fit_transform([texts[i] for i in train])

    def rows(r):
        return vec.transform([texts[i] for i in r])

    return logistic_regression(x, labels[train], rows(val), labels[val], rows(test), k)


def frozen_features(posts: list[Post], text_cfg: dict, classes: LabelSet, offline: bool,
                    device: str = "auto", batch_size: int = 64) -> np.ndarray:
    """The text backbone's pooled features of every post, pretrained and untouched by labels: the text
    specialist's own encoder (:meth:`emocare.models.text.TextSpecialist.encode`) before any training."""
    model = build_text_model("text", {**text_cfg, "ocr": False}, offline, list(classes))
    dev = resolve_device(device)
    model.to(dev).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(posts), batch_size):
            batch = model.collate([(p.text, -1) for p in posts[start:start + batch_size]])
            out.append(features(model, batch, dev).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)


def score_baselines(texts: list[str], embeddings: np.ndarray, labels: np.ndarray, runs: list[np.ndarray],
                    k: int) -> dict:
    """Each baseline trained on each run's ``train`` rows (C chosen on its ``val`` rows) and scored on its
    ``test`` rows; a run is one split assignment per row (the test split, or one fold). Pooled over the runs:
    ``{name: {"n", "macro_f1", "macro_f1_interval", "C"}}``."""
    emb = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    preds: dict[str, list] = {"majority": [], "tfidf_lr": [], "frozen_lr": []}
    chosen: dict[str, list] = {"tfidf_lr": [], "frozen_lr": []}
    tested = []
    for splits in runs:
        train, val, test = (np.flatnonzero((splits == s) & (labels >= 0)) for s in ("train", "val", "test"))
        tested.append(test)
        preds["majority"].append(np.full(len(test), np.bincount(labels[train], minlength=k).argmax()))
        pred, c = tfidf_lr(texts, labels, train, val, test, k)
        preds["tfidf_lr"].append(pred), chosen["tfidf_lr"].append(c)
        pred, c = logistic_regression(emb[train], labels[train], emb[val], labels[val], emb[test], k)
        preds["frozen_lr"].append(pred), chosen["frozen_lr"].append(c)
    y = labels[np.concatenate(tested)]
    out = {}
    for name, parts in preds.items():
        pred = np.concatenate(parts)
        out[name] = {"n": int(len(y)), "macro_f1": round(macro_f1(y, pred, k), 4),
                     "macro_f1_interval": macro_f1_interval(y, pred, k),
                     **({"C": chosen[name]} if name in chosen else {})}
    return out
