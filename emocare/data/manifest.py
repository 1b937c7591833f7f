"""The post manifest: JSON Lines, one post per line.

Fields: ``id`` (unique string), ``text`` (may be empty only when the post has media),
``image`` and ``video`` (paths relative to the manifest's folder, optional), ``label``
(optional for prediction input); any other field is kept as metadata, ``created_utc`` as a
Unix time.

One path rule for every manifest, imported, hand-written or written by `validate`: a media path
is relative to the manifest's folder, never absolute, and lies inside the manifest's folder or the
media root (by default the working directory: your project). So a manifest whose media sit in a
sibling folder (``../media/a.jpg``) is valid, and ``../../etc/passwd`` from a project is not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from emocare.io import MAX_LINE_BYTES, bounded_lines, file_chunks
from emocare.labels import MODALITIES

CORE_FIELDS = ("id", "text", "image", "video", "label")
# Longer texts are quarantined: Reddit allows a 300-character title and a 40,000-character body (joined by a
# blank line on import), and the text encoder reads only the first few hundred tokens of any text.
MAX_TEXT_CHARS = 40_302


class ManifestError(ValueError):
    """A manifest that cannot be read at all (for example a line that is not JSON)."""


@dataclass
class Post:
    """One post. Media paths are absolute once loaded."""

    id: str
    text: str = ""
    image: str | None = None
    video: str | None = None
    label: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        """Modalities present, in canonical order (text counts when non-empty)."""
        has = {"text": bool(self.text.strip()), "image": self.image is not None, "video": self.video is not None}
        return [m for m in MODALITIES if has[m]]

    def to_record(self, root: Path | None = None) -> dict:
        """Manifest record; media paths made relative to ``root`` when given."""
        rec: dict = {"id": self.id, "text": self.text}
        for key in ("image", "video"):
            value = getattr(self, key)
            if value is not None:
                rec[key] = os.path.relpath(value, root) if root is not None else value
        if self.label is not None:
            rec["label"] = self.label
        rec.update(self.meta)
        return rec


@dataclass
class RawLine:
    """A manifest line as read: its number, the parsed record, or why it could not be decoded."""

    line_no: int
    record: dict | None
    error: str | None = None
    raw: str = ""


def parse_line(raw: bytes, path: str | Path, line_no: int) -> tuple[RawLine, bool]:
    """One manifest line as a :class:`RawLine`, and whether its problem (if any) makes the manifest unreadable.

    A line that is not UTF-8 gets an error to quarantine it; a line that is not JSON, or not a
    JSON object, gets an error naming its line number and counts as unreadable.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RawLine(line_no, None, f"not_utf8: {e.reason} at byte {e.start}",
                       raw.decode("utf-8", errors="replace").rstrip("\n")), False
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        problem = f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        problem = f"{path}:{line_no}: not valid JSON (nested too deeply)"
    else:
        if isinstance(record, dict):
            return RawLine(line_no, record, raw=text.rstrip("\n")), False
        problem = f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}"
    return RawLine(line_no, None, problem, text.rstrip("\n")), True


def iter_manifest(path: str | Path, strict: bool = True) -> Iterator[RawLine]:
    """Yield every non-blank line of a manifest (see :func:`parse_line`).

    A line that is not JSON, or not a JSON object, raises :class:`ManifestError` naming its line
    number, or with ``strict=False`` is yielded with that message as its error.
    A line over ``MAX_LINE_BYTES`` is never held whole: it is yielded with a ``too_long`` error.
    """
    with open(path, "rb") as f:
        for line_no, raw, _ in bounded_lines(file_chunks(f), MAX_LINE_BYTES):
            if raw is None:
                yield RawLine(line_no, None, f"too_long: line {line_no} is over {MAX_LINE_BYTES} bytes")
                continue
            if not raw.strip():
                continue
            line, unreadable = parse_line(raw, path, line_no)
            if unreadable and strict:
                raise ManifestError(line.error)
            yield line


def resolve_media(manifest_dir: Path, value: str, media_root: Path | None = None) -> Path:
    """Resolve a manifest media path by the module's path rule; a ``ValueError`` says how it breaks it.

    ``media_root`` defaults to the working directory.
    """
    if os.path.isabs(value):
        raise ValueError(f"absolute path not allowed: {value}")
    if "\0" in value:
        raise ValueError(f"a path with a NUL character is not allowed: {value!r}")
    try:
        resolved = (manifest_dir / value).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise ValueError(f"path cannot be resolved ({e}): {value}") from None
    root = Path(media_root or os.getcwd()).resolve()
    if not (resolved.is_relative_to(manifest_dir.resolve()) or resolved.is_relative_to(root)):
        raise ValueError(f"path escapes the manifest folder and the media root {root}: {value}")
    return resolved


def text_too_long(text: str, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """The reason a post's text is over the text limit (``text_too_long: ...``), or None."""
    if len(text) > max_chars:
        return f"text_too_long: {len(text):,} characters, over the limit of {max_chars:,}"
    return None


def scoring_problem(post: dict, manifest_dir: Path, media_root: Path | None = None,
                    max_text_chars: int = MAX_TEXT_CHARS) -> str | None:
    """Check a post to score against the text limit and the path rule, before anything is read or decoded.

    Media paths that pass are made absolute (in place); every field with a problem is removed, so that nothing
    outside the allowed folders is opened or written out, and the problems are returned (``; ``-joined). A
    problem names the path as given, never whether a file is there.
    """
    problems = []
    text = post.get("text")
    if text is not None and not isinstance(text, str):
        problems.append("invalid_schema: 'text' must be a string")
    elif text_too_long(text or "", max_text_chars):
        problems.append(text_too_long(text, max_text_chars))
    if problems:
        post.pop("text")
    for key in ("image", "video"):
        value = post.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            post.pop(key)
            problems.append(f"invalid_schema: '{key}' must be a path string")
            continue
        try:
            post[key] = str(resolve_media(manifest_dir, value, media_root))
        except ValueError as e:
            post.pop(key)
            problems.append(f"{key}: {e}")
    return "; ".join(problems) or None


def unix_time(value) -> int | float:
    """A date as a Unix time: a number, a numeric string or an ISO 8601 string (UTC unless it says otherwise).

    Whole seconds come back as an ``int``; anything else raises a ``ValueError``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a Unix time or an ISO date")
    try:
        t = float(value)
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a Unix time or an ISO date (e.g. 1716768000 or 2024-05-27)") from None
        t = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    if t != t or t in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a Unix time or an ISO date")
    return int(t) if t.is_integer() else t


def post_from_record(record: dict, root: Path | None = None) -> Post:
    """Build a :class:`Post`; media paths are resolved against ``root`` without checks."""
    meta = {k: v for k, v in record.items() if k not in CORE_FIELDS}

    def media(key: str) -> str | None:
        value = record.get(key)
        if value in (None, ""):
            return None
        return str((root / value).resolve()) if root is not None else str(value)

    return Post(id=str(record["id"]), text=record.get("text") or "", image=media("image"),
                video=media("video"), label=record.get("label"), meta=meta)


def load_posts(path: str | Path) -> list[Post]:
    """Load an already validated posts file (``data/posts.jsonl``) with absolute media paths."""
    path = Path(path)
    root = path.parent
    return [post_from_record(line.record, root) for line in iter_manifest(path) if line.record is not None]
