"""`emocare label` with the live model: how long the first post takes, and how long each decision takes to
answer while the live model embeds posts and retrains in the background. Prints JSON.

The posts are the texts of a real set (``--data``: a folder with labels.csv, e.g. /work/data/goemotions; ``--posts``
of them, seeded), written as a posts file; a simulated annotator answers with the true label after
``--think`` seconds, as a person reading the post would. The first post is timed from opening the session
(reading the posts file, choosing the order) to the state the page shows; the interpreter's start is not in it.

    python benchmarks/label_live.py --data /work/data/goemotions [--posts 3000] [--labels 150] [--think 0.5]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from emocare.labelling.server import Session
from emocare.labels import LabelSet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--posts", type=int, default=3000)
    ap.add_argument("--labels", type=int, default=150)
    ap.add_argument("--think", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.data / "labels.csv", encoding="utf-8", newline="")))
    rows = [rows[i] for i in np.random.default_rng(a.seed).permutation(len(rows))[: a.posts]]
    names = sorted({r["label"] for r in rows})
    classes = LabelSet.of(names)
    truth = {r["id"]: r["label"] for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        posts = Path(tmp) / "posts.jsonl"
        posts.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
        started = time.perf_counter()
        session = Session.open(posts, Path(tmp) / "labels.jsonl", classes, "bench", seed=a.seed)
        state = session.state()
        first = time.perf_counter() - started
        answer = []
        for _ in range(a.labels):
            time.sleep(a.think)
            t = time.perf_counter()
            state = session.label(state["post"]["id"], truth[state["post"]["id"]])
            answer.append(time.perf_counter() - t)
        deadline = time.monotonic() + 300
        while session.live.report.get("trained_on") != a.labels and time.monotonic() < deadline:
            time.sleep(0.2)
        caught_up = time.perf_counter() - started - a.labels * a.think - sum(answer)
        report = session.live.report
        session.live.stop()
    ms = np.array(answer) * 1000
    print(json.dumps({"data": str(a.data), "posts": len(rows), "labels": a.labels, "think_s": a.think,
                      "first_post_s": round(first, 3),
                      "answer_ms": {"p50": round(float(np.percentile(ms, 50)), 1),
                                    "p95": round(float(np.percentile(ms, 95)), 1),
                                    "max": round(float(ms.max()), 1), "over_100ms": int((ms > 100).sum())},
                      "live_caught_up_s_after_last_label": round(caught_up, 1),
                      "features": report.get("features"), "trained_on": report.get("trained_on"),
                      "macro_f1_random_picks": report.get("macro_f1"), "interval": report.get("interval")},
                     indent=1))


if __name__ == "__main__":
    main()
