"""Does the review queue find wrong labels? On real labelled data with ``--flip`` of the labels changed at
random to another class, the likely label errors of `emocare label`'s review queue
(`emocare.labelling.review.likely_errors`: cleanlab's confident learning on out-of-fold probabilities of a
logistic regression on frozen MiniLM embeddings) against random labelled posts. Prints JSON.

Per data set and seed: ``--posts`` labelled posts drawn at random, ``--flip`` of them flipped; the flipped
posts among the queue's first ``--top`` and among ``--top`` random labelled posts (expected: ``top x flip``);
``lift`` = queue / expected. Summary per data set: the mean lift with a 95 % t-interval over seeds, and the
queue's precision and recall of the flips.

Data: /work/data/<name>/labels.csv (id,text,label[,...]) with minilm.npy in minilm_ids.txt order.

    python benchmarks/label_review.py [--data meld tweeteval_emotion] [--seeds 5] [--posts 3000]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy import stats as st

from emocare.labelling.review import likely_errors

DATA = Path("/work/data")


def load(name: str) -> tuple[np.ndarray, list[str]]:
    """The embeddings and labels of a data set, in the embeddings' order."""
    folder = DATA / name
    labels = {r["id"]: r["label"] for r in csv.DictReader(open(folder / "labels.csv", encoding="utf-8", newline=""))}
    ids = (folder / "minilm_ids.txt").read_text().split()
    return np.load(folder / "minilm.npy"), [labels[i] for i in ids]


def one(x: np.ndarray, y: list[str], posts: int, flip: float, top: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(y), min(posts, len(y)), replace=False)
    classes = sorted(set(y))
    given = [y[i] for i in rows]
    flipped = set(rng.choice(len(rows), round(flip * len(rows)), replace=False).tolist())
    for j in flipped:
        given[j] = rng.choice([c for c in classes if c != given[j]])
    found = likely_errors(given, x[rows], seed=seed)
    queue = [e["index"] for e in found[:top]]
    randoms = rng.choice(len(rows), top, replace=False)
    hits = sum(j in flipped for j in queue)
    return {"seed": seed, "posts": len(rows), "flipped": len(flipped), "queue_length": len(found),
            "queue_top_flipped": hits, "random_top_flipped": int(sum(j in flipped for j in randoms)),
            "expected_random": round(top * flip, 1), "lift": round(hits / (top * flip), 2),
            "precision_all": round(sum(e["index"] in flipped for e in found) / max(1, len(found)), 3),
            "recall_all": round(sum(e["index"] in flipped for e in found) / len(flipped), 3)}


def interval(values: list[float]) -> list[float]:
    """A 95 % t-interval of the mean over seeds."""
    v = np.array(values, float)
    half = st.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return [round(float(v.mean() - half), 2), round(float(v.mean() + half), 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", default=["meld", "tweeteval_emotion", "goemotions", "cm_off_meme"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--posts", type=int, default=3000, help="labelled posts per run (fewer if the set is smaller)")
    ap.add_argument("--flip", type=float, default=0.1)
    ap.add_argument("--top", type=int, default=100)
    a = ap.parse_args()
    out = {"flip": a.flip, "top": a.top, "data": {}}
    for name in a.data:
        if not (DATA / name / "minilm.npy").is_file():
            out["data"][name] = {"skipped": "no minilm.npy"}
            continue
        x, y = load(name)
        runs = [one(x, y, a.posts, a.flip, a.top, seed) for seed in range(a.seeds)]
        lifts = [r["lift"] for r in runs]
        out["data"][name] = {"classes": len(set(y)), "runs": runs, "lift_mean": round(float(np.mean(lifts)), 2),
                             "lift_95ci": interval(lifts), "lift_min": min(lifts),
                             "random_top_flipped_mean": float(np.mean([r["random_top_flipped"] for r in runs]))}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
