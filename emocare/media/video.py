"""Video frame sampling with OpenCV: seek by frame index, decode only the frames needed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SEEK_GAP = 12  # frames; a seek re-decodes from the previous keyframe, so nearer frames are grabbed


class VideoError(ValueError):
    """A video that cannot be opened or has no decodable frames."""


def sample_indices(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread uniformly over ``n_frames`` (centre of each of k equal segments).

    A clip shorter than ``k`` frames repeats frames.
    """
    if n_frames <= 0:
        raise ValueError("a clip needs at least one frame")
    return [min(n_frames - 1, int((i + 0.5) * n_frames / k)) for i in range(k)]


def check_video(path: str | Path) -> str | None:
    """Return ``None`` when OpenCV can open the clip and decode a frame, else a reason."""
    path = Path(path)
    if path.stat().st_size == 0:
        return "zero_byte_file"
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return "video_unopenable: OpenCV cannot open the file"
        if int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) <= 0:
            return "video_no_frames: the container reports no frames"
        ok, _ = cap.read()
        if not ok:
            return "video_no_frames: no frame could be decoded"
    finally:
        cap.release()
    return None


def read_frames(path: str | Path, k: int) -> list[np.ndarray]:
    """Decode ``k`` uniformly sampled RGB frames (H, W, 3 uint8) from the clip at ``path``."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open the video")
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            raise VideoError(f"{path}: the video has no frames")
        decoded: dict[int, np.ndarray] = {}
        position = 0  # index of the next frame the decoder will return
        for idx in sample_indices(n, k):
            if idx in decoded:
                continue
            if position < idx <= position + SEEK_GAP:  # near: step forward without converting frames
                for _ in range(idx - position):
                    cap.grab()
            elif idx != position:  # far or backwards: seek by frame index
                cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
            ok, frame = cap.read()
            if not ok:  # frame count over-reported: fall back to the last decoded frame
                if not decoded:
                    raise VideoError(f"{path}: no frame could be decoded")
                decoded[idx] = decoded[max(decoded)]
                continue
            decoded[idx] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            position = idx + 1
        return [decoded[i] for i in sample_indices(n, k)]
    finally:
        cap.release()


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 8.0) -> None:
    """Write RGB frames to an MP4 (``mp4v``) file."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise VideoError(f"{path}: OpenCV cannot write MP4 here")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
