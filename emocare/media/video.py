"""Video frame sampling: seek by frame index, decode only the frames needed, with OpenCV or PyAV.

Both read the same frame indices (:func:`sample_indices`) through FFmpeg's decoders; their RGB
pixels could differ only by the YUV-to-RGB conversion (tested: within 2 levels of 255 per channel; on the
demo's clips they are identical). The ``EMOCARE_VIDEO_DECODER`` environment variable (``opencv`` or
``pyav``) picks one; the default is the one measured faster on the demo's clips (README: decoding paths).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

SEEK_GAP = 12  # frames; a seek re-decodes from the previous keyframe, so nearer frames are decoded in turn
DECODERS = ("opencv", "pyav")
DEFAULT_DECODER = "opencv"  # faster on short small clips (the demo's); pyav on long H.264 ones (README)


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


def video_decoder() -> str:
    """The decoder ``EMOCARE_VIDEO_DECODER`` names, else the default."""
    name = os.environ.get("EMOCARE_VIDEO_DECODER", DEFAULT_DECODER)
    if name not in DECODERS:
        raise ValueError(f"EMOCARE_VIDEO_DECODER={name!r}: expected one of {', '.join(DECODERS)}")
    return name


def read_frames(path: str | Path, k: int, decoder: str | None = None) -> list[np.ndarray]:
    """Decode ``k`` uniformly sampled RGB frames (H, W, 3 uint8) from the clip at ``path``, with ``decoder``
    (default: :func:`video_decoder`)."""
    decoder = decoder or video_decoder()
    if decoder == "pyav":
        return read_frames_pyav(path, k)
    if decoder != "opencv":
        raise ValueError(f"unknown video decoder {decoder!r}: expected one of {', '.join(DECODERS)}")
    return read_frames_opencv(path, k)


def read_frames_opencv(path: str | Path, k: int) -> list[np.ndarray]:
    """:func:`read_frames` with OpenCV's VideoCapture: grab near frames, seek to far ones."""
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


def read_frames_pyav(path: str | Path, k: int) -> list[np.ndarray]:
    """:func:`read_frames` with PyAV: threaded decoding; keyframe-aware seeks (the packets' keyframe flags are
    read first, without decoding: a frame is reached by seeking to the keyframe before it only when that
    keyframe is past the decoder's position, else by decoding forward); only the sampled frames are converted.

    A frame's index is its presentation time times the frame rate, as OpenCV counts frames, so both read the
    same frames. Without a frame count in the container, the packets are counted.
    """
    import av  # here: only this decoder needs PyAV

    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: PyAV cannot open the video ({e})") from e
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads
        rate, base, start = stream.average_rate or stream.guessed_rate, stream.time_base, stream.start_time or 0
        if not rate or not base:
            raise VideoError(f"{path}: the video stream has no frame rate or time base")

        def index(item) -> int:  # a frame or a packet
            return round(float((item.pts - start) * base * rate))

        try:
            n, keyframes = stream.frames, {}
            if n <= 0 or n > k * SEEK_GAP:  # sampled frames far apart, or no count: find where seeks can land
                # the packets' keyframe flags, read without decoding: {frame index: pts}
                packets = [p for p in container.demux(stream) if p.pts is not None]
                keyframes = {index(p): p.pts for p in packets if p.is_keyframe}
                n = n or len(packets)
                container.seek(start, stream=stream)
            if n <= 0:
                raise VideoError(f"{path}: the video has no frames")
            wanted = sample_indices(n, k)
            decoded: dict[int, np.ndarray] = {}
            frames = container.decode(stream)
            position = 0  # index of the next frame the decoder will return
            for idx in sorted(set(wanted)):
                keyframe = max((f for f in keyframes if f <= idx), default=0)
                if keyframe > position:  # a keyframe lies between: seek to it rather than decode up to it
                    container.seek(keyframes[keyframe], stream=stream, backward=True)
                    frames = container.decode(stream)
                for frame in frames:
                    position = index(frame) + 1
                    if position > idx:
                        decoded[idx] = frame.to_ndarray(format="rgb24")
                        break
                else:  # frame count over-reported: fall back to the last decoded frame
                    if not decoded:
                        raise VideoError(f"{path}: no frame could be decoded")
                    decoded[idx] = decoded[max(decoded)]
        except av.FFmpegError as e:
            raise VideoError(f"{path}: PyAV cannot decode the video ({e})") from e
        return [decoded[i] for i in wanted]


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
