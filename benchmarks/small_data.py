"""EmoCare's learners against the baselines at a team's first few hundred labels, on real labelled sets. Prints JSON.

Each DATA folder holds ``labels.csv`` (id, text, label[, split]) and ``minilm.npy`` / ``minilm_ids.txt``: frozen
all-MiniLM-L6-v2 sentence embeddings (mean-pooled, normalised), the features a frozen text specialist computes
(its mean pooling; the fusion kinds normalise or layer-normalise each embedding, so the scale does not matter).
A fixed test set (up to ``--test`` posts of the set's own test split, else a seeded random hold-out) scores every
learner; for each size in ``--sizes`` and each of ``--draws`` seeded draws, that many posts of the rest are the
labelled posts a team has, the same for every learner:

- ``majority``: the draw's most frequent class;
- ``tfidf_lr``: TF-IDF (words and word pairs) + logistic regression (scikit-learn defaults), on all the draw;
- ``minilm_lr``: the frozen embeddings + logistic regression (scikit-learn defaults), on all the draw;
- ``tfidf_lr_balanced``, ``minilm_lr_balanced``: the same with classes weighted inversely to their frequency
  (``class_weight="balanced"``), which suits macro-F1 better;
- ``fusion_<kind>[:<calibration>]``: EmoCare with a frozen text specialist (``train.regime: frozen``): the draw
  split as the split stage splits it (params.yaml's fractions and seed), the fusion model of ``fusion.kind:
  <kind>`` trained on the cached embeddings by :func:`~emocare.pipeline.fusion_training.train_fusion` and
  calibrated as the pipeline does (``fusion.calibration``), or by ``<calibration>`` at every size; ``+image``
  appended: with the image features too (see ``final_<regime>+image``);
- ``final_<regime>`` (``frozen`` or ``setfit``): the bundle a cross-validated run (below ``split.cv_below``)
  ships: the text specialist's features in that regime (setfit: tuned on every label of the draw by the train
  stage's :func:`~emocare.pipeline.regimes.setfit_tune`), the fusion model (``fusion.kind: auto``) trained on
  every label. What cross-validation reports about it is measured in ``benchmarks/cv_threshold.py``.
  ``final_<regime>+image``: the same with the image specialist too (a set whose labels.csv names an ``image``
  per post: params.yaml's frozen image tower, its features kept beside the set as ``image_<backbone>.npz``);
- ``pipeline_<regime>``: the text specialist trained by :func:`~emocare.pipeline.specialists.train_specialist`
  with ``train.regime: <regime>`` (setfit or finetune: they change the backbone, so the cached features are
  recomputed by :func:`~emocare.pipeline.embed.embed_modality`), then the fusion model (``fusion.kind: auto``).
  Costly on a CPU (minutes per draw): run it on a few cells.
- ``final_...`` and ``pipeline_...`` with ``/<kind>[:<calibration>]`` appended: the same with that fusion kind
  (and calibration) in place of ``auto``'s; the learners of one draw tune the text specialist once.

Macro-F1 over the set's classes on the fixed test set. Every cell's scores go to ``--out`` (JSON lines, appended,
so a long run can be resumed and several runs combined); the summary (mean, sd, 95 % t-interval of the mean over
the draws, and each learner's paired difference to the best of the four baselines, by mean) is printed.

    python benchmarks/small_data.py /work/data/goemotions /work/data/meld [--sizes 100,300,1000] [--draws 5]
        [--learners majority,tfidf_lr,minilm_lr,tfidf_lr_balanced,minilm_lr_balanced,fusion_auto,pipeline_finetune]
        [--out small_data.jsonl]
    python benchmarks/small_data.py --summary small_data.jsonl [more.jsonl ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emocare.metrics import macro_f1  # noqa: E402
from emocare.params import load_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("tfidf_lr", "minilm_lr", "tfidf_lr_balanced", "minilm_lr_balanced")


def load_set(folder: Path, test_size: int) -> dict:
    """The set's posts that have an embedding, its classes, the fixed test rows and the pool to draw from."""
    with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    ids = (folder / "minilm_ids.txt").read_text(encoding="utf-8").split()
    emb = np.load(folder / "minilm.npy")
    keep = [i for i, pid in enumerate(ids) if pid in rows]
    ids, emb = [ids[i] for i in keep], emb[keep]
    labels = [rows[pid]["label"] for pid in ids]
    texts = [rows[pid]["text"] for pid in ids]
    classes = sorted(set(labels))
    rng = np.random.default_rng(0)
    in_test = np.array([rows[pid].get("split") == "test" for pid in ids])
    candidates = np.flatnonzero(in_test) if in_test.any() else np.arange(len(ids))
    test = np.sort(rng.choice(candidates, min(test_size, len(candidates) // (1 if in_test.any() else 3)),
                              replace=False))
    pool = np.setdiff1d(np.flatnonzero(~in_test) if in_test.any() else np.arange(len(ids)), test)
    y = np.array([classes.index(label) for label in labels])
    return {"name": folder.name, "folder": folder, "ids": ids, "texts": texts, "emb": emb, "y": y,
            "classes": classes, "test": test, "pool": pool}


def image_features(data: dict, params: dict) -> dict:
    """Each post's image through the frozen image tower of params.yaml, by the embed stage's
    :func:`~emocare.pipeline.embed.encode_posts` (the pooled features it caches for a frozen tower), computed once
    and kept beside the set (``image_<backbone>.npz``). A post whose labels.csv row names no image, or whose image
    fails the validate stage's check (:func:`~emocare.media.image.check_image`: the stage would quarantine it),
    has zeros and ``image_present`` False; the counts and each failure go to stderr."""
    from emocare.data.manifest import Post
    from emocare.io import atomic_path
    from emocare.labels import LabelSet
    from emocare.media.image import check_image
    from emocare.models import build_specialist
    from emocare.pipeline.embed import encode_posts

    cfg = params["image"]
    path = data["folder"] / f"image_{cfg['backbone']}.npz"
    if not path.exists():
        with open(data["folder"] / "labels.csv", newline="", encoding="utf-8") as f:
            images = {r["id"]: r.get("image") or "" for r in csv.DictReader(f)}
        present, failed = np.zeros(len(data["ids"]), bool), 0
        for i, pid in enumerate(data["ids"]):
            problem = images[pid] and check_image(data["folder"] / images[pid], params["data"]["max_image_pixels"])
            if problem:
                failed += 1
                print(f"{data['name']}/{pid}: image left out: {problem}", file=sys.stderr)
            present[i] = bool(images[pid]) and not problem
        tower = build_specialist("image", {**cfg, "freeze": True}, LabelSet.of(["a", "b"]), offline=True)
        rows = np.flatnonzero(present)
        emb = np.zeros((len(data["ids"]), tower.dim), np.float32)
        emb[rows] = encode_posts(tower, [Post(id=data["ids"][i], image=str(data["folder"] / images[data["ids"][i]]))
                                         for i in rows], num_workers=0, desc=f"{data['name']} images")
        print(json.dumps({"set": data["name"], "images": len(rows), "left_out": failed,
                          "without": int(len(present) - len(rows) - failed)}), file=sys.stderr)
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, ids=np.array(data["ids"]), emb=emb, present=present)
    with np.load(path) as z:
        if list(z["ids"]) != data["ids"]:
            raise ValueError(f"{path}: its posts are not the set's; delete it to compute it again")
        return {"image": z["emb"], "image_present": z["present"]}


