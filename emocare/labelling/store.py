"""The team's labels database: every decision in SQLite (WAL mode, ``synchronous=FULL``), so that a team's
server writes a decision in constant time, several servers or threads may write at once, and a decision
acknowledged is on disk (the WAL is fsynced at each commit) when a ``kill -9`` or a power cut follows.

Chosen by measurement against an indexed append log (``benchmarks/label_store.py``; figures in the README).
It keeps the labels file's model: an append-only list of records (``decisions``; the same JSON objects a
labels file holds, so :func:`~emocare.labelling.decisions.current`, ``label export`` and the Label Studio
formats read both), plus what a server asks at every request, kept as the records are written:

* ``standing``: each (annotator, post)'s standing decision, so "already labelled?" is one indexed lookup,
  made inside the same write transaction as the insert (two tabs or two servers cannot both label a post);
* ``annotators``: the team, each with the token of their link (an admin's role is ``admin``).

A path ending ``.db``/``.sqlite`` is a database (:func:`open_labels`); any other is a labels file, which
:meth:`LabelStore.import_log` copies in.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from emocare.labelling.decisions import AlreadyLabelled, LabelLog, current

DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
ROLES = ("annotator", "admin")
CHECKPOINT_S = 1.0
NAME = re.compile(r"[A-Za-z0-9._-]+")
SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, annotator TEXT NOT NULL,
                                      record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_key ON decisions (annotator, id);
CREATE TABLE IF NOT EXISTS standing (annotator TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
                                     label TEXT NOT NULL, PRIMARY KEY (annotator, id));
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
                                       added REAL NOT NULL);
"""


