"""The alternative decoding paths against today's: PyAV against OpenCV for videos, batched (device) JPEG decoding
against Pillow and the evaluation transform for images."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from emocare.media.decoding import decode_images
from emocare.media.frame_store import FrameStore, geometric_part
from emocare.media.image import load_image
from emocare.media.video import VideoError, read_frames, read_frames_opencv, read_frames_pyav, video_decoder
from emocare.transforms import eval_transform

VIDEO_TOLERANCE = 2  # levels of 255: the decoders share FFmpeg's; only the RGB conversion could round differently
# device decoding resizes with torch's bicubic on tensors, not Pillow's: rounding differences, mostly 0 or 1 level
IMAGE_MEAN_TOLERANCE, IMAGE_P99_TOLERANCE, IMAGE_MAX_TOLERANCE = 0.5, 2, 32


def h264_clip(path: Path, frames: int = 150, size: int = 48, gop: int = 25) -> Path:
    """A moving-gradient H.264 clip with a keyframe every ``gop`` frames (sampled frames lie far apart)."""
    x = np.linspace(0, 255, size, dtype=np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for t in range(frames):
            img = np.stack([np.add.outer(x, x * 0 + 3 * t) % 256, np.add.outer(x * 0, x) % 256,
                            np.full((size, size), (7 * t) % 256)], -1).astype(np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def videos(demo_dir: Path, tmp_path: Path) -> list[Path]:
    return sorted((demo_dir / "media").glob("*.mp4"))[:6] + [h264_clip(tmp_path / "long.mp4"),
                                                            h264_clip(tmp_path / "short_gop.mp4", 60, 32, 5)]


@pytest.mark.parametrize("k", [8, 3])
def test_pyav_reads_the_frames_opencv_reads(demo_dir: Path, tmp_path: Path, k: int):
    for path in videos(demo_dir, tmp_path):
        cv, pa = read_frames_opencv(path, k), read_frames_pyav(path, k)
        assert len(cv) == len(pa) == k
        for a, b in zip(cv, pa, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
            assert np.abs(a.astype(int) - b.astype(int)).max() <= VIDEO_TOLERANCE, path


def test_pyav_seeks_to_the_sampled_frame_not_a_neighbour(tmp_path: Path):
    # each frame of this clip differs from its neighbours (blue channel 7 levels a frame): a frame off by one fails
    path = h264_clip(tmp_path / "c.mp4")
    for a, b in zip(read_frames_opencv(path, 8), read_frames_pyav(path, 8), strict=True):
        assert abs(float(a[..., 2].mean()) - float(b[..., 2].mean())) < 1.0


def test_the_setting_picks_the_decoder(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("EMOCARE_VIDEO_DECODER", "pyav")
    assert video_decoder() == "pyav"
    monkeypatch.setenv("EMOCARE_VIDEO_DECODER", "gstreamer")
    with pytest.raises(ValueError, match="EMOCARE_VIDEO_DECODER"):
        read_frames(h264_clip(tmp_path / "c.mp4", 10), 2)
    monkeypatch.delenv("EMOCARE_VIDEO_DECODER")
    assert video_decoder() in ("opencv", "pyav")


def test_the_frame_store_keeps_each_decoders_frames_apart(monkeypatch, tmp_path: Path):
    tf = eval_transform({"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3})
    clip = h264_clip(tmp_path / "c.mp4", 30)
    paths = {}
    for decoder in ("opencv", "pyav"):
        monkeypatch.setenv("EMOCARE_VIDEO_DECODER", decoder)
        paths[decoder] = FrameStore(tmp_path / "store", "video", tf, 4).path(clip)
    assert paths["opencv"] != paths["pyav"]


def test_pyav_names_the_file_it_cannot_read(tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(VideoError, match="bad.mp4"):
        read_frames_pyav(bad, 8)


def _as_jpeg(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.mark.parametrize("preprocess", [{"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3},
                                        {"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "squash"}])
def test_batched_jpeg_decoding_matches_the_cpu_path(demo_dir: Path, preprocess: dict):
    """The device path, run with device="cpu" (the same code but for the decode kernel), on JPEGs and PNGs mixed
    in one batch, in order."""
    tf = eval_transform(preprocess)
    geometric = geometric_part(tf)
    pngs = sorted((demo_dir / "media").glob("*.png"))[:12]
    sources = [_as_jpeg(p) if i % 3 else p for i, p in enumerate(pngs)]  # two JPEGs to each PNG
    expected = torch.stack([torch.from_numpy(np.array(geometric(load_image(s)), dtype=np.uint8)).permute(2, 0, 1)
                            for s in sources])
    got = decode_images(sources, tf, "cpu")
    assert got.dtype == torch.uint8 and got.shape == expected.shape
    diff = (got.int() - expected.int()).abs().float()
    assert diff.mean() <= IMAGE_MEAN_TOLERANCE
    assert diff.flatten().quantile(0.99) <= IMAGE_P99_TOLERANCE
    assert diff.max() <= IMAGE_MAX_TOLERANCE
    # each image in its place: nearer its own expected pixels than any other's
    per_pair = (got[:, None].float() - expected[None].float()).abs().mean((2, 3, 4))
    assert torch.equal(per_pair.argmin(1), torch.arange(len(sources)))
