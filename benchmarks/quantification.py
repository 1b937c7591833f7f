"""Which quantifier and calibration give trends' shares under prior shift, on real labelled text. Prints JSON.

For each data set under ``--data`` (``<set>/labels.csv`` with ``id,text,label``, and ``minilm.npy`` /
``minilm_ids.txt``: frozen all-MiniLM-L6-v2 sentence embeddings of the texts) and each seed, the rows are split
(stratified, seeded) 60 / 20 / 20 into train, validation and test. The classifier is a class-weighted logistic
regression on the embeddings (class weights make it favour rare classes, as EmoCare's fusion training does),
its logits calibrated on validation with each :data:`emocare.calibration.KINDS` (``fit_calibration``, as the
fusion stage does). Then:

- test ECE (top label) and its floor (:func:`emocare.calibration.ece_floor`) per calibration;
- shifted periods drawn from the test posts (with replacement within each class, or with ``--fresh`` without) for
  each protocol: ``app`` (the artificial-prevalence protocol: the mix uniform on the simplex) and ``drift-S`` (the
  training mix times exp(N(0, S)) per class, renormalised) for S in ``--drifts``; ``--periods`` periods of each size
  in ``--sizes``;
- for each calibration and EmoCare quantifier (:data:`emocare.quantify.METHODS`), and QuaPy's KDEy-ML and
  EMQ with BCTS recalibration (on the uncalibrated probabilities, as QuaPy fits its own) with ``--quapy``: the
  mean absolute share error over classes and periods;
- for each calibration in ``--interval-calibrations`` and method in ``--interval-methods``: the coverage of
  :func:`emocare.quantify.interval` (share of class-periods whose true share lies inside the 95% interval), also
  by the true share's size (:data:`SHARE_LEVELS`); with ``--out-of-fold-errors`` the interval draws the classifier's
  error from validation posts calibrated out of fold (:func:`out_of_fold`) instead of those the calibration fitted.

    python benchmarks/quantification.py [--sets meld,goemotions,tweeteval_emotion,cm_off_meme] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path("/work/data")
# coverage is also given by the true share's size (under 3%, 3 to 10%, 10% and over: [coverage, class-periods]):
# a class with a handful of posts in the period is where a bootstrap interval is weakest
SHARE_LEVELS = (0.03, 0.1)
SHARE_LEVEL_NAMES = ("under 0.03", "0.03 to 0.1", "0.1 and over")
REDRAWS = 1000  # fresh mixes drawn per period before a size is given up as too large for the test split


def load_set(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The embeddings [N, D] and integer labels [N] of the labelled rows that have an embedding, and the classes."""
    table = pd.read_csv(folder / "labels.csv", dtype={"id": str}).set_index("id")
    ids = (folder / "minilm_ids.txt").read_text().split()
    x = np.load(folder / "minilm.npy")
    labels = table["label"].reindex(ids)
    keep = labels.notna().to_numpy()
    classes = sorted(labels[keep].unique())
    return x[keep], labels[keep].map({c: i for i, c in enumerate(classes)}).to_numpy(), classes


