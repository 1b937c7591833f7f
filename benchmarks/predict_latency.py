"""Inference speed of the trained bundle: single-post latency p50/p95 and batch throughput.

Run after `dvc repro` (uses models/ and the demo media). Text-only and text+image posts. Prints JSON.

    python benchmarks/predict_latency.py [--models models] [--n 100] [--batch-size 32] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from emocare.data.manifest import load_posts
from emocare.predict import EmoCare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    model = EmoCare.load(a.models, a.device)
    posts = [p for p in load_posts("data/posts.jsonl") if p.image][: a.n]
    cases = {"text": [{"text": p.text} for p in posts],
             "text+image": [{"text": p.text, "image": p.image} for p in posts]}
    out = {"device": str(model.device), "torch_threads": torch.get_num_threads(), "posts": len(posts),
           "batch_size": a.batch_size, "cases": {}}
    for name, items in cases.items():
        model.predict(**items[0])  # warm-up
        times = []
        for item in items:
            start = time.perf_counter()
            model.predict(**item)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.predict_batch(items, a.batch_size)
        batch = time.perf_counter() - start
        out["cases"][name] = {"single_p50_ms": round(float(np.percentile(times, 50)) * 1000, 2),
                              "single_p95_ms": round(float(np.percentile(times, 95)) * 1000, 2),
                              "batch_posts_per_s": round(len(items) / batch, 1)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
