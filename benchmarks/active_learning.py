"""The labelling loop, simulated: macro-F1 on a fixed test split against the number of labels, for
`emocare label`'s orders (`uncertainty`, `mixed`, `random`). Prints JSON; writes the curves as PNG and JSON.

Run after `dvc repro` on the demo set. Its training posts are the pool, their labels hidden; a simulated
annotator answers with the hidden label. Each round retrains the **fusion model only** (the pipeline's
`train_fusion`, seconds) on the labelled posts' cached embeddings, validated on the demo's validation split,
and scores the pool with it (calibrated, `emocare.scoring`); the next ``--step`` posts are the first of
`emocare.labelling.queue.order` over the pool (entropy first, random, or mixed with ``--random-share``). Every
strategy starts from the same ``--start`` random labels, and the run repeats over ``--seeds``.

The image and video embeddings are frozen ImageNet features (EfficientNet-Lite0): they never saw a label. The
text embeddings are the committed text specialist's, fine-tuned on all 1,000 training labels: optimistic, alike
for both strategies.

    python benchmarks/active_learning.py [--start 50] [--step 50] [--max 600] [--seeds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from emocare.cache import load_cache
from emocare.calibration import softmax
from emocare.io import write_json
from emocare.labelling.queue import entropy, order
from emocare.labels import LabelSet
from emocare.metrics import summary
from emocare.models.fusion import load_fusion
from emocare.pipeline.fusion_training import train_fusion
from emocare.scoring import cached_fusion_logits

STRATEGIES = ("uncertainty", "mixed", "random")


def curve(cache, params: dict, classes: LabelSet, strategy: str, sizes: list[int], seed: int, tmp: Path,
          random_share: float) -> tuple[list[float], float]:
    """Test macro-F1 at each size of the labelled set; and the seconds spent retraining."""
    rng = np.random.default_rng(seed)
    pool = cache.rows("train")
    labelled = set(rng.choice(pool, sizes[0], replace=False).tolist())
    test = cache.rows("test")
    out, retrain_s = [], 0.0
    for size in sizes:
        splits = cache.splits.copy()
        unlabelled = np.array(sorted(set(pool.tolist()) - labelled))
        splits[unlabelled] = "pool"
        view = dataclasses.replace(cache, splits=splits)
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the trainer's epoch lines; stdout is the JSON
            train_fusion(view, params["fusion"], {**params["train"], "seed": seed}, tmp / "fusion.pt", classes,
                         desc=f"{strategy} {size}")
        retrain_s += time.perf_counter() - started
        model, _ = load_fusion(tmp / "fusion.pt")
        out.append(summary(cache.labels[test], cached_fusion_logits(model, view, test))["macro_f1"])
        wanted = sizes[min(sizes.index(size) + 1, len(sizes) - 1)] - size
        if wanted <= 0 or not len(unlabelled):
            continue
        probs = softmax(cached_fusion_logits(model, view, unlabelled))
        scores = {int(i): entropy(dict(enumerate(p))) for i, p in zip(unlabelled, probs, strict=True)}
        asked = order(list(scores), strategy, scores, random_share, seed=int(rng.integers(1 << 30)))
        labelled |= {i for i, _, _ in asked[:wanted]}
    return out, retrain_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="cache/embeddings")
    ap.add_argument("--start", type=int, default=50)
    ap.add_argument("--step", type=int, default=50)
    ap.add_argument("--max", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--random-share", type=float, default=0.2, help="mixed: the share of random picks")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    params = yaml.safe_load(Path("params.yaml").read_text())
    classes = LabelSet.from_params(params)
    cache = load_cache(a.cache)
    sizes = list(range(a.start, a.max + 1, a.step))
    runs: dict[str, list[list[float]]] = {s: [] for s in STRATEGIES}
    seconds: dict[str, float] = dict.fromkeys(STRATEGIES, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            for strategy in STRATEGIES:
                f1, s = curve(cache, params, classes, strategy, sizes, seed, Path(tmp), a.random_share)
                runs[strategy].append(f1)
                seconds[strategy] += s
    mean = {s: np.mean(runs[s], 0) for s in STRATEGIES}
    goal_at = 400 if 400 in sizes else sizes[-1]
    target = float(mean["random"][sizes.index(goal_at)])
    # the size from which the (noisy) mean curve stays at or above random's figure, not its first touch
    reached = {s: next((n for k, n in enumerate(sizes) if all(f >= target for f in mean[s][k:])), None)
               for s in ("uncertainty", "mixed")}
    out = {"pool": int(len(cache.rows("train"))), "test_posts": int(len(cache.rows("test"))), "sizes": sizes,
           "seeds": a.seeds, "retrains": "the fusion model only, on cached embeddings",
           "macro_f1": {s: [round(float(x), 4) for x in mean[s]] for s in STRATEGIES},
           "macro_f1_runs": {s: [[round(x, 4) for x in r] for r in runs[s]] for s in STRATEGIES},
           "retrain_s_per_round": round(sum(seconds.values()) / (len(STRATEGIES) * a.seeds * len(sizes)), 2),
           "goal": {"random_macro_f1_at": goal_at, "random_macro_f1": round(target, 4),
                    "labels_from_which_it_stays_reached": reached}}
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "active_learning.json", out)
    plot(sizes, runs, a.out / "active_learning.png")
    print(json.dumps(out, indent=2))


def plot(sizes: list[int], runs: dict[str, list[list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for strategy, colour in zip(STRATEGIES, ("#d62728", "#1f77b4", "#7f7f7f"), strict=True):
        r = np.array(runs[strategy])
        mean, sem = r.mean(0), r.std(0, ddof=1) / np.sqrt(len(r)) if len(r) > 1 else np.zeros(len(sizes))
        ax.plot(sizes, mean, marker="o", color=colour, label=f"{strategy} (mean of {len(r)} seeds, ±1 s.e.)")
        ax.fill_between(sizes, mean - sem, mean + sem, color=colour, alpha=0.15)
    ax.set_xlabel("labels")
    ax.set_ylabel("test macro-F1")
    ax.set_title("Labelling the demo set: which posts to ask about")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
