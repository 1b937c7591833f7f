"""How much annotators agree: counts, Cohen's kappa per pair, Fleiss' kappa, and the posts they disagree on."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np

from emocare.labelling.decisions import current


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
    """Fleiss' kappa over posts each rated by the same number (at least 2) of annotators."""
    if not ratings:
        return None
    counts = np.array([[r.count(c) for c in classes] for r in ratings], dtype=float)
    raters = counts.sum(1)[0]
    p_class = counts.sum(0) / counts.sum()
    p_post = ((counts**2).sum(1) - raters) / (raters * (raters - 1))
    expected = float((p_class**2).sum())
    return None if expected == 1 else float((p_post.mean() - expected) / (1 - expected))


def stats(records: list[dict], classes: list[str]) -> dict:
    """Counts per class and annotator, pairwise Cohen's kappa with a confusion table, Fleiss' kappa over the posts
    every annotator labelled, and the posts with more than one standing label."""
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
    everyone = [list(v.values()) for v in by_post.values() if len(v) == len(annotators)]
    undos = sum(1 for r in records if r.get("undo"))
    return {"decisions": len(records) - undos, "undos": undos, "posts": len(by_post),
            "per_class": {c: sum(1 for r in standing.values() if r["label"] == c) for c in classes},
            "per_annotator": {who: {"posts": sum(1 for w, _ in standing if w == who),
                                    "per_class": dict(Counter(r["label"] for (w, _), r in standing.items()
                                                              if w == who))} for who in annotators},
            "pairs": pairs,
            "fleiss_kappa": fleiss_kappa(everyone, classes) if len(annotators) > 1 else None,
            "fleiss_posts": len(everyone) if len(annotators) > 1 else 0,
            "disagreements": [{"id": p, "labels": v} for p, v in sorted(by_post.items()) if len(set(v.values())) > 1]}


def _share(a: list[str], b: list[str]) -> float | None:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else None
