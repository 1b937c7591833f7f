"""How long `emocare trends` takes on a large predictions file, and a period's estimate with its interval. Prints JSON.

Writes ``--posts`` generated predictions (five classes, probabilities from a noisy classifier, spread over ``--weeks``
weeks, two subreddits) with a ``.models.json`` holding validation statistics, so that every quantifier can run;
then times `emocare trends --by week` end to end (a fresh process: import, read, estimate, chart, page) for each
``--quantifiers``, and :func:`emocare.quantify.estimate` plus :func:`~emocare.quantify.interval` on one period of
``--period-posts`` posts.

    python benchmarks/trends_speed.py [--posts 100000] [--weeks 52] [--period-posts 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
T0 = 1704067200  # 2024-01-01


def noisy_probs(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    from emocare.calibration import softmax

    logits = rng.normal(size=(len(labels), k))
    logits[np.arange(len(labels)), labels] += 1.5
    return softmax(logits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=100_000)
    ap.add_argument("--weeks", type=int, default=52)
    ap.add_argument("--period-posts", type=int, default=20_000)
    ap.add_argument("--quantifiers", default="pcc,em,pacc")
    a = ap.parse_args()
    from emocare.labels import DEFAULT
    from emocare.quantify import estimate, interval, validation_stats

    classes, rng = list(DEFAULT), np.random.default_rng(0)
    k = len(classes)
    val_labels = rng.choice(k, 2000)
    stats = validation_stats(noisy_probs(val_labels, k, rng), val_labels)
    # the machine is shared: its load average (1, 5, 15 minutes) before and after says what the timings were up against
    out: dict = {"posts": a.posts, "weeks": a.weeks, "cpus": os.cpu_count(), "load_before": os.getloadavg(),
                 "trends_s": {}, "period": {}}
    period = noisy_probs(rng.choice(k, a.period_posts, p=[0.4, 0.3, 0.1, 0.1, 0.1]), k, rng)
    for method in ("pcc", "pacc", "em"):
        started = time.perf_counter()
        estimate(period, method, stats), interval(period, method, stats)
        out["period"][method] = {"posts": a.period_posts,
                                 "estimate_and_interval_s": round(time.perf_counter() - started, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        labels = rng.choice(k, a.posts)
        probs = noisy_probs(labels, k, rng).round(4)
        preds = Path(tmp) / "predictions.jsonl"
        with preds.open("w") as f:
            for i in range(a.posts):
                f.write(json.dumps({"id": f"p{i}", "text": f"post {i}", "subreddit": "ab"[i % 2],
                                    "created_utc": T0 + int(i / a.posts * a.weeks * 7 * 86400),
                                    "label": classes[int(probs[i].argmax())], "modalities": ["text"],
                                    "probabilities": dict(zip(classes, probs[i].tolist(), strict=True))}) + "\n")
        (Path(tmp) / "predictions.jsonl.models.json").write_text(json.dumps(
            {"label_set": DEFAULT.to_dict(), "validation": stats}))
        for method in a.quantifiers.split(","):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "emocare.cli", "trends", str(preds), "-o", str(Path(tmp) / method),
                            "--by", "week", "--quantifier", method], check=True, cwd=REPO, capture_output=True)
            out["trends_s"][method] = round(time.perf_counter() - started, 1)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
