"""Bulk prediction throughput against the bound the vision tower sets, with the feature store cold and warm.

Run after `dvc repro`. The demo manifest is repeated (new ids, the same media) to at least ``--posts`` posts.
In one run it measures:
- the tower's bound: the image specialist's tower alone (its ``cpu_path``) on decoded 224 px frames, in frames/s,
  the faster of one process on this process's threads and one single-threaded process per DataLoader worker (as
  bulk runs it on a CPU, :func:`emocare.bulk.scores_in_workers`), summed; divided by the frames per post of the mix
  (an image is one frame, a video ``frames``), the posts/s that no bulk run can pass while it computes every
  post's tower features;
- `predict_manifest` in this process, in a scratch project whose params.yaml names an empty feature store
  (``cold``: every media file through the tower; ``--repeats`` times, emptied each time) and then the store it
  filled (``warm``: read back); with ``--compare-main-process``, each cold run is paired with one whose main
  process scores the batches while the workers only decode (bulk before its workers scored on a CPU), in
  alternating order, and the rows of the two are compared;
- with ``--costs``: each part of a post's scoring alone on one thread (as a bulk worker runs it), in ms per post of
  the mix: the tower, the text encoder, decoding images and videos; what is not the tower bounds the share of the
  tower's bound that bulk can reach;
- `emocare predict` as a command, start-up included: warm (``--command-cold``: also with an empty store;
  ``--nproc2``: also ``--nproc 2``, warm).
Prints JSON.

    python benchmarks/predict_throughput.py [--posts 1250] [--batch-size 64] [--workers 2] [--cpu-path auto]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

import emocare
from emocare import bulk
from emocare.bulk import default_workers, predict_manifest
from emocare.predict import EmoCare
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
    path.write_text("\n".join(out[:posts]) + "\n")
    return path


def frames_per_post(manifest: Path, video_frames: int) -> float:
    """Tower frames per post of the manifest's mix: 1 an image, ``video_frames`` a video, 0 text alone."""
    recs = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return sum(video_frames if r.get("video") else 1 if r.get("image") else 0 for r in recs) / len(recs)


def _tower_in_child(model: EmoCare, x: torch.Tensor, queue) -> None:
    torch.set_num_threads(1)  # as in a DataLoader worker
    queue.put(tower_rate(model, x))


def tower_rate(model: EmoCare, x: torch.Tensor, passes: int = 3) -> float:
    """Frames/s (median of ``passes``) of the image specialist's tower on normalised frames ``x``."""
    spec, rates = model.specialists["image"], []
    with torch.inference_mode():
        spec.run_tower(x[:2])  # warm-up
        for _ in range(passes):
            started = time.perf_counter()
            spec.run_tower(x)
            rates.append(len(x) / (time.perf_counter() - started))
    return statistics.median(rates)


def tower_bound(model: EmoCare, manifest: Path, batch: int, processes: int) -> dict:
    """Frames/s of the bare tower: one process on this process's threads, and ``processes`` single-threaded
    processes at once (forked: they share the weights), summed."""
    spec = model.specialists["image"]
    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    images = [str(manifest.parent / r["image"]) for r in recs if r.get("image")][:batch]
    x = spec.normalize(torch.stack([spec.decode(p) for p in images]))  # decode gives uint8 pixels
    out = {"one_process": tower_rate(model, x)}
    if processes:
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        children = [ctx.Process(target=_tower_in_child, args=(model, x, queue)) for _ in range(processes)]
        for c in children:
            c.start()
        out[f"{processes}_single_threaded"] = sum(queue.get() for _ in children)
        for c in children:
            c.join()
    return {k: round(v, 1) for k, v in out.items()}


