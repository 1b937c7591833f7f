"""Media type from content: the first bytes of a file decide what it is, never its name or a header."""

from __future__ import annotations

IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg", b"GIF87a": "gif", b"GIF89a": "gif", b"BM": "bmp"}
HEAD_BYTES = 16


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, extension) from a file's first bytes: ("image", "png"), ("video", "mp4")... or None."""
    for magic, fmt in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return "image", fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] == b"RIFF" and head[8:11] == b"AVI":
        return "video", "avi"
    if head[4:8] == b"ftyp":
        return "video", "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "webm"
    return None
