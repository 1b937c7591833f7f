"""The labels file: every labelling decision, appended one JSON object a line and fsynced before it is
acknowledged, so that a killed server (or a lost machine) loses nothing it said it kept.

A decision is ``{"id", "label", "annotator", "strategy", "score", "time"}``; an undo is
``{"id", "annotator", "undo": true, "time"}`` and takes back that annotator's latest decision on the
post. Nothing is ever rewritten: what an annotator currently says is the log replayed
(:func:`current`), in file order, and a post's label across annotators is :func:`resolve`'s.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESOLVE = ("majority", "latest")


class LabelLog:
    """The append-only labels file (shared by the server's threads, and by several servers on one machine)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> list[dict]:
        """Every record so far, in file order. A last line without its newline (a write killed before it was
        acknowledged) is left out; any other line that is not a JSON object is an error naming it."""
        if not self.path.is_file():
            return []
        chunks = self.path.read_bytes().split(b"\n")
        out = []
        for n, raw in enumerate(chunks[:-1], 1):  # the last chunk has no newline: empty, or torn
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                record = None
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError(f"{self.path}: line {n} is not a decision (a JSON object with an id): {raw[:80]!r}")
            problem = _shape_problem(record)
            if problem:
                raise ValueError(f"{self.path}: line {n} is not a decision: {problem}")
            out.append(record)
        return out

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """The file open for appending, locked against this server's threads and other servers."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # another server appending to the same file waits
                _drop_torn_line(fd)
                yield fd
            finally:
                os.close(fd)

    def append(self, record: dict, at: float | None = None) -> dict:
        """Write ``record`` with its ``time`` (now, or ``at``) durably: on disk before this returns."""
        return self.append_all([(record, at)])[0]

    def append_all(self, records: list[tuple[dict, float | None]]) -> list[dict]:
        """Write each ``(record, at)`` as :meth:`append` does, with one write and one fsync for them all."""
        if not records:
            return []
        now = time.time()
        records = [{**record, "time": round(now if at is None else at, 3)} for record, at in records]
        with self._locked() as fd:
            _write_all(fd, records)
        return records

    def decide(self, record: dict) -> dict:
        """Write an annotator's decision unless they already have one standing on the post (:class:`AlreadyLabelled`),
        checked under the file lock. Reads the whole file: a team, or many decisions, want a database
        (:mod:`emocare.labelling.store`)."""
        with self._locked() as fd:
            if (record.get("annotator"), record["id"]) in current(self.read(), record.get("annotator")):
                raise AlreadyLabelled(f"post {record['id']!r} is already labelled by {record.get('annotator')}")
            return _write(fd, record, None)

    def undo_last(self, annotator: str, ids: set[str] | dict) -> str | None:
        """Take back ``annotator``'s latest standing decision on one of ``ids``; returns its post id (None: none)."""
        with self._locked() as fd:
            pid = last_undoable(self.read(), annotator, ids)
            if pid is not None:
                _write(fd, {"id": pid, "annotator": annotator, "undo": True}, None)
            return pid

    def standing(self) -> dict[tuple[str, str], str]:
        """Every (annotator, post id)'s standing label (adjudications left out)."""
        return {k: r["label"] for k, r in current(self.read()).items() if not r.get("adjudication")}


class AlreadyLabelled(ValueError):
    """The annotator already has a standing decision on the post."""


def _write(fd: int, record: dict, at: float | None) -> dict:
    record = {**record, "time": round(time.time() if at is None else at, 3)}
    _write_all(fd, [record])
    return record


def _write_all(fd: int, records: list[dict]) -> None:
    # ASCII: no character of a record can look like a newline
    data = "".join(json.dumps(record) + "\n" for record in records).encode()
    view = memoryview(data)
    while view:  # a large batch may take several writes
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _shape_problem(record: dict) -> str | None:
    """What makes a record of the labels file unusable (a decision needs a string id and label, an undo a string
    id; annotator and strategy are strings and time a number where given), or None."""
    if not isinstance(record["id"], str) or not record["id"]:
        return f"'id' must be a non-empty string, not {record['id']!r:.80}"
    if not record.get("undo") and not isinstance(record.get("label"), str):
        return f"post {record['id']!r:.80}: 'label' must be a string, not {record.get('label')!r:.80}"
    for key in ("annotator", "strategy"):
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"post {record['id']!r:.80}: '{key}' must be a string, not {record[key]!r:.80}"
    at = record.get("time")
    if at is not None and (isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at)):
        return f"post {record['id']!r:.80}: 'time' must be a Unix time, not {at!r:.80}"
    return None


def _drop_torn_line(fd: int) -> None:
    """Cut a last line without its newline: a write killed before it was acknowledged."""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
    if tail and not tail.endswith(b"\n"):
        os.ftruncate(fd, size - len(tail) + tail.rfind(b"\n") + 1)


def current(records: list[dict], annotator: str | None = None) -> dict[tuple[str, str], dict]:
    """The standing decision per (annotator, post id), undos applied, each with its position in the file
    (``seq``, what "latest" means); only ``annotator``'s when given. A reviewer's adjudications are not
    decisions (:func:`adjudications`)."""
    stacks: dict[tuple[str, str], list[dict]] = {}
    for seq, r in enumerate(records):
        if (annotator is not None and r.get("annotator") != annotator) or r.get("adjudication"):
            continue
        key = (r.get("annotator"), r["id"])
        if r.get("undo"):
            if stacks.get(key):
                stacks[key].pop()
        else:
            stacks.setdefault(key, []).append({**r, "seq": seq})
    return {k: v[-1] for k, v in stacks.items() if v}


def last_undoable(records: list[dict], annotator: str, ids: set[str] | dict | None = None) -> str | None:
    """The post id (among ``ids``, when given) of ``annotator``'s latest decision that still stands: what ``u``
    takes back."""
    standing = [r for (_, pid), r in current(records, annotator).items() if ids is None or pid in ids]
    return max(standing, key=lambda r: r["seq"])["id"] if standing else None


def adjudications(records: list[dict]) -> dict[str, dict]:
    """Per post id, a reviewer's latest adjudication (``{"id", "label", "annotator": reviewer, "adjudication":
    true}``): the label that settles a disagreement or a likely error."""
    return {r["id"]: r for r in records if r.get("adjudication")}


def resolve(records: list[dict], how: str = "majority") -> dict[str, dict]:
    """Per post id: ``{"label", "votes", "random", "adjudicated"}``. A reviewer's adjudication comes first; else
    ``majority`` takes the most frequent standing label (ties: the latest of the tied), ``latest`` the latest in
    the file; ``random`` says whether any decision on it was a random pick (an unbiased sample, for
    evaluation)."""
    if how not in RESOLVE:
        raise ValueError(f"--resolve must be one of {', '.join(RESOLVE)}, not {how!r}")
    by_post: dict[str, list[dict]] = {}
    for r in sorted(current(records).values(), key=lambda r: r["seq"]):
        by_post.setdefault(r["id"], []).append(r)
    out = {}
    for pid, rs in by_post.items():
        votes = Counter(r["label"] for r in rs)
        if how == "latest":
            label = rs[-1]["label"]
        else:
            top = max(votes.values())
            label = next(r["label"] for r in reversed(rs) if votes[r["label"]] == top)
        out[pid] = {"label": label, "votes": dict(votes), "random": any(r.get("strategy") == "random" for r in rs),
                    "adjudicated": False}
    for pid, r in adjudications(records).items():
        out[pid] = {**out.get(pid, {"votes": {}, "random": False}), "label": r["label"], "adjudicated": True}
    return out
