"""How much annotators agree: counts, Cohen's kappa per pair, Fleiss' kappa, and the posts they disagree on."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np

from emocare.labelling.decisions import adjudications, current

IDLE_S = 300.0  # a longer gap between two decisions is a break, not labelling time


def cohen_kappa(a: list[str], b: list[str], classes: list[str]) -> float | None:
    """Cohen's kappa of two annotators' labels on the same posts (None when chance agreement is total)."""
    if not a:
        return None
    idx = {c: i for i, c in enumerate(classes)}
    table = np.zeros((len(classes), len(classes)))
    for x, y in zip(a, b, strict=True):
        table[idx[x], idx[y]] += 1
    n = table.sum()
    observed = np.trace(table) / n
    expected = float((table.sum(0) * table.sum(1)).sum() / n**2)
    return None if expected == 1 else float((observed - expected) / (1 - expected))


def fleiss_kappa(ratings: list[list[str]], classes: list[str]) -> float | None:
    """Fleiss' kappa over posts each rated by at least 2 annotators (not necessarily the same number: each
    post's agreement is over its own raters' pairs, the usual generalisation; equal numbers give Fleiss' own)."""
    ratings = [r for r in ratings if len(r) >= 2]
    if not ratings:
        return None
    counts = np.array([[r.count(c) for c in classes] for r in ratings], dtype=float)
    raters = counts.sum(1)
    p_class = counts.sum(0) / counts.sum()
    p_post = ((counts**2).sum(1) - raters) / (raters * (raters - 1))
    expected = float((p_class**2).sum())
    return None if expected == 1 else float((p_post.mean() - expected) / (1 - expected))


def stats(records: list[dict], classes: list[str]) -> dict:
    """Counts per class and annotator with their pace, pairwise Cohen's kappa with a confusion table, Fleiss' kappa
    over the posts two or more annotators labelled (the overlap), and the posts with more than one standing
    label (those a reviewer settled marked)."""
    standing = current(records)
    unknown = sorted({r["label"] for r in standing.values()} - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {classes}: pass the --models whose classes "
                         "were labelled")
    by_post: dict[str, dict[str, str]] = {}
    for (who, pid), r in standing.items():
        by_post.setdefault(pid, {})[who] = r["label"]
    annotators = sorted({who for who, _ in standing})
    pairs = []
    for a, b in combinations(annotators, 2):
        both = [p for p, v in by_post.items() if a in v and b in v]
        la, lb = [by_post[p][a] for p in both], [by_post[p][b] for p in both]
        confusion = Counter(zip(la, lb, strict=True))
        pairs.append({"annotators": [a, b], "posts": len(both), "agreement": _share(la, lb),
                      "cohen_kappa": cohen_kappa(la, lb, classes),
                      "confusion": [{a: x, b: y, "posts": n} for (x, y), n in sorted(confusion.items())]})
    overlap = [list(v.values()) for v in by_post.values() if len(v) > 1]
    undos = sum(1 for r in records if r.get("undo"))
    settled = adjudications(records)
    return {"decisions": sum(1 for r in records if not r.get("undo") and not r.get("adjudication")),
            "undos": undos, "adjudications": len(settled), "posts": len(by_post),
            "per_class": {c: sum(1 for r in standing.values() if r["label"] == c) for c in classes},
            "per_annotator": {who: {"posts": sum(1 for w, _ in standing if w == who),
                                    "per_class": dict(Counter(r["label"] for (w, _), r in standing.items()
                                                              if w == who)),
                                    **pace([r["time"] for r in records if r.get("annotator") == who and "time" in r
                                            and not r.get("undo") and not r.get("adjudication")])}
                              for who in annotators},
            "pairs": pairs,
            "fleiss_kappa": fleiss_kappa(overlap, classes), "fleiss_posts": len(overlap),
            "disagreements": [{"id": p, "labels": v, "adjudicated": settled[p]["label"] if p in settled else None}
                              for p, v in sorted(by_post.items()) if len(set(v.values())) > 1]}


def pace(times: list[float], idle_s: float = IDLE_S) -> dict:
    """Decisions per hour of labelling (each decision after the first takes the time since the one before; one
    after a gap over ``idle_s``, a break, is left out), the hours that makes, and the last decision's time."""
    times = sorted(times)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b - a <= idle_s]
    active = sum(gaps)
    return {"per_hour": round(3600 * len(gaps) / active, 1) if active > 0 else None,
            "active_hours": round(active / 3600, 3), "last": times[-1] if times else None}


def _share(a: list[str], b: list[str]) -> float | None:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else None
