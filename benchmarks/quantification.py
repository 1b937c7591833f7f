"""Which quantifier and calibration give trends' shares under prior shift, on real labelled text. Prints JSON.

For each data set under ``--data`` (``<set>/labels.csv`` with ``id,text,label``, and ``minilm.npy`` /
``minilm_ids.txt``: frozen all-MiniLM-L6-v2 sentence embeddings of the texts) and each seed, the rows are split
(stratified, seeded) 60 / 20 / 20 into train, validation and test (with ``--labels N``, a team's bundle: train
and validation cut to 80 % and 10 % of N, as the split stage would split N labels; with ``--cv-bundle`` too,
a cross-validated run's: all N train it, and its calibration is fitted on their out-of-fold logits). The classifier is a
class-weighted logistic regression on the embeddings (class weights make it favour rare classes, as EmoCare's
fusion training does), its logits calibrated on validation with each :data:`emocare.calibration.KINDS`
(``fit_calibration``, as the fusion stage does). Then:

- test ECE (top label) and its floor (:func:`emocare.calibration.ece_floor`) per calibration;
- shifted periods drawn from the test posts (with replacement within each class, or with ``--fresh`` without) for
  each protocol: ``app`` (the artificial-prevalence protocol: the mix uniform on the simplex) and ``drift-S`` (the
  training mix times exp(N(0, S)) per class, renormalised) for S in ``--drifts``; ``--periods`` periods of each size
  in ``--sizes``;
- for each calibration and EmoCare quantifier (:data:`emocare.quantify.METHODS`), and QuaPy's KDEy-ML and
  EMQ with BCTS recalibration (on the uncalibrated probabilities, as QuaPy fits its own) with ``--quapy``: the
  mean absolute share error over classes and periods;
- with ``--smoothed-em N,..``: em with N posts' worth of each class added (``em+N``: :func:`smoothed_em`);
- for each calibration in ``--interval-calibrations`` and method in ``--interval-methods``: the coverage of
  :func:`emocare.quantify.interval` (share of class-periods whose true share lies inside the 95% interval), also
  by the true share's size (:data:`SHARE_LEVELS`), and the intervals' mean width (``interval_width``); with
  ``--out-of-fold-errors`` the interval draws the classifier's error from validation posts calibrated out of
  fold (:func:`out_of_fold`) instead of those the calibration fitted;
- with ``--oracle``, where the error of the calibrations in ``--oracle-calibrations`` comes from (:func:`oracle_fits`,
  ``decomposition`` in the JSON, a 95% t-interval over seeds): the same calibration fitted on a stratified
  subsample of ``--val-sizes`` validation posts (the validation split's size), on the test posts the periods are
  drawn from (``@test``: an oracle that knows the classifier's error rates on them, leaving the period's own
  sampling), and both for classifiers trained on ``--train-fractions`` of the training split (the classifier's
  quality: how the oracle's error falls as macro-F1 rises).

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


def fold_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0 .. ``folds`` - 1), stratified by label and seeded."""
    rng, fold = np.random.default_rng(seed), np.empty(len(labels), int)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        fold[rows] = np.arange(len(rows)) % folds
    return fold


def cross_fitted(x: np.ndarray, y: np.ndarray, clf, seed: int, folds: int = 5) -> np.ndarray:
    """Every row's logits from a copy of ``clf`` trained on the other (stratified) folds: each post scored by a
    classifier that never saw it, as EmoCare's cross-validated small-data runs score them."""
    from sklearn.base import clone

    fold, out = fold_of(y, folds, seed), np.zeros((len(y), len(np.unique(y))))
    for f in range(folds):
        out[fold == f] = clone(clf).fit(x[fold != f], y[fold != f]).decision_function(x[fold == f])
    return out


def out_of_fold(raw: np.ndarray, labels: np.ndarray, kind: str, seed: int, folds: int = 5) -> np.ndarray:
    """The validation posts' probabilities, each post's from the ``kind`` calibration fitted on the other (stratified)
    folds: what the calibration says of posts it was not fitted on."""
    from emocare.calibration import apply, fit_calibration, softmax

    fold = fold_of(labels, folds, seed)
    out = np.zeros_like(raw)
    for f in range(folds):
        out[fold == f] = softmax(apply(raw[fold == f], fit_calibration(raw[fold != f], labels[fold != f], kind)))
    return out


