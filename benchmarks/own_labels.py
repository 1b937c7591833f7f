"""Your own classes on real text: MELD's seven emotions through `emocare import csv` (no label map) and `dvc repro`,
against TF-IDF + logistic regression on the same split. Prints JSON.

MELD (``../shared/data/meld``: utterances from *Friends*, labelled neutral, joy, surprise, anger, sadness,
disgust, fear) stands in for Reddit text in its own seven-class taxonomy, which is not available offline.
``--posts`` rows are drawn (seeded) from MELD's train, dev and test files together; the pipeline splits them
80/10/10 as it splits any data. The baseline (word 1-2-grams, balanced class weights, C chosen on the
validation split) trains and tests on exactly the pipeline's split. Goal: EmoCare's test macro-F1 at least
0.05 above the baseline's.

    python benchmarks/own_labels.py [--posts 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml
from fusion_experiment import copy_repository, sh

REPO = Path(__file__).resolve().parents[1]
MELD = REPO.parent / "shared" / "data" / "meld"
SEVEN = ["neutral", "joy", "anger", "surprise", "sadness", "fear", "disgust"]


def sample_meld(out: Path, posts: int, seed: int) -> None:
    """``posts`` MELD rows (text and emotion only), drawn with ``seed``, as one CSV."""
    rows = []
    for name in ("train", "dev", "test"):
        with open(MELD / f"{name}_sent_emo.csv", encoding="utf-8", newline="") as f:
            rows += [{"text": r["Utterance"], "emotion": r["Emotion"]} for r in csv.DictReader(f)]
    random.Random(seed).shuffle(rows)
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ["text", "emotion"])
        writer.writeheader()
        writer.writerows(rows[:posts])


def tfidf_baseline(repo: Path, labels: list[str] = SEVEN) -> dict:
    """Test macro-F1 (over ``labels``) of the pipeline's TF-IDF + logistic regression baseline
    (:func:`emocare.pipeline.baselines.tfidf_lr`) trained on the pipeline's train split, C chosen on val."""
    import numpy as np
    from sklearn.metrics import f1_score

    from emocare.pipeline.baselines import tfidf_lr

    posts = {r["id"]: r for r in map(json.loads, (repo / "data" / "posts.jsonl").read_text().splitlines())}
    split = json.loads((repo / "data" / "split.json").read_text())
    ids = [i for s in ("train", "val", "test") for i in split[s]]
    texts, y = [posts[i]["text"] for i in ids], np.array([labels.index(posts[i]["label"]) for i in ids])
    bounds = np.cumsum([0] + [len(split[s]) for s in ("train", "val", "test")])
    train, val, test = (np.arange(bounds[n], bounds[n + 1]) for n in range(3))
    pred, c = tfidf_lr(texts, y, train, val, test, len(labels))
    return {"test_macro_f1": round(float(f1_score(y[test], pred, average="macro", labels=range(len(labels)),
                                                  zero_division=0)), 4), "C": c}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not MELD.is_dir():
        sys.exit(f"MELD not found at {MELD} (../shared beside the repository)")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        copy_repository(repo)
        data = repo / "meld"
        data.mkdir()
        sample_meld(data / "meld.csv", a.posts, a.seed)
        _, imported = sh(repo, sys.executable, "-m", "emocare.cli", "import", "csv", "meld/meld.csv", "--text-col",
                         "text", "--label-col", "emotion", "--labels", ",".join(SEVEN), "-o", "meld/manifest.jsonl")
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["labels"] = SEVEN  # the one line a user writes
        params["data"].update(manifest="meld/manifest.jsonl", root="meld")
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        wall, _ = sh(repo, sys.executable, "-m", "dvc", "repro")
        started = time.perf_counter()
        baseline = tfidf_baseline(repo)
        metrics = json.loads((repo / "reports" / "metrics.json").read_text())
        test = json.loads((repo / "reports" / "test" / "summary.json").read_text())
        print(json.dumps({
            "posts": a.posts, "seed": a.seed, "import": json.loads(imported[imported.index("{"):]),
            "validation": json.loads((repo / "reports" / "data" / "validation.json").read_text()),
            "dvc_repro_s": round(wall, 1), "baseline_s": round(time.perf_counter() - started, 1),
            "emocare_test_macro_f1": round(metrics["test"]["macro_f1"], 4),
            "emocare_per_class_f1": {k: round(v, 4) for k, v in test["per_class_f1"].items()},
            "tfidf_logreg": baseline,
            "margin": round(metrics["test"]["macro_f1"] - baseline["test_macro_f1"], 4),
        }, indent=2))


if __name__ == "__main__":
    main()
