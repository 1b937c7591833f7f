"""Stratified, leakage-free train/val/test split, dataset statistics and class weights."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from emocare.data.manifest import Post
from emocare.io import read_json
from emocare.labels import LabelSet, combo_name

SPLITS = ("train", "val", "test")


class TooFewLabels(ValueError):
    """Too few labelled posts, in total or in some class, to train and check a model."""


def check_label_counts(posts: list[Post], classes: LabelSet, min_total: int, min_per_class: int) -> Counter:
    """The labelled posts per class; :class:`TooFewLabels` giving the counts, the minimums and the ways out when
    there are fewer than ``min_total`` in all or ``min_per_class`` in some class (``split.min_labels``,
    ``split.min_per_class``: README, "Learning from few labels", for how their defaults were chosen)."""
    counts = Counter(p.label for p in posts if p.label is not None)
    short = [c for c in classes if counts[c] < min_per_class]
    total = sum(counts.values())
    if total >= min_total and not short:
        return counts
    lines = [f"too few labels to learn from: {total} labelled posts (the minimum is {min_total} in all and "
             f"{min_per_class} per class); no model was trained or replaced.", "labelled posts per class:"]
    lines += [f"  {c}: {counts[c]}{'  <- below ' + str(min_per_class) if c in short else ''}" for c in classes]
    need = max(min_total - total, sum(min_per_class - counts[c] for c in short))
    lines.append(f"What to do: label at least {need} more posts"
                 + (" (" + ", ".join(f"{min_per_class - counts[c]} more of {c}" for c in short) + " among them),"
                    " or drop or merge the short classes in params.yaml `labels` (their posts then need "
                    "relabelling or removing)" if short else "") + "; then run `dvc repro` again.")
    raise TooFewLabels("\n".join(lines))


def _file_digest(path: str | None) -> str:
    if path is None:
        return "-"
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_key(post: Post) -> str:
    """Same normalised text and same media bytes give the same key."""
    text = " ".join(post.text.lower().split())
    return hashlib.sha1("\x00".join([text, _file_digest(post.image), _file_digest(post.video)]).encode()).hexdigest()


def stratified_split(posts: list[Post], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each labelled post id to a split; unlabelled posts are set aside (no split).

    Strata are label x modality combination; posts with identical content form one group that
    goes to one split. Groups are shuffled within each stratum (seeded) and laid end to end,
    stratum after stratum; each group then goes to the split furthest below its running target
    share. Every stratum and every split thus gets within about one post of its target.
    """
    total = sum(fractions[s] for s in SPLITS)
    share = {s: fractions[s] / total for s in SPLITS}
    groups: dict[str, list[Post]] = defaultdict(list)
    for post in posts:
        if post.label is not None:
            groups[content_key(post)].append(post)
    strata: dict[str, list[list[Post]]] = defaultdict(list)
    for members in groups.values():
        first = members[0]
        strata[f"{first.label}|{combo_name(first.modalities)}"].append(members)
    rng = np.random.default_rng(seed)
    assigned: dict[str, str] = {}
    counts = dict.fromkeys(SPLITS, 0)
    placed = 0
    for key in sorted(strata):
        stratum = sorted(strata[key], key=lambda g: g[0].id)
        for i in rng.permutation(len(stratum)):
            group = stratum[i]
            placed += len(group)
            split = max(SPLITS, key=lambda s: (share[s] * placed - counts[s], share[s]))
            counts[split] += len(group)
            for post in group:
                assigned[post.id] = split
    return assigned


def class_weights(labels: list[str], classes: LabelSet) -> list[float]:
    """Balanced weights N / (K * n_c) in ``classes`` order (0 for a class absent from ``labels``)."""
    counts = Counter(labels)
    n, k = len(labels), len(classes)
    return [n / (k * counts[c]) if counts[c] else 0.0 for c in classes]


def dataset_stats(posts: list[Post], assignment: dict[str, str], classes: LabelSet) -> dict:
    """Totals per split, class and modality distributions, and the training class weights.

    Statistics cover the labelled posts; ``unlabelled_set_aside`` counts the others.
    """
    unlabelled = sum(p.label is None for p in posts)
    posts = [p for p in posts if p.label is not None]
    by_split: dict[str, list[Post]] = {s: [p for p in posts if assignment[p.id] == s] for s in SPLITS}
    n = len(posts)

    def dist(items: list[str], keys: list[str]) -> dict:
        c = Counter(items)
        return {k: {"count": c[k], "share": round(c[k] / len(items), 4) if items else 0.0} for k in keys}

    combos = ["text+image", "text+video", "text", "image", "video", "image+video", "text+image+video"]
    seen_combos = [c for c in combos if any(combo_name(p.modalities) == c for p in posts)]
    train_labels = [p.label for p in by_split["train"]]
    return {
        "total": n,
        "unlabelled_set_aside": unlabelled,
        "splits": {s: {"count": len(v), "share": round(len(v) / n, 4) if n else 0.0} for s, v in by_split.items()},
        "classes": dist([p.label for p in posts], list(classes)),
        "modalities": dist([combo_name(p.modalities) for p in posts], seen_combos),
        "by_split": {s: {"classes": {c: sum(p.label == c for p in v) for c in classes},
                         "modalities": {m: sum(combo_name(p.modalities) == m for p in v) for m in seen_combos}}
                     for s, v in by_split.items()},
        "class_weights": dict(zip(classes, (round(w, 4) for w in class_weights(train_labels, classes)), strict=True)),
    }


def stats_markdown(stats: dict, classes: LabelSet) -> str:
    """The dataset statistics as a Markdown page."""
    lines = ["# Dataset statistics", "", f"Labelled posts: {stats['total']}; unlabelled posts set aside: "
             f"{stats.get('unlabelled_set_aside', 0)}", "",
             "| split | posts | share |", "|---|---:|---:|"]
    lines += [f"| {s} | {v['count']} | {v['share']:.1%} |" for s, v in stats["splits"].items()]
    lines += ["", "| class | posts | share | train weight |", "|---|---:|---:|---:|"]
    lines += [f"| {classes.display[c]} | {v['count']} | {v['share']:.1%} | {stats['class_weights'][c]:.4f} |"
              for c, v in stats["classes"].items()]
    lines += ["", "| modalities | posts | share |", "|---|---:|---:|"]
    lines += [f"| {m} | {v['count']} | {v['share']:.1%} |" for m, v in stats["modalities"].items()]
    return "\n".join(lines) + "\n"


def read_split(path: str | Path) -> dict[str, str]:
    """Read ``data/split.json`` into an id -> split mapping."""
    return {pid: s for s, ids in read_json(path).items() for pid in ids}
