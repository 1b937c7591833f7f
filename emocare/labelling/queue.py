"""What to ask next: the posts in the order a strategy picks them.

* ``uncertainty``: the most uncertain first, by the predictive entropy of the current models' calibrated
  probabilities, scored up front by :func:`emocare.bulk.predict_manifest` (the machinery of
  ``emocare predict``) into ``<labels file>.scores.jsonl``, which a rerun with the same models and posts reuses;
* ``random``: a random order;
* ``mixed`` (the default): each pick is random with probability ``random_share``, else the most uncertain
  left, so that the random picks form an unbiased sample for evaluation.

Every pick records its strategy and score (the entropy; None without models).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from emocare.io import read_json, read_jsonl, write_json

STRATEGIES = ("mixed", "uncertainty", "random")
NEEDS_MODELS = ("--strategy {strategy} ranks posts with the current models: give --models (a trained bundle; default "
                "models/), or use --strategy random")


def entropy(probs: dict[str, float]) -> float:
    """The predictive entropy (nats) of one post's class probabilities."""
    return -sum(p * math.log(p) for p in probs.values() if p > 0)


def uncertainty_scores(posts_path: Path, models_dir: Path, labels_path: Path) -> dict[str, float]:
    """Each post id's predictive entropy under the models in ``models_dir`` (a post that can't be scored: 0)."""
    from emocare.bulk import predict_manifest, run_fingerprint

    out = labels_path.with_name(labels_path.name + ".scores.jsonl")
    stamp = out.with_name(out.name + ".stamp.json")
    wanted = run_fingerprint(posts_path, models_dir, {})
    if not (out.is_file() and stamp.is_file() and read_json(stamp) == wanted):
        predict_manifest(models_dir, posts_path, out, workers=0)  # resumable: a killed scoring run continues
        write_json(stamp, wanted)
    return {r["id"]: entropy(r["probabilities"]) if r.get("probabilities") else 0.0 for r in read_jsonl(out)}


def order(ids: list[str], strategy: str, scores: dict[str, float] | None, random_share: float = 0.2,
          seed: int = 0) -> list[tuple[str, str, float | None]]:
    """Every id once, as ``(id, strategy that picked it, score)`` in asking order.

    ``mixed`` decides up front, by a coin per post, which posts form the random sample, so that sample is
    uniform over all posts (not over what uncertainty left); the two streams are interleaved."""
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if not 0 <= random_share <= 1:
        raise ValueError(f"--random-share must be between 0 and 1, not {random_share}")
    if strategy != "random" and scores is None:
        raise ValueError(NEEDS_MODELS.format(strategy=strategy))
    rng = random.Random(seed)

    def score(i: str) -> float | None:
        return None if scores is None else round(scores.get(i, 0.0), 6)

    shuffled = list(ids)
    rng.shuffle(shuffled)
    if strategy == "random":
        return [(i, "random", score(i)) for i in shuffled]
    ranked = sorted(ids, key=lambda i: -scores.get(i, 0.0))
    if strategy == "uncertainty":
        return [(i, "uncertainty", score(i)) for i in ranked]
    sample = {i for i in ids if rng.random() < random_share}
    picks_random = iter(i for i in shuffled if i in sample)
    picks_ranked = iter(i for i in ranked if i not in sample)
    out = []
    for _ in ids:  # each slot: the random stream with probability random_share while both have posts left
        use_random = rng.random() < random_share
        i = next(picks_random, None) if use_random else next(picks_ranked, None)
        if i is None:
            use_random = not use_random
            i = next(picks_random if use_random else picks_ranked)
        out.append((i, "random" if use_random else "uncertainty", score(i)))
    return out
