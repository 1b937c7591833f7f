"""Decoding paths on the CPU, timed interleaved (round by round, so a loaded machine's drift hits each alike).

- videos: `read_frames` with OpenCV against PyAV, 8 sampled frames per clip, on the demo's clips (96 px,
  18-23 frames, MPEG-4 Part 2) and on longer H.264 clips (640x360, 10 s at 30 fps, one keyframe every
  250 frames, as x264 writes by default), with the largest pixel difference between the two;
- images: the CPU path (Pillow decode, the evaluation transform's resize and crop) against
  `emocare.media.decoding.decode_images` with device="cpu" (the device path's code, batches of 64), on
  the demo's images saved as JPEG, at 224 px (ViT-B-32) and 64 px.
Prints JSON: per path the throughput over all rounds and the per-round ratios (alternative / today's).

    python benchmarks/decoding_paths.py [--posts 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from emocare.data.demo import generate
from emocare.media.decoding import decode_images
from emocare.media.frame_store import geometric_part
from emocare.media.image import load_image
from emocare.media.video import read_frames_opencv, read_frames_pyav
from emocare.transforms import eval_transform


def h264_clips(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 10 s 640x360 H.264 clips of a scrolling noise texture (x264's default keyframe interval)."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        path = folder / f"h264_{j}.mp4"
        texture = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=30)
            s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
            for t in range(300):
                for packet in s.encode(av.VideoFrame.from_ndarray(np.roll(texture, 3 * t, axis=1), format="rgb24")):
                    c.mux(packet)
            for packet in s.encode():
                c.mux(packet)
        out.append(path)
    return out


def interleaved(paths: dict, items: list, rounds: int) -> dict:
    """Seconds per round for each path over ``items``, the paths taking turns within each round."""
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            started = time.perf_counter()
            run(items)
            times[name].append(time.perf_counter() - started)
    return times


def summary(times: dict, n: int, unit: str) -> dict:
    today, alternative = list(times)
    ratios = [t / a for t, a in zip(times[today], times[alternative], strict=True)]
    return {**{f"{name}_{unit}_per_s": round(n * len(t) / sum(t), 1) for name, t in times.items()},
            f"{alternative}_over_{today}": {"median": round(statistics.median(ratios), 2),
                                            "min": round(min(ratios), 2), "max": round(max(ratios), 2)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=300, help="demo posts to generate (about a fifth are videos)")
    ap.add_argument("--h264-clips", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    result: dict = {"rounds": a.rounds, "torch_threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        demo = generate(Path(tmp) / "demo", posts=a.posts, seed=7)
        media = demo.parent / "media" if demo.is_file() else demo / "media"
        for name, clips in (("demo_videos", sorted(media.glob("*.mp4"))), ("h264_640x360_10s",
                                                                            h264_clips(Path(tmp), a.h264_clips))):
            diff = max(int(np.abs(x.astype(int) - y.astype(int)).max()) for c in clips
                       for x, y in zip(read_frames_opencv(c, 8), read_frames_pyav(c, 8), strict=True))
            times = interleaved({"opencv": lambda cs: [read_frames_opencv(c, 8) for c in cs],
                                 "pyav": lambda cs: [read_frames_pyav(c, 8) for c in cs]}, clips, a.rounds)
            result[name] = {"clips": len(clips), **summary(times, len(clips), "clips"), "max_pixel_diff": diff}
        jpegs = []
        for p in sorted(media.glob("*.png")):
            buf = io.BytesIO()
            Image.open(p).convert("RGB").save(buf, "JPEG", quality=90)
            jpegs.append(buf.getvalue())
        for size, preprocess in ((224, {"size": 224}), (64, {"size": 64, "resize_mode": "squash"})):
            tf = eval_transform({**preprocess, "mean": [0.5] * 3, "std": [0.5] * 3})
            geometric = geometric_part(tf)
            times = interleaved({"pillow": lambda bs, g=geometric: [np.asarray(g(load_image(b))) for b in bs],
                                 "batched": lambda bs, tf=tf: [decode_images(bs[i: i + 64], tf, "cpu")
                                                               for i in range(0, len(bs), 64)]}, jpegs, a.rounds)
            result[f"jpeg_images_{size}px"] = {"images": len(jpegs), **summary(times, len(jpegs), "images")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