class LabelStore:
    """The labels database (shared by a server's threads, and by several processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection, its use serialised by a lock: writes serialise anyway (one SQLite writer at a time)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at each commit: acknowledged is durable
        # the WAL is copied into the database by a thread of its own (:meth:`_checkpoints`), not by the decision
        # that happens to fill it: measured, that halved a decision's median time under load
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(SCHEMA)  # idempotent
        self._closed = threading.Event()
        self._checkpointer: threading.Thread | None = None

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._db.close()

    def _checkpoints(self) -> None:
        """Every ``CHECKPOINT_S``, copy what the WAL holds into the database (``PASSIVE``: writers never wait)."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            while not self._closed.wait(CHECKPOINT_S):
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (``BEGIN IMMEDIATE``): checks made inside it see every other
        writer's committed decisions and no other writer can slip in between check and insert."""
        with self._lock:
            if self._checkpointer is None:  # the first write starts it: a store only read needs none
                self._checkpointer = threading.Thread(target=self._checkpoints, daemon=True, name="label-checkpoints")
                self._checkpointer.start()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self) -> list[dict]:
        """Every record, in the order written (what a labels file's lines are)."""
        with self._lock:
            return [json.loads(r) for (r,) in self._db.execute("SELECT record FROM decisions ORDER BY seq")]

    def append(self, record: dict, at: float | None = None) -> dict:
        """Write ``record`` with its ``time`` (now, or ``at``), durably; returns it as written."""
        return self.append_many([(record, at)])[0]

    def append_many(self, items: Iterable[tuple[dict, float | None]]) -> list[dict]:
        """Write several records in one transaction (one fsync): imports."""
        with self._write() as db:
            return [self._insert(db, rec, at) for rec, at in items]

    def decide(self, record: dict) -> dict:
        """Write an annotator's decision unless they already have one standing on the post
        (:class:`AlreadyLabelled`); the check and the insert are one transaction."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM standing WHERE annotator = ? AND id = ?",
                          (_who(record), record["id"])).fetchone():
                raise AlreadyLabelled(f"post {record['id']!r} is already labelled by {record.get('annotator')}")
            return self._insert(db, record, None)

    def undo_last(self, annotator: str, ids: set[str] | dict) -> str | None:
        """Take back ``annotator``'s latest standing decision on one of ``ids``; returns its post id (None: none)."""
        with self._write() as db:
            rows = db.execute("SELECT id FROM standing WHERE annotator = ? ORDER BY seq DESC", (annotator,))
            pid = next((pid for (pid,) in rows if pid in ids), None)
            if pid is not None:
                self._insert(db, {"id": pid, "annotator": annotator, "undo": True}, None)
            return pid

    def _insert(self, db: sqlite3.Connection, record: dict, at: float | None) -> dict:
        if not isinstance(record.get("id"), str):
            raise ValueError(f"a decision needs a post id (a string), not {record.get('id')!r}")
        record = {**record, "time": round(time.time() if at is None else at, 3)}
        who = _who(record)
        db.execute("INSERT INTO decisions (id, annotator, record) VALUES (?, ?, ?)",
                   (record["id"], who, json.dumps(record)))
        if record.get("undo"):  # replay this key's records: an undo uncovers an earlier decision, as in a labels file
            rows = db.execute("SELECT seq, record FROM decisions WHERE annotator = ? AND id = ? ORDER BY seq",
                              (who, record["id"])).fetchall()
            now = current([json.loads(r) for _, r in rows]).get((record.get("annotator"), record["id"]))
            db.execute("DELETE FROM standing WHERE annotator = ? AND id = ?", (who, record["id"]))
            if now is not None:  # current's seq counts this key's rows
                db.execute("INSERT INTO standing VALUES (?, ?, ?, ?)", (who, record["id"], rows[now["seq"]][0],
                                                                         now["label"]))
        elif not record.get("adjudication"):  # a reviewer's adjudication is not a decision of theirs
            db.execute("INSERT OR REPLACE INTO standing VALUES (?, ?, last_insert_rowid(), ?)",
                       (who, record["id"], record["label"]))
        return record

    def standing(self) -> dict[tuple[str, str], str]:
        """Every (annotator, post id)'s standing label (adjudications left out)."""
        with self._lock:
            return {(a, pid): label for a, pid, label in self._db.execute("SELECT annotator, id, label FROM standing")}

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM decisions").fetchone()[0]

    def import_log(self, path: str | Path) -> int:
        """Copy a labels file's records in (their times kept), in one transaction; returns how many."""
        records = LabelLog(path).read()
        self.append_many((r, r.get("time")) for r in records)
        return len(records)

    def add_annotator(self, name: str, role: str = "annotator") -> str:
        """Add ``name`` to the team (or return their token when they are in it already)."""
        self.check_member(name, role)
        with self._write() as db:
            row = db.execute("SELECT token, role FROM annotators WHERE name = ?", (name,)).fetchone()
            if row:
                if row[1] != role:
                    raise ValueError(f"{name!r} is already in the team as {row[1]}")
                return row[0]
            token = secrets.token_urlsafe(16)
            db.execute("INSERT INTO annotators VALUES (?, ?, ?, ?)", (name, token, role, time.time()))
            return token

    @staticmethod
    def check_member(name: str, role: str) -> tuple[str, str]:
        """``(name, role)`` when both are acceptable, else a ``ValueError`` saying why."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if not isinstance(name, str) or not 0 < len(name) <= 64 or not NAME.fullmatch(name):
            raise ValueError(f"a name is 1-64 ASCII letters, digits, '-', '_' or '.', not {name!r}")
        return name, role

    def team(self) -> dict[str, dict]:
        """Each member's ``{"token", "role", "added"}``, by name."""
        with self._lock:
            rows = self._db.execute("SELECT name, token, role, added FROM annotators ORDER BY added")
            return {n: {"token": t, "role": r, "added": a} for n, t, r, a in rows}


def _who(record: dict) -> str:
    return str(record.get("annotator") or "")


def open_labels(path: str | Path) -> LabelStore | LabelLog:
    """The labels at ``path``: a database (``.db``, ``.sqlite``) or a labels file (JSON lines)."""
    return LabelStore(path) if Path(path).suffix in DB_SUFFIXES else LabelLog(path)
