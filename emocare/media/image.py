"""Image loading and integrity checks (Pillow)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000


def check_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Return ``None`` when the image decodes fully, else a reason code with detail."""
    path = Path(path)
    if path.stat().st_size == 0:
        return "zero_byte_file"
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                return f"image_too_large: {w}x{h} exceeds {max_pixels} pixels"
            img.load()
    except UnidentifiedImageError:
        return "undecodable_image: not a recognised image format"
    except OSError as e:
        return f"truncated_image: {e}" if "truncated" in str(e) else f"undecodable_image: {e}"
    except Image.DecompressionBombError as e:
        return f"image_too_large: {e}"
    return None


def load_image(source: str | Path | bytes | Image.Image) -> Image.Image:
    """Open ``source`` (path, bytes or PIL image) as an RGB image."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    with Image.open(source) as img:
        return img.convert("RGB")
