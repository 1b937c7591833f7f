"""Atomic file writes and small JSON helpers: a killed run never leaves a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)
MB = 1024 * 1024  # the byte size behind every --max-*-mb option
FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file; mkstemp's 0600 is replaced by it before the rename
# The longest line a reader holds. A Reddit post object, metadata included, is a few KB to a few hundred KB
# (a title is at most 300 characters and a body 40,000); anything far beyond that is hostile or broken.
MAX_LINE_BYTES = 4 * MB


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``suffix`` ends the temporary name, for writers that choose a format by extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records as JSON Lines atomically; return how many were written."""
    count = 0

    def _write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False, default=_jsonable) + "\n")
                count += 1

    atomic_write(path, _write)
    return count


def jsonl_writer(stack: ExitStack, path: str | os.PathLike) -> Callable[[dict], None]:
    """A function that appends records to ``path`` as JSON Lines, streaming.

    The file is written under a temporary name and renamed onto ``path`` when ``stack`` closes
    without an error, so a killed run leaves no partial file under the final name.
    """
    tmp = stack.enter_context(atomic_path(path, suffix=".jsonl"))
    f = stack.enter_context(open(tmp, "w", encoding="utf-8"))
    return lambda rec: f.write(json.dumps(rec, ensure_ascii=False, default=_jsonable) + "\n")


def bounded_lines(chunks: Iterable[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None, bool]]:
    """Split a byte stream (given in chunks) into ``(line number, line, ended)``, holding at most ``max_bytes``.

    A line longer than ``max_bytes`` is yielded as ``None`` and never held whole; ``ended`` is
    False only for a last line with no newline (a file that may have been cut off).
    """
    buf, too_long, line_no = bytearray(), False, 0  # buf: the start of a line that the next chunk continues
    for chunk in chunks:
        first, last = chunk.find(b"\n"), chunk.rfind(b"\n")
        if first >= 0:
            line_no += 1
            yield line_no, None if too_long or len(buf) + first > max_bytes else bytes(buf) + chunk[:first], True
            buf.clear()
            too_long = False
            for line in chunk[first + 1:last].split(b"\n") if last > first else ():
                line_no += 1
                yield line_no, line if len(line) <= max_bytes else None, True
        rest = memoryview(chunk)[last + 1:]
        if too_long or len(buf) + len(rest) > max_bytes:
            too_long = True
            buf.clear()
        else:
            buf += rest
    if buf or too_long:
        yield line_no + 1, None if too_long else bytes(buf), False


def file_chunks(f, size: int = 1 << 20) -> Iterator[bytes]:
    """A binary file's bytes in chunks of ``size``."""
    while chunk := f.read(size):
        yield chunk


def file_stamp(path: str | os.PathLike) -> list[int]:
    """A file's size and modification time (ns): what changes when it is rewritten, cheaply."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in file_chunks(f):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
