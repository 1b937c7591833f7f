"""Where a team's decisions live, chosen by measurement: SQLite in WAL mode (`emocare.labelling.store`, what
`emocare label` uses for a `.db`) against an indexed append log (the labels file, fsynced per line, with an
in-memory index of standing decisions that each writer brings up to date from the file's new bytes under the
file lock before its already-labelled check). Prints JSON.

``--annotators`` writer threads (one per annotator, as the server's threads) each write their share of
``--decisions`` decisions on distinct posts as fast as they can (``saturated``), each one durable (fsynced)
before the next, the already-labelled check made under the lock; then ``--paced`` more, each after a pause
(``paced_after``: a team at work on a store that holds the first ones). Per decision latency: p50, p99, max;
the p99 of the first and of the last tenth (constant time: the last tenth no slower than the first); and
``open_ms``, what a server's start costs: every standing decision read back from the store.

    python benchmarks/label_store.py [--decisions 50000] [--annotators 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from emocare.labelling.store import AlreadyLabelled, LabelStore


class IndexedLog:
    """The append-log candidate: JSON lines, flock + fsync per decision, an index caught up from the file's tail."""

    def __init__(self, path: Path):
        self.path, self.offset, self.standing = path, 0, set()
        self.lock = threading.Lock()
        path.touch()

    def _catch_up(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        for line in os.pread(fd, size - self.offset, self.offset).splitlines():  # other writers' lines
            r = json.loads(line)
            self.standing.add((r["annotator"], r["id"]))
        self.offset = size

    def catch_up(self) -> set:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            self._catch_up(fd)
        finally:
            os.close(fd)
        return self.standing

    def decide(self, record: dict) -> dict:
        with self.lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._catch_up(fd)
                key = (record["annotator"], record["id"])
                if key in self.standing:
                    raise AlreadyLabelled(key)
                line = (json.dumps({**record, "time": round(time.time(), 3)}) + "\n").encode()
                os.write(fd, line)
                os.fsync(fd)
                self.offset += len(line)
                self.standing.add(key)
            finally:
                os.close(fd)
        return record


def run(store, decisions: int, annotators: int, think_ms: float = 0, tag: str = "p") -> dict:
    """Every annotator thread writes its share, after a pause of ``think_ms`` on average (exponential; 0: none,
    the store saturated); latencies in ms, in write order per thread."""
    per = decisions // annotators
    lat = np.zeros((annotators, per))

    def work(a: int) -> None:
        rng = np.random.default_rng(a)
        for i in range(per):
            if think_ms:
                time.sleep(rng.exponential(think_ms / 1000))
            t = time.perf_counter()
            store.decide({"id": f"{tag}{a}-{i}", "label": "joy", "annotator": f"a{a}", "strategy": "random",
                          "score": None})
            lat[a, i] = (time.perf_counter() - t) * 1000

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(a,)) for a in range(annotators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    tenth = max(1, per // 10)
    return {"decisions": per * annotators, "wall_s": round(wall, 1), "per_s": round(per * annotators / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(lat.max()), 1),
            "p99_first_tenth_ms": round(float(np.percentile(lat[:, :tenth], 99)), 2),
            "p99_last_tenth_ms": round(float(np.percentile(lat[:, -tenth:], 99)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decisions", type=int, default=50_000)
    ap.add_argument("--annotators", type=int, default=5)
    ap.add_argument("--paced", type=int, default=2000, help="decisions written afterwards at --think-ms")
    ap.add_argument("--think-ms", type=float, default=100.0, help="mean pause before each paced decision (a fast "
                    "annotator takes 2,000)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each candidate, alternating")
    ap.add_argument("--workdir", help="where the files go (default: a temporary folder); the disk matters")
    a = ap.parse_args()
    out = {"annotators": a.annotators, "think_ms": a.think_ms, "sqlite_wal": [], "indexed_log": []}
    for _ in range(a.repeats):
        with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
            for name, opener, path in (("sqlite_wal", LabelStore, Path(tmp) / "labels.db"),
                                       ("indexed_log", IndexedLog, Path(tmp) / "labels.jsonl")):
                store = opener(path)
                result = {"saturated": run(store, a.decisions, a.annotators),
                          "paced_after": run(store, a.paced, a.annotators, a.think_ms, tag="q")}
                started = time.perf_counter()  # a server's start: every standing decision, from the store
                if name == "sqlite_wal":
                    store.close()
                    n = len(LabelStore(path).standing())
                else:
                    n = len(opener(path).catch_up())
                result["open_ms"] = round((time.perf_counter() - started) * 1000, 1)
                result["open_decisions"] = n
                out[name].append(result)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
