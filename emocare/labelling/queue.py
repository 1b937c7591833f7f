"""What to ask next: the posts in the order a strategy picks them.

The live strategies (:data:`LIVE`) rank by the page's live model (:mod:`emocare.labelling.live`), retrained
in the background as decisions arrive, never by a bundle:

* the first :data:`START` posts are random (the live model knows nothing yet);
* a coin per post sets ``random_share`` of the posts aside as the evaluation sample, asked in random order
  and interleaved so that, from the first post on, that share of the asked posts are from it (:func:`interleave`);
* the others come in the strategy's order (:func:`rank`): ``balanced`` random posts, one predicted class after
  another, the class with the fewest labels first; ``margin`` (the default, :data:`DEFAULT`) and ``entropy``
  the live model's least sure first; ``balanced-margin`` the least sure within each predicted class;
  ``random`` random.

The bundle-scored strategies (used only on request):

* ``uncertainty``: the most uncertain first, by the predictive entropy of the current models' calibrated
  probabilities, scored up front by :func:`emocare.bulk.predict_manifest` (the machinery of
  ``emocare predict``) into ``<labels file>.scores.jsonl``, which a rerun with the same models and posts reuses;
* ``mixed``: each pick is random with probability ``random_share``, else the most uncertain
  left, so that the random picks form an unbiased sample for evaluation.

Every pick records its strategy and score (the entropy, or the live model's margin; None without a model).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from emocare.io import read_json, read_jsonl, write_json

LIVE = ("balanced", "margin", "entropy", "balanced-margin", "random")
BUNDLE = ("mixed", "uncertainty")
STRATEGIES = LIVE + BUNDLE
DEFAULT = "margin"  # chosen by benchmarks/active_learning.py on MELD, GoEmotions, TweetEval, CM-Off-Meme (README)
START = 50  # random posts before the live model ranks: fewer labels make a ranking no better than chance
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


def margins(probs: np.ndarray) -> np.ndarray:
    """Top probability minus the second: small = unsure."""
    top2 = np.sort(probs, 1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def rank(strategy: str, probs: np.ndarray, labelled_per_class: np.ndarray, k: int,
         rng: np.random.Generator) -> np.ndarray:
    """The next ``k`` picks as row indices of ``probs`` (the live model's probabilities of the candidate posts).

    ``balanced`` and ``balanced-margin`` take one post at a time from the predicted class with the fewest
    labels so far (``labelled_per_class``, counting this batch's picks by their predicted class)."""
    if strategy not in LIVE:
        raise ValueError(f"a live strategy is one of {', '.join(LIVE)}, not {strategy!r}")
    k = min(k, len(probs))
    if strategy == "random":
        return rng.permutation(len(probs))[:k]
    if strategy in ("margin", "entropy"):
        unsure = -margins(probs) if strategy == "margin" else -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1)
        return np.argsort(-unsure, kind="stable")[:k]
    pred = probs.argmax(1)
    within = rng.permutation(len(probs)) if strategy == "balanced" else np.argsort(margins(probs), kind="stable")
    queues = [list(within[pred[within] == c]) for c in range(probs.shape[1])]
    counts = np.asarray(labelled_per_class, dtype=float).copy()
    out: list[int] = []
    while len(out) < k:
        open_ = [c for c in range(len(queues)) if queues[c]]
        c = min(open_, key=lambda c: (counts[c], rng.random()))
        out.append(queues[c].pop(0))
        counts[c] += 1
    return np.asarray(out, dtype=int)


def interleave(sample: Iterable, others: Iterable, sample_done: int, others_done: int,
               share: float) -> Iterator[tuple]:
    """``(item, from_sample)`` in asking order, lazily: the next slot goes to the evaluation sample while fewer
    than ``share`` of the posts asked so far (this one included) came from it, so the share holds from the
    first post; when one stream runs out, the other goes on."""
    s, o = iter(sample), iter(others)
    n_s, n_o = sample_done, others_done
    while True:
        from_sample = n_s < share * (n_s + n_o + 1)
        item = next(s if from_sample else o, None)
        if item is None:
            from_sample = not from_sample
            item = next(s if from_sample else o, None)
            if item is None:
                return
        yield item, from_sample
        n_s, n_o = n_s + from_sample, n_o + (not from_sample)
