"""Embedding throughput per modality against the bare forward pass of the same encoder.

Run after `dvc repro` (needs data/posts.jsonl and the specialists). For each modality it times
(a) the embed stage's work, `encode_posts` (DataLoader decoding, forward) plus `write_cache`, and
(b) the encoder's forward pass alone on the same batches, already decoded in memory; the model is
loaded once, outside both timings. The ratio (a)/(b) in posts
per second is what decoding and I/O cost; the target on CPU is >= 0.8. Images and videos are timed
three ways: decoding every time, with an empty frame store (decode, then write the pixels) and
with a full one (read them back), and the store's size per 1,000 posts. Prints JSON.

    python benchmarks/embed_throughput.py [--num-workers 2] [--batch-size 64] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emocare.bundle import specialist_path
from emocare.cache import write_cache
from emocare.data import specialist_dataset
from emocare.data.manifest import load_posts
from emocare.data.split import read_split
from emocare.labels import MODALITIES
from emocare.models import load_checkpoint
from emocare.pipeline.embed import encode_posts
from emocare.runtime import autocast, choose_precision, resolve_device, resolve_workers, to_device


def bare_forward(model, posts, batch_size: int, device: torch.device) -> float:
    """Seconds for the encoder alone over pre-decoded batches."""
    ds = specialist_dataset(model, posts)
    items = [ds[i] for i in range(len(ds))]
    batches = [to_device(model.collate(items[i: i + batch_size]), device) for i in range(0, len(items), batch_size)]
    model.to(device).eval()
    with torch.inference_mode(), autocast(device):
        model.encode(batches[0])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in batches:
            model.encode(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", default="auto", help="a number, or auto (as the embed stage)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=1,
                    help="embed the posts this many times over (a steady-state run on a fast GPU)")
    a = ap.parse_args()
    device = resolve_device(a.device)
    posts, split = load_posts("data/posts.jsonl") * a.repeat, read_split("data/split.json")
    results = {"device": str(device), "repeat": a.repeat, "batch_size": a.batch_size,
               "num_workers": resolve_workers(a.num_workers, device), "precision": choose_precision(device),
               "torch_threads": torch.get_num_threads(), "modalities": {}}
    for m in MODALITIES:
        ckpt = specialist_path(m)
        model, payload = load_checkpoint(ckpt)
        have = [p for p in posts if m in p.modalities]
        if payload.get("no_data") or not have:
            results["modalities"][m] = {"posts": 0, "note": "no data"}
            continue
        encode_posts(model, have[: a.batch_size], a.batch_size, 0, device)  # warm-up
        bare = bare_forward(model, have, a.batch_size, device)
        row = {"posts": len(have), "bare_forward_posts_per_s": round(len(have) / bare, 1), "decoding": {}}
        with tempfile.TemporaryDirectory() as tmp:
            frames = Path(tmp) / "frames"
            # decoding every time; then the frame store, empty (decode and write) and full (read back)
            paths = {"decode": None} if m == "text" else {"decode": None, "store_cold": frames, "store_warm": frames}
            for path, store in paths.items():
                start = time.perf_counter()
                emb = encode_posts(model, have, a.batch_size, a.num_workers, device, frame_store=store)
                write_cache(Path(tmp) / f"{m}.h5", emb, np.ones(len(have), bool), [p.id for p in have],
                            np.zeros(len(have), np.int64), [split.get(p.id, "") for p in have], {"modality": m})
                full = time.perf_counter() - start
                row["decoding"][path] = {"embed_posts_per_s": round(len(have) / full, 1),
                                         "ratio": round(bare / full, 3)}
            if m != "text":
                stored = sum(f.stat().st_size for f in frames.rglob("*.npy"))
                row["store_mb_per_1000_posts"] = round(stored / len({getattr(p, m) for p in have}) * 1000 / 1e6, 1)
        results["modalities"][m] = row
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
