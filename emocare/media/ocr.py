"""Text inside images: the words drawn on a meme, read by OCR and kept on disk per media file.

With ``text.ocr: true`` the text specialist reads a post's text followed by the text found in its image
(or in frames sampled from its video), the same way in training, embedding and prediction
(:func:`with_ocr`). The engine is rapidocr's PP-OCRv6 (detection + recognition ONNX models inside its
wheel, so it runs offline): chosen by measurement, see the README's "Text inside images".

Reading an image takes about half a second on one CPU core, so each file is read once: the text is
kept under ``<frame_store>/ocr/`` in a small JSON file named by the file's identity and the engine,
written atomically. Images given as bytes or PIL objects (the service) are read every time.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import torch
from PIL import Image

from emocare.io import atomic_path
from emocare.media.frame_store import file_key
from emocare.media.image import load_image
from emocare.media.video import read_frames
from emocare.progress import progress_bar

ENGINE = "rapidocr-3.10/PP-OCRv6"  # part of every cache key: another engine never reads a stale entry
VIDEO_FRAMES = 4  # frames read per video: a caption usually stays on screen for seconds
MIN_SCORE = 0.5  # recognised lines below this confidence are dropped (rapidocr's own default)


class OcrUnavailable(RuntimeError):
    """``text.ocr`` is on but the OCR engine is not installed."""


@functools.cache
def _engine():
    try:
        from rapidocr import RapidOCR
    except ImportError as e:
        raise OcrUnavailable("text.ocr needs the OCR engine: pip install 'emocare[ocr]' (rapidocr and "
                             "onnxruntime)") from e
    engine = RapidOCR(params={"Global.log_level": "warning",
                              "EngineConfig.onnxruntime.intra_op_num_threads": torch.get_num_threads()})
    logging.getLogger("RapidOCR").setLevel(logging.WARNING)
    return engine


def read_text(images: list[Image.Image]) -> str:
    """The lines of text found in ``images``, in reading order, each line once, joined by spaces."""
    lines: list[str] = []
    for image in images:
        found = _engine()(image.convert("RGB"))
        for line, score in zip(found.txts or (), found.scores or (), strict=True):
            if score >= MIN_SCORE and line.strip() and line not in lines:
                lines.append(line.strip())
    return " ".join(lines)


def _images(source, modality: str) -> list[Image.Image]:
    if modality == "image":
        return [load_image(source)]
    return [Image.fromarray(f) for f in read_frames(source, VIDEO_FRAMES)]


def media_text(source, modality: str, store: str | Path | None = None) -> str:
    """The text in one post's image or video (a path; for an image also bytes or a PIL image), read from the
    store under ``store/ocr/`` when a path was read before, else read now (and kept there)."""
    entry = None
    if store is not None and isinstance(source, str | Path):
        key = file_key(source, f"{ENGINE}|{modality}|{VIDEO_FRAMES}")
        entry = Path(store) / "ocr" / key[:2] / f"{key}.json"
        try:
            return json.loads(entry.read_text(encoding="utf-8"))["text"]
        except (FileNotFoundError, ValueError, KeyError):  # not there yet, or unreadable: read again
            pass
    text = read_text(_images(source, modality))
    if entry is not None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry, suffix=".json") as tmp:
            Path(tmp).write_text(json.dumps({"text": text, "engine": ENGINE}), encoding="utf-8")
    return text


def post_media(post) -> tuple[str | None, str | None]:
    """(media, modality) whose text a post carries: its image, else its video, else (None, None)."""
    for modality in ("image", "video"):
        if getattr(post, modality, None):
            return getattr(post, modality), modality
    return None, None


def posts_ocr(posts: list, store: str | Path | None = None) -> list[str]:
    """The text in each post's image or video ("" for a text-only post), with a progress bar."""
    out = []
    for post in progress_bar(posts, desc="ocr", unit="post", leave=False):
        media, modality = post_media(post)
        out.append(media_text(media, modality, store) if media else "")
    return out


def with_ocr(text: str, ocr_text: str) -> str:
    """What the text specialist reads: the post's text, then the text in its media on a line of its own."""
    return f"{text}\n{ocr_text}" if ocr_text else text