def smoothed_em(probs: np.ndarray, stats: dict, pseudo: float) -> np.ndarray:
    """em's shares with ``pseudo`` posts' worth of each class added (one-hot probabilities): the maximum of its
    likelihood times a Dirichlet(1 + ``pseudo``) prior on the shares, which keeps a class off 0."""
    from emocare.quantify import estimate

    k = probs.shape[1]
    return estimate(np.vstack([probs, np.eye(k)]), "em", stats, np.r_[np.ones(len(probs)), np.full(k, pseudo)])


def stratified(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` row indices of ``y`` (sorted) keeping each class's share (at least one row of every class)."""
    counts = np.maximum(np.round(np.bincount(y) / len(y) * size).astype(int), 1)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == k), min(c, (y == k).sum()), replace=False)
                                   for k, c in enumerate(counts) if c]))


def oracle_fits(x: np.ndarray, y: np.ndarray, rows: dict, raw: dict, clf, a: argparse.Namespace, seed: int
                ) -> tuple[dict, dict]:
    """The calibrated test probabilities and statistics behind ``--oracle``'s decomposition of the share error:
    ``{name: (p_fit, p_test, stats, stats)}`` as :func:`run_set`'s ``probs``, and each classifier's test macro-F1.

    For each calibration ``kind`` in ``--oracle-calibrations``: ``kind@valN``, fitted on a stratified subsample of
    ``N`` validation posts (each of ``--val-sizes`` below the split's size); ``kind@test``, fitted on the test posts
    themselves (the oracle: the periods are drawn from those posts, so it knows the classifier's error rates on
    them); and for each of ``--train-fractions`` a classifier trained on that stratified fraction of the training
    split, calibrated on validation (``kind@val/trainF``) and on test (``kind@test/trainF``)."""
    from sklearn.base import clone
    from sklearn.metrics import f1_score

    from emocare.calibration import KEEPS_DECISIONS, apply, fit_calibration, softmax
    from emocare.quantify import validation_stats

    rng = np.random.default_rng(2000 + seed)
    y_val, y_test = y[rows["val"]], y[rows["test"]]

    def fitted(on: np.ndarray, labels: np.ndarray, test: np.ndarray, kind: str) -> tuple:
        calibration = fit_calibration(on, labels, kind)
        p_fit, p_test = softmax(apply(on, calibration)), softmax(apply(test, calibration))
        stats = validation_stats(p_fit, labels, keeps_prior_shift=kind in KEEPS_DECISIONS)
        return p_fit, p_test, stats, stats

    classifiers = {"": raw}
    for fraction in (float(f) for f in a.train_fractions.split(",") if f):
        part = rows["train"][stratified(y[rows["train"]], int(fraction * len(rows["train"])), rng)]
        weaker = clone(clf).fit(x[part], y[part])
        classifiers[f"/train{fraction:g}"] = {k: weaker.decision_function(x[rows[k]]) for k in ("val", "test")}
    out, f1 = {}, {}
    for tail, scores in classifiers.items():
        f1[tail or "/train1"] = round(float(f1_score(y_test, scores["test"].argmax(1), average="macro")), 4)
        for kind in a.oracle_calibrations.split(","):
            out[f"{kind}@test{tail}"] = fitted(scores["test"], y_test, scores["test"], kind)
            if tail:
                out[f"{kind}@val{tail}"] = fitted(scores["val"], y_val, scores["test"], kind)
                continue
            for size in (int(s) for s in a.val_sizes.split(",") if s):
                if size < len(y_val):
                    sub = stratified(y_val, size, rng)
                    out[f"{kind}@val{size}"] = fitted(scores["val"][sub], y_val[sub], scores["test"], kind)
    return out, f1


def run_set(name: str, seed: int, a: argparse.Namespace) -> dict:
    from sklearn.linear_model import LogisticRegression

    from emocare.calibration import KEEPS_DECISIONS, KINDS, apply, ece, ece_floor, fit_calibration, softmax
    from emocare.quantify import METHODS, estimate, interval, validation_stats

    x, y, classes = load_set(a.data / name)
    train, val, test = split(y, seed)
    rng = np.random.default_rng(3000 + seed)
    if a.labels and a.cv_bundle:  # below split.cv_below: every label trains the model and, out of fold, calibrates
        pool = np.concatenate([train, val])
        train = val = np.sort(pool[stratified(y[pool], a.labels, rng)])
    elif a.labels:  # a team's bundle: that many labels, split 80 / 10 as the split stage splits them
        train = np.sort(train[stratified(y[train], int(0.8 * a.labels), rng)])
        val = np.sort(val[stratified(y[val], int(0.1 * a.labels), rng)])
    clf = LogisticRegression(C=a.c, class_weight="balanced", max_iter=2000)
    if a.cross_fit:  # every post scored out of fold; the test posts are the 80% outside validation
        logits, test = cross_fitted(x, y, clf, seed), np.sort(np.concatenate([train, test]))
        raw, prior = {"val": logits[val], "test": logits[test]}, np.bincount(y, minlength=len(classes)) / len(y)
    elif a.cv_bundle:
        raw = {"val": cross_fitted(x[train], y[train], clf, seed), "test": clf.fit(x[train], y[train])
               .decision_function(x[test])}
        prior = np.bincount(y[train], minlength=len(classes)) / len(train)
    else:
        clf.fit(x[train], y[train])
        raw = {"val": clf.decision_function(x[val]), "test": clf.decision_function(x[test])}
        prior = np.bincount(y[train], minlength=len(classes)) / len(train)
    y_val, y_test = y[val], y[test]
    out = {"classes": classes, "posts": {"train": len(train), "val": len(val), "test": len(test)},
           "test_macro_f1": None, "calibrations": {}, "shares": {}, "coverage": {}, "coverage_by_share": {},
           "interval_width": {},
           "redrawn": {}}
    from sklearn.metrics import f1_score
    out["test_macro_f1"] = round(float(f1_score(y_test, raw["test"].argmax(1), average="macro")), 4)
    probs = {}
    for kind in KINDS:
        fitted = fit_calibration(raw["val"], y_val, kind)
        p_val, p_test = softmax(apply(raw["val"], fitted)), softmax(apply(raw["test"], fitted))
        stats = validation_stats(p_val, y_val, keeps_prior_shift=kind in KEEPS_DECISIONS)
        # the stats the interval draws the classifier's error from: with --out-of-fold-errors, its validation posts
        # as calibrations fitted without them score them
        drawn_from = stats
        if a.out_of_fold_errors and kind in a.interval_calibrations.split(","):
            kept = validation_stats(out_of_fold(raw["val"], y_val, kind, seed), y_val, kind in KEEPS_DECISIONS)
            drawn_from = {**stats, "probs": kept["probs"], "labels": kept["labels"]}
        probs[kind] = (p_val, p_test, stats, drawn_from)
        out["calibrations"][kind] = {"test_ece": round(ece(p_test, y_test), 4),
                                     "test_ece_floor": round(ece_floor(p_test), 4)}
    if a.oracle:
        fits, out["oracle_test_macro_f1"] = oracle_fits(x, y, {"train": train, "val": val, "test": test}, raw, clf,
                                                         a, seed)
        probs.update(fits)
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
            widths: dict = {}
            for kind, (_, p_test, stats, drawn_from) in probs.items():
                for method in METHODS:
                    errors[f"{kind}/{method}"] = [float(np.abs(estimate(p_test[r], method, stats) - mix).mean())
                                                  for r, mix in drawn]
                for pseudo in (float(v) for v in a.smoothed_em.split(",") if v):
                    errors[f"{kind}/em+{pseudo:g}"] = [float(np.abs(smoothed_em(p_test[r], stats, pseudo) - mix).mean())
                                                       for r, mix in drawn]
                if kind in a.interval_calibrations.split(",") and str(size) in a.interval_sizes.split(","):
                    for method in a.interval_methods.split(","):
                        inside, truth, width = [], [], []
                        for i, (r, mix) in enumerate(drawn):
                            low, high = interval(p_test[r], method, drawn_from, a.resamples, seed=i)
                            inside += ((low - 1e-9 <= mix) & (mix <= high + 1e-9)).tolist()
                            truth += mix.tolist()
                            width.append(float((high - low).mean()))
                        cover[f"{kind}/{method}"] = float(np.mean(inside))
                        widths[f"{kind}/{method}"] = round(float(np.mean(width)), 4)
                        level = np.digitize(truth, SHARE_LEVELS)
                        by_share[f"{kind}/{method}"] = {
                            name: [round(float(np.mean(np.array(inside)[level == j])), 4), int((level == j).sum())]
                            for j, name in enumerate(SHARE_LEVEL_NAMES) if (level == j).any()}
            for qname, f in others.items():
                errors[f"quapy/{qname}"] = [float(np.abs(f(probs["none"][1][r]) - mix).mean()) for r, mix in drawn]
            out["shares"][key] = {m: round(float(np.mean(v)), 4) for m, v in errors.items()}
            out["coverage"][key] = {m: round(v, 4) for m, v in cover.items()}
            out["coverage_by_share"][key] = by_share
            out["interval_width"][key] = widths
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


def mean_interval(values: list[float]) -> list[float]:
    """The mean of ``values`` (one per seed) and its 95% t-interval: [mean, low, high]."""
    from scipy import stats

    v = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
    return [round(float(v.mean()), 4), round(float(v.mean() - half), 4), round(float(v.mean() + half), 4)]


def decomposition(results: dict, kinds: list[str]) -> dict:
    """``--oracle``'s answer per set and period size: the default quantifier's share error for each fit of each
    calibration in ``kinds`` (mean over seeds of each seed's mean over protocols and periods, with its 95%
    t-interval over seeds: [mean, low, high]), the part the oracle leaves (``sampling``: the test-posts fit) and the
    part a validation split fitted it (``validation``: the default less the oracle, paired by seed); and each
    classifier's test macro-F1."""
    from emocare.quantify import DEFAULT

    out = {}
    for name, seeds in results.items():
        errors: dict = {}
        for r in seeds.values():
            for size in sorted({int(key.split("/")[1]) for key in r["shares"]}):
                rows = [errs for key, errs in r["shares"].items() if key.endswith(f"/{size}")]
                for m in rows[0]:
                    variant = m.removesuffix(f"/{DEFAULT}")
                    if m.endswith(f"/{DEFAULT}") and variant.split("@")[0] in kinds:
                        errors.setdefault(size, {}).setdefault(variant, []).append(np.mean([e[m] for e in rows]))
        f1: dict = {}
        for r in seeds.values():
            for tail, value in r.get("oracle_test_macro_f1", {}).items():
                f1.setdefault(tail, []).append(value)
        out[name] = {"test_macro_f1": {t: mean_interval(v) for t, v in f1.items()}, "seeds": len(seeds)}
        for size, variants in errors.items():
            row = {v: mean_interval(e) for v, e in variants.items()}
            for kind in kinds:
                if f"{kind}@test" in variants:
                    row[f"{kind}: sampling"] = row[f"{kind}@test"]
                    row[f"{kind}: validation"] = mean_interval(np.subtract(variants[kind], variants[f"{kind}@test"]))
            out[name][size] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sets", default="meld,goemotions,tweeteval_emotion,cm_off_meme")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--labels", type=int, help="train on 80 % and calibrate on 10 % of this many labels (a team's "
                                                  "bundle) instead of the 60 / 20 split")
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
    ap.add_argument("--oracle", action="store_true",
                    help="also fit the calibrations on validation subsamples, on the test posts (an oracle) and for "
                         "weaker classifiers: where the default's share error comes from (decomposition)")
    ap.add_argument("--oracle-calibrations", default="bcts")
    ap.add_argument("--val-sizes", default="250,500,1000,2000", help="validation subsamples (below the split's size)")
    ap.add_argument("--train-fractions", default="0.25,0.5", help="weaker classifiers' share of the training split")
    ap.add_argument("--cross-fit", action="store_true",
                    help="score every post by a classifier trained on the other 4 of 5 folds; the test posts are then "
                         "the 80%% outside validation (fresh periods of 400 posts from a small set)")
    ap.add_argument("--cv-bundle", action="store_true",
                    help="with --labels N: the bundle a cross-validated run ships (below split.cv_below): the "
                         "classifier trained on all N labels, its calibration fitted on their out-of-fold logits")
    ap.add_argument("--smoothed-em", default="", help="also score em with this many posts of each class added "
                    "(comma-separated: em+N, a Dirichlet prior that keeps shares off 0)")
    ap.add_argument("--fresh", action="store_true",
                    help="periods of distinct test posts (each drawn once); mixes the split cannot fill are redrawn")
    a = ap.parse_args()
    if a.cv_bundle and (not a.labels or a.cross_fit or a.oracle):
        ap.error("--cv-bundle needs --labels and goes with neither --cross-fit nor --oracle")
    if a.cross_fit and a.oracle and a.train_fractions:
        ap.error("--train-fractions needs a training split apart from the test posts: not with --cross-fit")
    results, started = {}, time.perf_counter()
    for name in a.sets.split(","):
        if not (a.data / name / "minilm.npy").is_file():
            print(f"{name}: no minilm.npy under {a.data / name}, skipped", file=sys.stderr)
            continue
        for seed in (int(s) for s in a.seeds.split(",")):
            results.setdefault(name, {})[seed] = run_set(name, seed, a)
            print(f"{name} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
            wall = round(time.perf_counter() - started)
            extra = {"decomposition": decomposition(results, a.oracle_calibrations.split(","))} if a.oracle else {}
            text = json.dumps({"summary": summary(results), **extra, "sets": results, "wall_s": wall,
                               "args": {k: str(v) for k, v in vars(a).items()}}, indent=1)
            if a.out:  # after every seed: a long run's finished seeds are kept
                a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
