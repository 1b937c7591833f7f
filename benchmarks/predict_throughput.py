"""Bulk prediction throughput: `emocare predict --manifest` against the `embed` stage on the same posts.

Run after `dvc repro`. The demo manifest is repeated (new ids) to at least ``--posts`` posts.
In one run it measures:
- embed: the embed stage's function (`encode_posts`, the stage's batch size and workers), all
  three modalities, as posts/s over the posts (goal: predict >= 0.8 of it);
- predict: `predict_manifest` in this process, for each worker count in ``--workers``;
- `emocare predict --nproc 1` against `--nproc 2`, as commands (start-up included).
Prints JSON.

    python benchmarks/predict_throughput.py [--posts 5000] [--batch-size 64] [--workers 0 2] [--device auto]
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

import torch

from emocare.bulk import default_workers, predict_manifest
from emocare.bundle import specialist_path
from emocare.data.manifest import load_posts
from emocare.labels import MODALITIES
from emocare.models import load_checkpoint
from emocare.params import load_params
from emocare.pipeline.embed import encode_posts
from emocare.runtime import resolve_device


def repeated_manifest(src: Path, folder: Path, posts: int) -> Path:
    """``src`` repeated with fresh ids to at least ``posts`` records, media paths still valid."""
    lines = src.read_text().splitlines()
    (folder / "media").symlink_to(src.parent.resolve() / "media")
    out = []
    copy = 0
    while len(out) < posts:
        for line in lines:
            rec = json.loads(line)
            rec["id"] = f"{rec['id']}-{copy}"
            out.append(json.dumps(rec))
        copy += 1
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


def embed_seconds(manifest: Path, models: Path, batch_size: int, workers: int, device: torch.device) -> float:
    """Wall time of the embed stage's encoding, every modality, over the manifest's posts."""
    posts = load_posts(manifest)
    total = 0.0
    for m in MODALITIES:
        model, _ = load_checkpoint(specialist_path(m, models), device)
        mine = [p for p in posts if m in p.modalities]
        started = time.perf_counter()
        encode_posts(model, mine, batch_size, workers, device, desc=f"embed {m}")
        if device.type == "cuda":
            torch.cuda.synchronize()
        total += time.perf_counter() - started
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--manifest", default="data/demo/manifest.jsonl")
    ap.add_argument("--posts", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", help="worker counts to try (default: 0 and the default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-nproc", action="store_true", help="skip the --nproc 1 vs 2 comparison")
    a = ap.parse_args()
    device, models = resolve_device(a.device), Path(a.models)
    params = load_params()
    workers = a.workers or sorted({0, default_workers()})
    result: dict = {"device": str(device), "cpu_cores": len(os.sched_getaffinity(0)), "batch_size": a.batch_size,
                    "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = repeated_manifest(Path(a.manifest), Path(tmp), a.posts)
        n = sum(1 for _ in open(manifest))
        result["posts"] = n
        embed_s = embed_seconds(manifest, models, params["embed"]["batch_size"], params["embed"]["num_workers"],
                                device)
        result["embed"] = {"posts_per_s": round(n / embed_s, 1), "seconds": round(embed_s, 2),
                           "batch_size": params["embed"]["batch_size"], "workers": params["embed"]["num_workers"]}
        runs = {}
        for w in workers:
            started = time.perf_counter()
            summary = predict_manifest(models, manifest, Path(tmp) / f"p{w}.jsonl", a.batch_size, w, device=a.device)
            seconds = time.perf_counter() - started
            assert summary["records"] == n and summary["errors"] == 0
            runs[f"workers_{w}"] = {"posts_per_s": round(n / seconds, 1), "seconds": round(seconds, 2)}
        result["predict"] = runs
        best = max(r["posts_per_s"] for r in runs.values())
        result["predict_over_embed"] = round(best / result["embed"]["posts_per_s"], 3)
        result["goal_predict_over_embed"] = 0.8
        if not a.no_nproc:
            procs = {}
            for nproc in (1, 2):
                cmd = [sys.executable, "-m", "emocare.cli", "predict", "--models", str(models), "--manifest",
                       str(manifest), "-o", str(Path(tmp) / f"n{nproc}.jsonl"), "--batch-size", str(a.batch_size),
                       "--device", a.device, "--nproc", str(nproc)]
                started = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "TQDM_DISABLE": "1"})
                seconds = time.perf_counter() - started
                procs[f"nproc_{nproc}"] = {"posts_per_s": round(n / seconds, 1), "seconds": round(seconds, 2)}
            result["command_with_startup"] = procs
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
