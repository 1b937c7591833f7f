"""Small JPEG thumbnails as data URIs, for self-contained HTML pages (reports, galleries)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from emocare.media.video import read_frames


def data_uri(img: Image.Image, px: int = 160, quality: int = 80) -> str:
    """``img`` shrunk to fit ``px`` x ``px``, as a ``data:image/jpeg;base64,...`` URI."""
    img = img.convert("RGB")
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def video_strip(path: str | Path, frames: int = 4, px: int = 160) -> Image.Image:
    """``frames`` uniformly sampled frames of a clip side by side, the strip at most ``px`` wide."""
    shots = [Image.fromarray(f) for f in read_frames(path, frames)]
    side = max(1, px // frames)
    strip = Image.new("RGB", (side * frames, side))
    for i, shot in enumerate(shots):
        strip.paste(shot.convert("RGB").resize((side, side)), (i * side, 0))
    return strip


def thumbnail(image: str | Path | None = None, video: str | Path | None = None, px: int = 160) -> str | None:
    """A data URI for a post's image, or a strip of its video's frames; None when there is none or it is unreadable."""
    try:
        if image is not None:
            with Image.open(image) as im:
                return data_uri(im, px)
        if video is not None:
            return data_uri(video_strip(video, px=px), px)
    except (OSError, ValueError):
        return None
    return None