def _probabilities(name: str, data: dict, draw: np.ndarray, weights: str | None) -> np.ndarray:
    """A logistic regression's class probabilities [test rows, classes], trained on all of the draw, on word
    (``tfidf_lr``) or character n-gram TF-IDF (``chartfidf_lr``) or the frozen MiniLM embeddings (``minilm_lr``)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    y, test = data["y"], data["test"]
    if name == "minilm_lr":
        x_train, x_test = data["emb"][draw], data["emb"][test]
    else:
        vec = (TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) if name == "tfidf_lr" else
               TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))
        x_train = vec.fit_transform([data["texts"][i] for i in draw])
        x_test = vec.transform([data["texts"][i] for i in test])
    lr = LogisticRegression(max_iter=2000, class_weight=weights).fit(x_train, y[draw])
    out = np.zeros((len(test), len(data["classes"])))
    out[:, lr.classes_] = lr.predict_proba(x_test)
    return out


def baseline(name: str, data: dict, draw: np.ndarray) -> np.ndarray:
    """A baseline's predictions on the test rows, trained on all of the draw; ``minilm_chartfidf_lr_balanced``
    averages the probabilities of the balanced MiniLM and character TF-IDF regressions (a lexical member beside
    the sentence encoder: a candidate, not one of the issue's baselines); ``minilm_selftrain_lr_balanced`` is the
    balanced MiniLM regression self-trained (scikit-learn's SelfTrainingClassifier, threshold 0.7) on the draw and
    up to 5,000 other posts of the pool as unlabelled ones (a team's unlabelled posts: a candidate too)."""
    y, test = data["y"], data["test"]
    weights = "balanced" if name.endswith("_balanced") else None
    name = name.removesuffix("_balanced")
    if name == "majority":
        return np.full(len(test), Counter(y[draw].tolist()).most_common(1)[0][0])
    if name in ("tfidf_lr", "chartfidf_lr", "minilm_lr"):
        return _probabilities(name, data, draw, weights).argmax(1)
    if name == "minilm_selftrain_lr":  # the draw plus up to 5,000 unlabelled posts of the pool (a candidate)
        from sklearn.linear_model import LogisticRegression
        from sklearn.semi_supervised import SelfTrainingClassifier

        rest = np.setdiff1d(data["pool"], draw)
        unlabelled = np.random.default_rng(len(draw)).choice(rest, min(5000, len(rest)), replace=False)
        x = np.concatenate([data["emb"][draw], data["emb"][unlabelled]])
        learner = SelfTrainingClassifier(LogisticRegression(max_iter=2000, class_weight=weights), threshold=0.7)
        return learner.fit(x, np.concatenate([y[draw], np.full(len(unlabelled), -1)])).predict(data["emb"][test])
    if name == "minilm_chartfidf_lr":
        return (_probabilities("minilm_lr", data, draw, weights)
                + _probabilities("chartfidf_lr", data, draw, weights)).argmax(1)
    raise ValueError(f"unknown baseline {name!r}")


def _posts(data: dict, rows: np.ndarray) -> list:
    from emocare.data.manifest import Post

    return [Post(id=data["ids"][i], text=data["texts"][i], label=data["classes"][data["y"][i]]) for i in rows]


def _pipeline_split(data: dict, draw: np.ndarray, params: dict) -> dict[str, str]:
    from emocare.data.split import SPLITS, stratified_split

    return stratified_split(_posts(data, draw), {s: params["split"][s] for s in SPLITS}, params["split"]["seed"])


def _fusion_predictions(data: dict, draw: np.ndarray, split: dict[str, str], emb: np.ndarray, params: dict,
                        kind: str, workdir: Path, val_split: str = "val", logits: bool = False,
                        image: bool = False) -> np.ndarray:
    """Train the fusion model on ``emb`` (rows: the draw, then the test rows) as the fusion stage does, with
    ``image`` the set's image features too; predict (or, with ``logits``, its logits of the test rows)."""
    import torch

    from emocare.cache import Cache
    from emocare.labels import LabelSet
    from emocare.models.fusion import load_fusion
    from emocare.pipeline.fusion_training import train_fusion
    from emocare.scoring import cached_fusion_logits

    rows = np.concatenate([draw, data["test"]])
    n = len(rows)
    splits = np.array([split.get(data["ids"][i], "") for i in draw] + ["bench_test"] * len(data["test"]))
    tensors = {m: torch.zeros((n, 1)) for m in ("image", "video")}
    present = {"text": np.ones(n, bool), "image": np.zeros(n, bool), "video": np.zeros(n, bool)}
    if image:
        tensors["image"] = torch.from_numpy(data["image"][rows])
        present["image"] = data["image_present"][rows]
    cache = Cache(ids=[data["ids"][i] for i in rows], labels=data["y"][rows], splits=splits,
                  emb={"text": torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)), **tensors},
                  present=present, label_names=list(data["classes"]),
                  attrs={"text": {"backbone": "all-MiniLM-L6-v2"}, "video": {"backbone": ""},
                         "image": {"backbone": params["image"]["backbone"] if image else ""}})
    classes = LabelSet.of(list(data["classes"]))
    path = workdir / "fusion.pt"
    train_fusion(cache, {**params["fusion"], "kind": kind}, {**params["train"], "device": "cpu"}, path, classes,
                 modalities=["text", "image"] if image else ["text"], val_split=val_split)
    model, _ = load_fusion(path)
    out = cached_fusion_logits(model, cache, np.arange(len(draw), n))
    return out if logits else out.argmax(1)


def frozen_fusion(kind: str, data: dict, draw: np.ndarray, params: dict, workdir: Path,
                  image: bool = False) -> np.ndarray:
    """The fusion model's calibrated logits of the test rows (see ``fusion_<kind>`` above)."""
    split = _pipeline_split(data, draw, params)
    if image and "image" not in data:
        data.update(image_features(data, params))
    return _fusion_predictions(data, draw, split, data["emb"][np.concatenate([draw, data["test"]])], params, kind,
                               workdir, image=image, logits=True)


def setfit_features(data: dict, fit_rows: np.ndarray, rows: np.ndarray, params: dict) -> np.ndarray:
    """The text specialist's pooled features of ``rows`` after :func:`~emocare.pipeline.regimes.setfit_tune` on
    ``fit_rows`` (the train stage's functions, params.yaml's text section)."""
    from emocare.data import specialist_dataset
    from emocare.labels import LabelSet
    from emocare.models import build_specialist
    from emocare.params import TrainConfig
    from emocare.pipeline.regimes import setfit_tune
    from emocare.runtime import seed_everything

    tcfg = TrainConfig.from_params(params["train"], params["text"])
    seed_everything(tcfg.seed)
    model = build_specialist("text", params["text"], LabelSet.of(list(data["classes"])), True)
    setfit_tune(model, [data["texts"][i] for i in fit_rows], data["y"][fit_rows].tolist(), tcfg)
    return specialist_dataset(model.freeze(), _posts(data, rows)).tensors[0].numpy()


_FEATURES: dict = {}  # tuned text features by (set, draw, regime): the learners of one draw tune once


def _memo(key: tuple, compute):
    if key not in _FEATURES:
        _FEATURES.clear()  # one draw's features at a time
        _FEATURES[key] = compute()
    return _FEATURES[key]


def final_model(regime: str, data: dict, draw: np.ndarray, params: dict, workdir: Path,
                kind: str = "auto") -> np.ndarray:
    """The bundle a cross-validated run ships (below ``split.cv_below``): the text features of ``regime``
    (``frozen``: the precomputed embeddings; ``setfit``: tuned on every label of the draw), then the fusion
    model of ``fusion.kind: auto`` trained on every label (no post set aside). ``<regime>+image``: text and
    the frozen image tower's features (a multimodal set). ``<regime>_chartfidf``: its probabilities averaged with
    the balanced character TF-IDF regression's (the lexical member, a candidate)."""
    regime, _, media = regime.partition("+")
    regime, _, member = regime.partition("_")
    if media == "image" and "image" not in data:
        data.update(image_features(data, params))
    rows = np.concatenate([draw, data["test"]])
    emb = data["emb"][rows] if regime == "frozen" else _memo(
        (data["name"], draw.tobytes(), "setfit"), lambda: setfit_features(data, draw, rows, params))
    split = {data["ids"][i]: "train" for i in draw}
    out = _fusion_predictions(data, draw, split, emb, params, kind, workdir, val_split="train", logits=True,
                              image=media == "image")
    probs = np.exp(out - out.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    if member == "chartfidf":
        probs = probs + _probabilities("chartfidf_lr", data, draw, "balanced")
    return probs.argmax(1)


def pipeline_regime(regime: str, data: dict, draw: np.ndarray, params: dict, workdir: Path,
                    kind: str = "auto") -> np.ndarray:
    """The text specialist trained in ``regime`` by the train stage's function, its embeddings, then fusion."""
    split = _pipeline_split(data, draw, params)
    emb = _memo((data["name"], draw.tobytes(), regime),
                lambda: _specialist_embeddings(regime, data, draw, split, params, workdir))
    return _fusion_predictions(data, draw, split, emb, params, kind, workdir)


def _specialist_embeddings(regime: str, data: dict, draw: np.ndarray, split: dict[str, str], params: dict,
                           workdir: Path) -> np.ndarray:
    import h5py

    from emocare.data.split import SPLITS
    from emocare.io import write_json, write_jsonl
    from emocare.pipeline.embed import embed_modality
    from emocare.pipeline.specialists import train_specialist

    posts = _posts(data, np.concatenate([draw, data["test"]]))
    write_jsonl(workdir / "posts.jsonl", [p.to_record() for p in posts])
    write_json(workdir / "split.json", {s: [p.id for p in posts if split.get(p.id) == s] for s in SPLITS})
    run = {**params, "labels": list(data["classes"]), "train": {**params["train"], "regime": regime,
                                                                "device": "cpu"}}
    ckpt = workdir / "text.pt"
    train_specialist("text", run, workdir / "posts.jsonl", workdir / "split.json", ckpt, workdir / "reports")
    embed_modality("text", ckpt, posts, split, workdir / "text.h5", device="cpu")
    with h5py.File(workdir / "text.h5", "r") as f:  # emocare.cache's layout: rows in post order
        return f["emb"][:]


def _calibrated(params: dict, calibration: str) -> dict:
    """params.yaml with ``fusion.calibration`` set to the learner's ``calibration`` where it names one."""
    return {**params, "fusion": {**params["fusion"], "calibration": calibration or params["fusion"]["calibration"]}}


def run_cell(learner: str, data: dict, size: int, draw_no: int, params: dict) -> dict:
    rng = np.random.default_rng([size, draw_no])
    draw = np.sort(rng.choice(data["pool"], size, replace=False))
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if learner.startswith("fusion_"):
            fusion, _, media = learner.removeprefix("fusion_").partition("+")
            kind, _, calibration = fusion.partition(":")
            logits = frozen_fusion(kind, data, draw, _calibrated(params, calibration), Path(tmp),
                                   image=media == "image")
        elif learner.startswith(("final_", "pipeline_")):
            name, _, fusion = learner.partition("/")
            kind, _, calibration = (fusion or "auto").partition(":")
            learn = final_model if name.startswith("final_") else pipeline_regime
            pred = learn(name.partition("_")[2], data, draw, _calibrated(params, calibration), Path(tmp), kind)
        else:
            pred = baseline(learner, data, draw)
    truth, more = data["y"][data["test"]], {}
    if learner.startswith("fusion_"):  # calibrated probabilities: their expected calibration error too
        from emocare.calibration import ece, softmax

        pred, more = logits.argmax(1), {"ece": round(ece(softmax(logits), truth), 4)}
    return {"set": data["name"], "size": size, "draw": draw_no, "learner": learner, "test_posts": len(data["test"]),
            "macro_f1": round(macro_f1(truth, pred, len(data["classes"])), 4), **more,
            "seconds": round(time.time() - started, 1)}


def interval(values: list[float]) -> dict:
    """Mean, sd and the 95 % t-interval of the mean."""
    from scipy.stats import t

    n, mean = len(values), statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": round(mean, 4), "sd": round(sd, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)]}


def summary(cells: list[dict]) -> dict:
    """By set and size: each learner's interval, and its paired difference to the better baseline (by mean)."""
    out: dict = {}
    for key in sorted({(c["set"], c["size"]) for c in cells}):
        here = [c for c in cells if (c["set"], c["size"]) == key]
        by = {}
        for c in here:
            by.setdefault(c["learner"], {})[c["draw"]] = c["macro_f1"]
        row = {learner: interval(list(v.values())) for learner, v in sorted(by.items())}
        bases = [b for b in BASELINES if b in by]
        if bases:
            best = max(bases, key=lambda b: row[b]["mean"])
            row["best_baseline"] = best
            for learner, v in by.items():
                if learner in BASELINES or learner == "majority":
                    continue
                common = sorted(set(v) & set(by[best]))
                if len(common) > 1:
                    row[f"{learner}_minus_{best}"] = interval([v[d] - by[best][d] for d in common])
        out.setdefault(key[0], {})[str(key[1])] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="*", type=Path)
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--learners", default="majority,tfidf_lr,minilm_lr,tfidf_lr_balanced,minilm_lr_balanced,"
                                          "fusion_auto")
    ap.add_argument("--out", type=Path, default=Path("small_data.jsonl"))
    ap.add_argument("--summary", type=Path, nargs="+", help="only summarise these JSON-lines files")
    ap.add_argument("--budget-s", type=float, default=3600, help="start no new cell after this many seconds")
    args = ap.parse_args()
    if args.summary:
        cells = [json.loads(line) for path in args.summary for line in path.read_text().splitlines() if line.strip()]
        print(json.dumps(summary(cells), indent=1))
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    params = load_params(REPO / "params.yaml")
    done = set()
    if args.out.exists():
        done = {(c["set"], c["size"], c["draw"], c["learner"]) for c in map(json.loads, args.out.read_text().split(
            "\n")[:-1])}
    started, cells = time.time(), []
    for folder in args.data:
        data = load_set(folder, args.test)
        for size in map(int, args.sizes.split(",")):
            if size > len(data["pool"]):
                continue
            for d in range(args.first_draw, args.first_draw + args.draws):
                for learner in args.learners.split(","):
                    if (data["name"], size, d, learner) in done:
                        continue
                    if time.time() - started > args.budget_s:
                        print(json.dumps({"stopped": "budget", "after_s": round(time.time() - started)}),
                              file=sys.stderr)
                        print(json.dumps(summary(cells), indent=1))
                        return
                    cell = run_cell(learner, data, size, d, params)
                    cells.append(cell)
                    with open(args.out, "a", encoding="utf-8") as f:
                        f.write(json.dumps(cell) + "\n")
                        f.flush()
                        os.fsync(f.fileno())
                    print(json.dumps(cell), file=sys.stderr)
    all_cells = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    print(json.dumps(summary(all_cells), indent=1))


if __name__ == "__main__":
    main()