def split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified 60 / 20 / 20 row indices."""
    rng = np.random.default_rng(seed)
    parts = [[], [], []]
    for k in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == k))
        a, b = int(0.6 * len(rows)), int(0.8 * len(rows))
        for part, chunk in zip(parts, (rows[:a], rows[a:b], rows[b:]), strict=True):
            part.extend(chunk)
    return tuple(np.array(sorted(p)) for p in parts)


def periods(y: np.ndarray, prior: np.ndarray, protocol: str, size: int, count: int, rng: np.random.Generator,
            fresh: bool = False) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """``count`` periods of ``size`` test rows and their true mixes, and how many mixes were drawn again.

    Each class's rows are drawn with replacement, or with ``fresh`` without (each post at most once, as a period
    of new posts would have them: a period re-using a small test split's posts carries that split's own classifier
    error, which the next period shares). A fresh mix asking a class for more posts than the split has is drawn
    again, up to :data:`REDRAWS` times a period; none is returned where that fails (a size too large for the split)."""
    out, redrawn, have = [], 0, np.bincount(y, minlength=len(prior))
    for _ in range(count):
        for _ in range(REDRAWS):
            if protocol == "app":
                mix = rng.dirichlet(np.ones(len(prior)))
            else:
                mix = prior * np.exp(rng.normal(0, float(protocol.split("-")[1]), len(prior)))
                mix /= mix.sum()
            counts = rng.multinomial(size, mix)
            if not fresh or (counts <= have).all():
                break
            redrawn += 1
        else:
            return [], redrawn
        rows = np.concatenate([rng.choice(np.flatnonzero(y == k), c, replace=not fresh)
                               for k, c in enumerate(counts) if c])
        out.append((rows, counts / size))
    return out, redrawn


def quapy_methods(clf, p_val: np.ndarray, y_val: np.ndarray) -> dict:
    """QuaPy's quantifiers on the trained classifier ``clf``, fitted on its validation posteriors ``p_val``:
    name -> f(posteriors) -> shares."""
    import quapy as qp  # noqa: F401 - sets QuaPy's defaults
    from quapy.method.aggregative import EMQ, KDEyML

    out = {}
    for name, q in (("kdey", KDEyML(clf, fit_classifier=False)),
                    ("emq_bcts", EMQ(clf, fit_classifier=False, calib="bcts", exact_train_prev=False))):
        q.aggregation_fit(p_val, y_val)
        out[name] = q.aggregate
    return out


def out_of_fold(raw: np.ndarray, labels: np.ndarray, kind: str, seed: int, folds: int = 5) -> np.ndarray:
    """The validation posts' probabilities, each post's from the ``kind`` calibration fitted on the other (stratified)
    folds: what the calibration says of posts it was not fitted on."""
    from emocare.calibration import apply, fit_calibration, softmax

    rng, fold = np.random.default_rng(seed), np.empty(len(labels), int)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        fold[rows] = np.arange(len(rows)) % folds
    out = np.zeros_like(raw)
    for f in range(folds):
        out[fold == f] = softmax(apply(raw[fold == f], fit_calibration(raw[fold != f], labels[fold != f], kind)))
    return out


def run_set(name: str, seed: int, a: argparse.Namespace) -> dict:
    from sklearn.linear_model import LogisticRegression

    from emocare.calibration import KINDS, apply, ece, ece_floor, fit_calibration, softmax
    from emocare.quantify import METHODS, estimate, interval, validation_stats

    x, y, classes = load_set(a.data / name)
    train, val, test = split(y, seed)
    clf = LogisticRegression(C=a.c, class_weight="balanced", max_iter=2000).fit(x[train], y[train])
    raw = {"val": clf.decision_function(x[val]), "test": clf.decision_function(x[test])}
    y_val, y_test, k = y[val], y[test], len(classes)
    prior = np.bincount(y[train], minlength=k) / len(train)
    out = {"classes": classes, "posts": {"train": len(train), "val": len(val), "test": len(test)},
           "test_macro_f1": None, "calibrations": {}, "shares": {}, "coverage": {}, "coverage_by_share": {},
           "redrawn": {}}
    from sklearn.metrics import f1_score
    out["test_macro_f1"] = round(float(f1_score(y_test, raw["test"].argmax(1), average="macro")), 4)
    probs = {}
    for kind in KINDS:
        fitted = fit_calibration(raw["val"], y_val, kind)
        p_val, p_test = softmax(apply(raw["val"], fitted)), softmax(apply(raw["test"], fitted))
        stats = validation_stats(p_val, y_val)
        # the stats the interval draws the classifier's error from: with --out-of-fold-errors, its validation posts
        # as calibrations fitted without them score them
        drawn_from = stats
        if a.out_of_fold_errors and kind in a.interval_calibrations.split(","):
            kept = validation_stats(out_of_fold(raw["val"], y_val, kind, seed), y_val)
            drawn_from = {**stats, "probs": kept["probs"], "labels": kept["labels"]}
        probs[kind] = (p_val, p_test, stats, drawn_from)
        out["calibrations"][kind] = {"test_ece": round(ece(p_test, y_test), 4),
                                     "test_ece_floor": round(ece_floor(p_test), 4)}
    others = quapy_methods(clf, probs["none"][0], y_val) if a.quapy else {}
    rng = np.random.default_rng(1000 + seed)
    for protocol in ["app"] + [f"drift-{s}" for s in a.drifts.split(",")]:
        for size in (int(s) for s in a.sizes.split(",")):
            key = f"{protocol}/{size}"
            drawn, redrawn = periods(y_test, prior, protocol, size, a.periods, rng, a.fresh)
            if a.fresh:
                out["redrawn"][key] = redrawn
            if not drawn:
                continue
            errors: dict = {}
            cover: dict = {}
            by_share: dict = {}
            for kind, (_, p_test, stats, drawn_from) in probs.items():
                for method in METHODS:
                    errors[f"{kind}/{method}"] = [float(np.abs(estimate(p_test[r], method, stats) - mix).mean())
                                                  for r, mix in drawn]
                if kind in a.interval_calibrations.split(",") and str(size) in a.interval_sizes.split(","):
                    for method in a.interval_methods.split(","):
                        inside, truth = [], []
                        for i, (r, mix) in enumerate(drawn):
                            low, high = interval(p_test[r], method, drawn_from, a.resamples, seed=i)
                            inside += ((low - 1e-9 <= mix) & (mix <= high + 1e-9)).tolist()
                            truth += mix.tolist()
                        cover[f"{kind}/{method}"] = float(np.mean(inside))
                        level = np.digitize(truth, SHARE_LEVELS)
                        by_share[f"{kind}/{method}"] = {
                            name: [round(float(np.mean(np.array(inside)[level == j])), 4), int((level == j).sum())]
                            for j, name in enumerate(SHARE_LEVEL_NAMES) if (level == j).any()}
            for qname, f in others.items():
                errors[f"quapy/{qname}"] = [float(np.abs(f(probs["none"][1][r]) - mix).mean()) for r, mix in drawn]
            out["shares"][key] = {m: round(float(np.mean(v)), 4) for m, v in errors.items()}
            out["coverage"][key] = {m: round(v, 4) for m, v in cover.items()}
            out["coverage_by_share"][key] = by_share
            out["shares"][key]["_shift"] = round(float(np.mean([np.abs(mix - prior).mean() for _, mix in drawn])), 4)
    return out


def summary(results: dict) -> dict:
    """Per method: the mean share error over sets, seeds and protocols, per size; the worst set's; coverage."""
    rows = []
    for name, seeds in results.items():
        for seed, r in seeds.items():
            for key, errs in r["shares"].items():
                protocol, size = key.split("/")
                for m, e in errs.items():
                    if not m.startswith("_"):
                        rows.append({"set": name, "seed": seed, "protocol": protocol, "size": int(size),
                                     "method": m, "error": e, "coverage": r["coverage"][key].get(m)})
    df = pd.DataFrame(rows)
    per_set = df.groupby(["method", "size", "set"])["error"].mean()
    out = {}
    for (method, size), part in df.groupby(["method", "size"]):
        sets = per_set.loc[(method, size)]
        cov = part["coverage"].dropna()
        out.setdefault(method, {})[size] = {
            "mean_error": round(float(part["error"].mean()), 4), "worst_set": sets.idxmax(),
            "worst_set_error": round(float(sets.max()), 4),
            **({"coverage": round(float(cov.mean()), 4), "coverage_worst_set": round(float(
                part.dropna(subset=["coverage"]).groupby("set")["coverage"].mean().min()), 4)} if len(cov) else {})}
    return dict(sorted(out.items(), key=lambda kv: np.mean([v["mean_error"] for v in kv[1].values()])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sets", default="meld,goemotions,tweeteval_emotion,cm_off_meme")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--periods", type=int, default=20)
    ap.add_argument("--sizes", default="100,400,1000")
    ap.add_argument("--drifts", default="0.25,0.5,1.0")
    ap.add_argument("--c", type=float, default=1.0, help="the logistic regression's inverse regularisation")
    ap.add_argument("--quapy", action="store_true", help="also score QuaPy's KDEy-ML and EMQ-BCTS")
    ap.add_argument("--interval-calibrations", default="bcts,matrix")
    ap.add_argument("--interval-methods", default="em")
    ap.add_argument("--interval-sizes", default="400,1000")
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--out-of-fold-errors", action="store_true",
                    help="intervals draw the classifier's error from validation posts calibrated out of fold (5 folds)")
    ap.add_argument("--fresh", action="store_true",
                    help="periods of distinct test posts (each drawn once); mixes the split cannot fill are redrawn")
    a = ap.parse_args()
    results, started = {}, time.perf_counter()
    for name in a.sets.split(","):
        if not (a.data / name / "minilm.npy").is_file():
            print(f"{name}: no minilm.npy under {a.data / name}, skipped", file=sys.stderr)
            continue
        for seed in (int(s) for s in a.seeds.split(",")):
            results.setdefault(name, {})[seed] = run_set(name, seed, a)
            print(f"{name} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
            wall = round(time.perf_counter() - started)
            text = json.dumps({"summary": summary(results), "sets": results, "wall_s": wall,
                               "args": {k: str(v) for k, v in vars(a).items()}}, indent=1)
            if a.out:  # after every seed: a long run's finished seeds are kept
                a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
