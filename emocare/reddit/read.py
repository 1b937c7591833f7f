"""Streaming readers for Reddit post objects: JSON Lines, JSON (a list or API listings) and zstd dumps.

Pushshift / Arctic Shift monthly dumps are zstd-compressed NDJSON written with a long window,
so the decoder must allow a 2 GiB window. Every reader yields one :class:`Item` per object,
keeping memory flat whatever the file size; a line that is not a JSON object is yielded with
an error and its line number instead of stopping the read.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

ZSTD_MAX_WINDOW = 2**31  # dump files use up to a 2 GiB window (zstd --long=31)
FORMATS = (".jsonl", ".ndjson", ".json", ".zst")


@dataclass
class Item:
    """One object read: where it was (line number, or element index in a JSON list) and the object or error."""

    line_no: int
    obj: dict | None
    error: str | None = None


def _lines(stream: BinaryIO) -> Iterator[Item]:
    for line_no, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            yield Item(line_no, None, f"not valid JSON: {e}")
            continue
        if not isinstance(obj, dict):
            yield Item(line_no, None, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield Item(line_no, obj)


def _unwrap(obj) -> Iterator[dict]:
    """Posts inside an API response: a listing, a list of listings (a post page), a ``t3`` thing or a post."""
    if isinstance(obj, list):
        for x in obj:
            yield from _unwrap(x)
    elif isinstance(obj, dict) and obj.get("kind") == "Listing":
        yield from _unwrap(obj.get("data", {}).get("children", []))
    elif isinstance(obj, dict) and obj.get("kind") in ("t3", "t1") and isinstance(obj.get("data"), dict):
        if obj["kind"] == "t3":
            yield obj["data"]
    elif isinstance(obj, dict):
        yield obj


def _json_list(f: io.TextIOBase, chunk: int = 1 << 20) -> Iterator[Item]:
    """Stream the elements of a top-level JSON array without loading the whole file."""
    decoder, buf, index, eof = json.JSONDecoder(), "", 0, False
    buf = f.read(chunk).lstrip()[1:]  # past "["
    while True:
        buf = buf.lstrip().lstrip(",").lstrip()
        if buf.startswith("]"):
            return
        try:
            obj, end = decoder.raw_decode(buf)
        except json.JSONDecodeError as e:
            if eof:
                yield Item(index + 1, None, f"not valid JSON: {e}")
                return
            more = f.read(chunk)
            eof = not more
            buf += more
            continue
        index += 1
        buf = buf[end:]
        for post in _unwrap(obj):
            yield Item(index, post)


def iter_objects(path: str | Path) -> Iterator[Item]:
    """Yield every post object of ``path`` (``.jsonl``/``.ndjson``, ``.json``, ``.zst``), streaming.

    A ``.json`` file is a JSON list of post objects (streamed element by element) or one API
    response (a listing, read whole: a page holds at most a few hundred posts). API ``t3``
    wrappers are unwrapped; comments (``t1``) inside listings are skipped.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unsupported format {suffix!r}; expected one of {', '.join(FORMATS)}")
    if suffix == ".zst":
        import zstandard

        with open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(raw)
            yield from _lines(io.BufferedReader(reader, buffer_size=1 << 20))
        return
    if suffix == ".json":
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 12).lstrip()
            f.seek(0)
            if head.startswith("["):
                yield from _json_list(f)
                return
            try:
                obj = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        for i, post in enumerate(_unwrap(obj), start=1):
            yield Item(i, post)
        return
    with open(path, "rb") as f:
        yield from _lines(f)
