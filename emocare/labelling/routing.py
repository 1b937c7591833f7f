"""Who labels what, in a team: each post goes to one annotator, except an overlap share that up to ``k``
annotators label independently (what agreement is measured on). A post handed out is leased to its annotator
and handed to nobody else while the lease runs (``lease_s``) or until it comes back (labelled, skipped, or
the annotator moved on), so no work is done twice.

The overlap posts are a seeded random sample of the posts (the same at every restart), so agreement is
measured on posts like the rest. Leases live in memory: a restart frees them, which costs nothing but a post
shown again. One server routes a team; routing state comes from the labels store at start and is kept as
decisions are written.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable

OVERLAP = 0.1
K = 3
LEASE_S = 600.0


class Router:
    """The routing of ``ids`` among annotators: which post each is asked next."""

    def __init__(self, ids: list[str], standing: Iterable[tuple[str, str]], overlap: float = OVERLAP, k: int = K,
                 lease_s: float = LEASE_S, seed: int = 0, clock: Callable[[], float] = time.monotonic):
        if not 0 <= overlap <= 1:
            raise ValueError(f"--overlap must be between 0 and 1, not {overlap}")
        if k < 2:
            raise ValueError(f"--k (annotators per overlap post) must be at least 2, not {k}")
        if lease_s <= 0:
            raise ValueError(f"--lease must be positive, not {lease_s}")
        self.k, self.lease_s, self.clock = k, lease_s, clock
        self.overlap = set(random.Random(seed).sample(sorted(ids), round(overlap * len(ids))))
        self.taken: dict[str, set[str]] = {}  # post -> annotators with a standing decision on it
        self.lock = threading.Lock()
        self.reset(standing)
        self.leases: dict[str, dict[str, float]] = {}  # post -> annotator -> when the lease ends
        self.held: dict[str, str] = {}  # annotator -> the post leased to them

    def reset(self, standing: Iterable[tuple[str, str]]) -> None:
        """Who has labelled what: every (annotator, post) with a standing decision."""
        taken: dict[str, set[str]] = {}
        for who, pid in standing:
            taken.setdefault(pid, set()).add(who)
        with self.lock:
            self.taken = taken

    def capacity(self, pid: str) -> int:
        """How many annotators label ``pid``."""
        return self.k if pid in self.overlap else 1

    def _free_for(self, who: str, pid: str, now: float) -> bool:
        done = self.taken.get(pid, ())
        if who in done or len(done) >= self.capacity(pid):  # the common case, decided without the leases
            return False
        holders = sum(1 for a, until in self.leases.get(pid, {}).items() if until > now and a != who and a not in done)
        return len(done) + holders < self.capacity(pid)

    def closed_to(self, who: str) -> set[str]:
        """The posts ``who`` may not be handed now: labelled by them, by as many as they need, or held by others."""
        with self.lock:
            now = self.clock()
            return {p for p in {*self.taken, *self.leases} if not self._free_for(who, p, now)}

    def next_for(self, who: str, asked: Iterable[str], skipped: set[str] | frozenset = frozenset()) -> str | None:
        """Lease ``who`` the first post of ``asked`` (the asking order) that is theirs to label: one no other
        annotator holds, not yet labelled by as many as it needs; their lease on any other post ends."""
        with self.lock:
            now = self.clock()
            pid = next((p for p in asked if p not in skipped and self._free_for(who, p, now)), None)
            self._release(who)
            if pid is not None:
                self.leases.setdefault(pid, {})[who] = now + self.lease_s
                self.held[who] = pid
            return pid

    def _release(self, who: str) -> None:
        pid = self.held.pop(who, None)
        if pid is not None:
            self.leases.get(pid, {}).pop(who, None)

    def release(self, who: str) -> None:
        """``who`` gives their post back (skipped it, or left)."""
        with self.lock:
            self._release(who)

    def decided(self, who: str, pid: str) -> None:
        with self.lock:
            self.taken.setdefault(pid, set()).add(who)
            if self.held.get(who) == pid:
                self._release(who)

    def undone(self, who: str, pid: str) -> None:
        with self.lock:
            self.taken.get(pid, set()).discard(who)

    def progress(self) -> dict:
        """Posts done (labelled by as many annotators as they need), overlap posts, and leases held now."""
        with self.lock:
            now = self.clock()
            done = sum(1 for p, who in self.taken.items() if len(who) >= self.capacity(p))
            return {"overlap_posts": len(self.overlap), "k": self.k, "posts_done": done,
                    "leased": {a: p for a, p in self.held.items() if self.leases.get(p, {}).get(a, 0) > now}}
