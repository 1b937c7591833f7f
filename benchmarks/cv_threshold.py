"""How far a 10% test split's macro-F1 is from the truth, against 5-fold cross-validation, by number of labels:
the measurement behind ``split.cv_below``. Prints JSON.

For each data set in /work/data (outside the repository) and each size n, ``--draws`` seeded draws of n labelled
posts. The model is a logistic regression (balanced class weights) on frozen all-MiniLM-L6-v2 embeddings where
the set has them (``minilm.npy``), else on TF-IDF word 1-2-grams: what EmoCare's fusion model learns from when
every specialist is frozen. For each draw:

* ``split``: trained on 90% (train + val), scored on the 10% test split, as the pipeline did;
* ``cv``: pooled out-of-fold predictions of 5 folds over all n, the final model trained on all n;
* ``truth``: each final model scored on up to 3,000 posts outside the draw.

Printed per set and size: the error of each estimate against its own model's truth (RMSE over draws), the mean
width of its 95% bootstrap interval, and the truth of both final models (what the 10% held out costs).

    python benchmarks/cv_threshold.py [--sizes 300 1000 3000] [--draws 10]
    python benchmarks/cv_threshold.py --fusion-cost 1000 3000   # seconds of the fusion stage's cross-validation

``--fusion-cost`` times what cross-validation costs the fusion stage instead: 5 folds of the fusion model and the
ablation's subset models, then the final models, with params.yaml's fusion section, on n synthetic posts with the
offline default's embedding sizes (text 384, image and video 1280; two thirds with an image, a third a video).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emocare.metrics import macro_f1_interval  # noqa: E402

DATA = Path("/work/data")
POOL = 3000  # posts outside each draw that score the final models


def load(name: str) -> tuple[np.ndarray | list[str], np.ndarray, int]:
    """(features or texts, class indices, classes) of one set in /work/data."""
    with open(DATA / name / "labels.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    names = sorted({r["label"] for r in rows})
    y = np.array([names.index(r["label"]) for r in rows])
    emb = DATA / name / "minilm.npy"
    if emb.exists():
        order = {i: n for n, i in enumerate((DATA / name / "minilm_ids.txt").read_text().split())}
        x = np.load(emb)[[order[r["id"]] for r in rows]]
        return x, y, len(names)
    return [r["text"] for r in rows], y, len(names)


def fit_predict(x_train, y_train, x_test) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if isinstance(x_train, list):
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        x_train, x_test = vec.fit_transform(x_train), vec.transform(x_test)
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(x_train, y_train)
    return clf.predict(x_test)


def take(x, rows):
    return [x[i] for i in rows] if isinstance(x, list) else x[rows]


def f1(y, p, k) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, p, average="macro", labels=list(range(k)), zero_division=0))


def one_draw(x, y, k: int, n: int, seed: int, folds: int = 5) -> dict:
    from sklearn.model_selection import StratifiedKFold, train_test_split

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    drawn, pool = order[:n], order[n:n + POOL]
    yd = y[drawn]
    train, test = train_test_split(np.arange(n), test_size=0.1, random_state=seed, stratify=yd)
    split_pred = fit_predict(take(x, drawn[train]), yd[train], take(x, drawn[test]))
    split_truth = f1(y[pool], fit_predict(take(x, drawn[train]), yd[train], take(x, pool)), k)
    oof = np.zeros(n, dtype=int)
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), yd):
        oof[te] = fit_predict(take(x, drawn[tr]), yd[tr], take(x, drawn[te]))
    cv_truth = f1(y[pool], fit_predict(take(x, drawn), yd, take(x, pool)), k)
    s_lo, s_hi = macro_f1_interval(yd[test], split_pred, k)
    c_lo, c_hi = macro_f1_interval(yd, oof, k)
    return {"split": f1(yd[test], split_pred, k), "split_truth": split_truth, "split_width": s_hi - s_lo,
            "cv": f1(yd, oof, k), "cv_truth": cv_truth, "cv_width": c_hi - c_lo}


def fusion_cost(n: int) -> dict:
    """Seconds :func:`emocare.pipeline.fusion_training.cross_validate` takes on ``n`` synthetic posts."""
    import tempfile

    import torch
    import yaml

    from emocare.cache import Cache
    from emocare.labels import DEFAULT
    from emocare.pipeline.crossval import assign_folds
    from emocare.pipeline.fusion_training import cross_validate

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(DEFAULT), n)
    has_image = rng.random(n) < 2 / 3
    present = {"text": np.ones(n, bool), "image": has_image, "video": ~has_image}
    emb = {m: torch.from_numpy((rng.normal(size=(n, d)) + labels[:, None] * 0.05).astype(np.float32)
                               * present[m][:, None])
           for m, d in (("text", 384), ("image", 1280), ("video", 1280))}
    cache = Cache([f"p{i}" for i in range(n)], labels, np.array(["train"] * n), emb, present,
                  {m: {"backbone": "synthetic"} for m in emb}, list(DEFAULT))
    fold = assign_folds(labels, cache.ids, params["split"].get("folds", 5), 0)
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        cross_validate(cache, fold, params["fusion"], params["train"], Path(work) / "r", DEFAULT, Path(work) / "w",
                       Path(work) / "models")
        return {"posts": n, "cross_validation_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["tweeteval_emotion", "cm_off_meme", "goemotions", "meld"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[300, 1000, 3000])
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--fusion-cost", nargs="+", type=int, metavar="N")
    a = ap.parse_args()
    if a.fusion_cost:
        print(json.dumps([fusion_cost(n) for n in a.fusion_cost], indent=2))
        return
    out = {}
    for name in a.sets:
        x, y, k = load(name)
        for n in a.sizes:
            if n + 500 > len(y):
                continue
            started = time.perf_counter()
            runs = [one_draw(x, y, k, n, seed) for seed in range(a.draws)]
            r = {key: np.array([d[key] for d in runs]) for key in runs[0]}
            out[f"{name}/{n}"] = {
                "features": "minilm" if not isinstance(x, list) else "tfidf", "classes": k, "draws": a.draws,
                "split_rmse": round(float(np.sqrt(np.mean((r["split"] - r["split_truth"]) ** 2))), 4),
                "cv_rmse": round(float(np.sqrt(np.mean((r["cv"] - r["cv_truth"]) ** 2))), 4),
                "split_interval_width": round(float(r["split_width"].mean()), 4),
                "cv_interval_width": round(float(r["cv_width"].mean()), 4),
                "truth_split_model": round(float(r["split_truth"].mean()), 4),
                "truth_all_labels_model": round(float(r["cv_truth"].mean()), 4),
                "seconds": round(time.perf_counter() - started, 1)}
            print(json.dumps({f"{name}/{n}": out[f"{name}/{n}"]}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
