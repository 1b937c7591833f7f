"""Streaming readers for Reddit post objects: JSON Lines, JSON (a list or API listings) and zstd dumps.

Pushshift / Arctic Shift monthly dumps are zstd-compressed NDJSON written with a long window,
so the decoder must allow a 2 GiB window. Every reader yields one :class:`Item` per object,
keeping memory flat whatever the file size; a line that is not a JSON object, or longer than
``max_line_bytes``, is yielded with an error (``code: detail``) and its line number instead of
stopping the read. A dump that ends inside a zstd frame (a cut-off download) ends with a
``truncated`` item.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from emocare.io import MAX_LINE_BYTES, MB, bounded_lines, file_chunks

ZSTD_MAX_WINDOW = 2**31  # dump files use up to a 2 GiB window (zstd --long=31)
# Compressed bytes per decompression call: a zstd block of 4 bytes can stand for 128 KB, so 256 bytes in are at
# most ~8 MB out, however hostile the file (reading 1 MB at a time let a 13 KB file expand to a 400 MB string)
ZSTD_STEP = 256
FORMATS = (".jsonl", ".ndjson", ".json", ".zst")


@dataclass
class Item:
    """One object read: where it was (line number, or element index in a JSON list) and the object or error."""

    line_no: int
    obj: dict | None
    error: str | None = None


def _parse(line_no: int, raw: bytes | None, max_line_bytes: int) -> Item | None:
    """The item for one line (``None`` for a blank line)."""
    if raw is None:
        return Item(line_no, None, f"too_long: the line is over {max_line_bytes / MB:g} MB (--max-line-mb)")
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deeply
        return None if not raw.strip() else Item(line_no, None, f"not_json: not valid JSON ({e})")
    if not isinstance(obj, dict):
        return Item(line_no, None, f"not_object: expected a JSON object, got {type(obj).__name__}")
    return Item(line_no, obj)


@dataclass
class ReadLimits:
    """What a reader accepts: the longest line (or JSON list element), and a dump that ends early."""

    max_line_bytes: int = MAX_LINE_BYTES
    allow_truncated: bool = False


class TruncatedInput(ValueError):
    """A dump that ends early: a non-zero exit unless ``allow_truncated``."""


class _ZstChunks:
    """The decompressed bytes of a zstd file, in bounded chunks; afterwards ``problem`` says if it ended early."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.problem = raw, None

    def __iter__(self) -> Iterator[bytes]:
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        frame, in_frame, frames = dctx.decompressobj(), False, 0
        pending, size = [], 0  # small outputs gathered into ~1 MB chunks: the line splitter's loop is in Python
        try:
            while data := self.raw.read(ZSTD_STEP):
                while data:
                    in_frame = True
                    out = frame.decompress(data)
                    pending.append(out)
                    size += len(out)
                    data = b""
                    if frame.eof:  # the next frame, if any, starts in the bytes this one left over
                        data, frame, in_frame, frames = frame.unused_data, dctx.decompressobj(), False, frames + 1
                if size >= 1 << 20:
                    yield b"".join(pending)
                    pending, size = [], 0
        except zstandard.ZstdError as e:
            self.problem = f"corrupt zstd data ({e})"
        else:
            if in_frame or not frames:
                self.problem = "the zstd stream ends inside a frame (a cut-off download or copy?)"
        yield b"".join(pending)


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


def _json_list(f: io.TextIOBase, max_bytes: int, chunk: int = 1 << 20) -> Iterator[Item]:
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
                yield Item(index + 1, None, f"not_json: not valid JSON ({e})")
                return
            if len(buf) > max_bytes:  # no way to find the next element without holding this one
                yield Item(index + 1, None, f"too_long: element over {max_bytes / MB:g} MB (--max-line-mb); "
                                            "the rest of the list is not read")
                return
            more = f.read(chunk)
            eof = not more
            buf += more
            continue
        index += 1
        buf = buf[end:]
        for post in _unwrap(obj):
            yield Item(index, post)


def _zst_items(path: Path, max_line_bytes: int) -> Iterator[Item]:
    with open(path, "rb") as raw:
        stream, last = _ZstChunks(raw), 0
        for line_no, data, ended in bounded_lines(stream, max_line_bytes):
            if not ended and stream.problem:
                break  # the cut-off line: reported with the truncation below, not as bad JSON
            last = line_no
            if item := _parse(line_no, data, max_line_bytes):
                yield item
    if stream.problem:
        yield Item(last + 1, None, f"truncated: {path}: {stream.problem}; line {last} is the last complete line")


def iter_objects(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Item]:
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
        yield from _zst_items(path, max_line_bytes)
        return
    if suffix == ".json":
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 12).lstrip()
            f.seek(0)
            if head.startswith("["):
                yield from _json_list(f, max_line_bytes)
                return
            try:
                obj = json.load(f)
            except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deeply
                raise ValueError(f"{path}: not valid JSON ({e})") from None
        for i, post in enumerate(_unwrap(obj), start=1):
            yield Item(i, post)
        return
    with open(path, "rb") as f:
        for line_no, data, _ in bounded_lines(file_chunks(f), max_line_bytes):
            if item := _parse(line_no, data, max_line_bytes):
                yield item