def part_costs(model: EmoCare, manifest: Path, batch: int, rounds: int = 3) -> dict:
    """ms per post of the manifest's mix for each part of scoring, one thread, median over ``rounds``."""
    from emocare.scoring import features

    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    images = [str(manifest.parent / r["image"]) for r in recs if r.get("image")][:batch]
    videos = [str(manifest.parent / r["video"]) for r in recs if r.get("video")][: max(1, batch // 4)]
    texts = [r.get("text") or "" for r in recs][:batch]
    share = {m: sum(bool(r.get(m)) for r in recs) / len(recs) for m in ("image", "video")}
    spec, text = model.specialists["image"], model.specialists["text"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.stack([spec.decode(p) for p in images])
    parts = {"tower": lambda: spec.encode({"pixels": x}),
             "text": lambda: features(text, text.collate([(t, -1) for t in texts]), model.device),
             "image_decode": lambda: [spec.decode(p) for p in images],
             "video_decode": lambda: [model.specialists["video"].decode(p) for p in videos]}
    per_item = {"tower": frames_per_post(manifest, model.specialists["video"].frames) / len(x),
                "text": 1 / len(texts), "image_decode": share["image"] / len(images),
                "video_decode": share["video"] / len(videos)}
    times: dict[str, list[float]] = {k: [] for k in parts}
    try:
        with torch.inference_mode():
            for f in parts.values():
                f()  # warm-up
            for _ in range(rounds):
                for k, f in parts.items():
                    started = time.perf_counter()
                    f()
                    times[k].append(1000 * (time.perf_counter() - started) * per_item[k])
    finally:
        torch.set_num_threads(threads)
    out = {k: round(statistics.median(v), 2) for k, v in times.items()}
    out["not_tower_over_tower"] = round(sum(v for k, v in out.items() if k != "tower") / out["tower"], 3)
    return out


def project(folder: Path, store: Path, cpu_path: str) -> Path:
    """A scratch project folder whose params.yaml names ``store`` as the frame store (features beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(f"frame_store: {store}\ncpu_path: {cpu_path}\n")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--manifest", default="data/demo/manifest.jsonl")
    ap.add_argument("--posts", type=int, default=1250)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: bulk's default, the cores)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cpu-path", default="auto")
    ap.add_argument("--nproc2", action="store_true", help="also `--nproc 2` as a command, warm")
    ap.add_argument("--command-cold", action="store_true", help="also the command with an empty store")
    ap.add_argument("--repeats", type=int, default=1, help="cold runs in process")
    ap.add_argument("--costs", action="store_true", help="also each part's cost per post, one thread")
    ap.add_argument("--compare-main-process", action="store_true",
                    help="pair each cold run with one whose main process scores (the workers only decode)")
    a = ap.parse_args()
    models = Path(a.models).resolve()
    workers = default_workers() if a.workers is None else a.workers
    result: dict = {"device": str(resolve_device(a.device)), "cpu_cores": len(os.sched_getaffinity(0)),
                    "torch_threads": torch.get_num_threads(), "batch_size": a.batch_size, "workers": workers,
                    "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = repeated_manifest(Path(a.manifest), tmp, a.posts)
        media_root = Path(a.manifest).parent.resolve()  # media/ links there: predict's path rule allows that root
        n = sum(1 for _ in open(manifest))
        model = EmoCare.load(models, a.device, a.cpu_path, frame_store=None)
        per_post = frames_per_post(manifest, model.specialists["video"].frames)
        tower = tower_bound(model, manifest, a.batch_size, workers if model.device.type == "cpu" else 0)
        fps = max(tower.values())
        bound = fps / per_post
        result.update(posts=n, cpu_paths=model.cpu_paths, frames_per_post=round(per_post, 3),
                      tower_frames_per_s=tower, tower_bound_posts_per_s=round(bound, 1))
        if a.costs and model.device.type == "cpu":
            result["ms_per_post_one_thread"] = part_costs(model, manifest, a.batch_size)
        del model
        here = Path.cwd()
        runs: dict = {}
        os.chdir(project(tmp / "inproc", tmp / "store-inproc", a.cpu_path))
        modes = ["workers_score", *(["main_process_scores"] if a.compare_main_process else [])]

        def run(name: str, out: Path) -> None:
            started = time.perf_counter()
            summary = predict_manifest(models, manifest, out, a.batch_size, workers, device=a.device,
                                       media_root=media_root)
            seconds = time.perf_counter() - started
            assert summary["records"] == n and summary["errors"] == 0
            runs.setdefault(name, []).append({"posts_per_s": round(n / seconds, 1), "seconds": round(seconds, 2),
                                              "over_tower_bound": round(n / seconds / bound, 3)})

        try:
            for r in range(a.repeats):
                for mode in modes[r % len(modes):] + modes[: r % len(modes)]:
                    shutil.rmtree(tmp / "store-inproc", ignore_errors=True)
                    with mock.patch.object(bulk, "scores_in_workers",
                                           bulk.scores_in_workers if mode == "workers_score" else lambda *_: False):
                        run(f"cold_{mode}", tmp / f"cold_{mode}.jsonl")
            run("warm", tmp / "warm.jsonl")
        finally:
            os.chdir(here)
        for name, rs in runs.items():
            runs[name] = {"median_posts_per_s": statistics.median(x["posts_per_s"] for x in rs), "runs": rs}
        if a.compare_main_process:  # the same rows either way, within the stated float tolerance
            rows = [[json.loads(line) for line in open(tmp / f"cold_{m}.jsonl")] for m in modes]
            runs["largest_probability_difference"] = max(
                abs(x["probabilities"][c] - y["probabilities"][c]) for x, y in zip(*rows, strict=True)
                for c in x["probabilities"])
            runs["same_labels"] = all(x["label"] == y["label"] for x, y in zip(*rows, strict=True))
        result["predict_in_process"] = runs
        commands = {}
        folder = project(tmp / "cmd", tmp / "store-cmd", a.cpu_path)
        runs_ = (*((("nproc_1_cold", 1),) if a.command_cold else ()), ("nproc_1_warm", 1),
                 *((("nproc_2_warm", 2),) if a.nproc2 else ()))
        if not a.command_cold:  # the command's store filled by the in-process runs: warm from its first post
            shutil.copytree(tmp / "store-inproc", tmp / "store-cmd")
        for name, nproc in runs_:
            cmd = [sys.executable, "-m", "emocare.cli", "predict", "--models", str(models), "--manifest",
                   str(manifest), "-o", str(tmp / f"{name}.jsonl"), "--batch-size", str(a.batch_size),
                   "--device", a.device, "--nproc", str(nproc), "--workers", str(workers),
                   "--media-root", str(media_root)]
            started = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=folder,
                           env={**os.environ, "TQDM_DISABLE": "1",
                                "PYTHONPATH": str(Path(emocare.__file__).resolve().parents[1])})
            seconds = time.perf_counter() - started
            commands[name] = {"posts_per_s": round(n / seconds, 1), "seconds": round(seconds, 2),
                              "over_tower_bound": round(n / seconds / bound, 3)}
        result["command_with_startup"] = commands
        model = EmoCare.load(models, a.device, a.cpu_path, frame_store=None)  # the bound again: the load drifts
        result["tower_frames_per_s_at_end"] = tower_bound(model, manifest, a.batch_size,
                                                          workers if model.device.type == "cpu" else 0)
        result["goals"] = {"posts_per_s": 60, "over_tower_bound": 0.8}
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
