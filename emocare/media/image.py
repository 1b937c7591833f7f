"""Image loading and integrity checks (Pillow)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000


def image_size_problem(size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """``image_too_large: WxH exceeds N pixels`` for an image (its header's size) over ``max_pixels``, else None."""
    w, h = size
    return f"image_too_large: {w}x{h} exceeds {max_pixels} pixels" if w * h > max_pixels else None


def check_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Return ``None`` when the image decodes fully, else a reason code with detail."""
    path = Path(path)
    if path.stat().st_size == 0:
        return "zero_byte_file"
    try:
        with Image.open(path) as img:
            too_large = image_size_problem(img.size, max_pixels)
            if too_large:
                return too_large
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
