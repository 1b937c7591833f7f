"""A reviewer's queue: (a) the posts annotators disagree on (the overlap) and (b) likely label errors, labelled
posts whose label a model that never trained on them finds improbable.

(b) is confident learning (Northcutt et al., 2021) as cleanlab implements it (``find_label_issues``), on
out-of-fold probabilities: a logistic regression on frozen sentence embeddings (all-MiniLM-L6-v2, mean-pooled,
the offline text backbone), fitted ``folds`` times, each time scoring the posts it left out. Measured on real
data with 10 % of the labels flipped (``benchmarks/label_review.py``; figures in the README).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from emocare.labelling.decisions import adjudications, current

FOLDS = 5
MIN_PER_CLASS = FOLDS  # a class with fewer labelled posts cannot be scored out of fold: its posts are not checked


def likely_errors(labels: list[str], features: np.ndarray, folds: int = FOLDS, seed: int = 0) -> list[dict]:
    """The posts (by index into ``labels``) whose label looks wrong, most likely first:
    ``{"index", "label", "label_probability", "model_label"}``. Classes with fewer than ``folds`` posts are
    left out (their posts are not checked); fewer than two classes left: nothing to check."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = Counter(labels)
    kept = sorted(c for c, n in counts.items() if n >= max(folds, 2))
    if len(kept) < 2:
        return []
    rows = np.array([i for i, c in enumerate(labels) if c in kept])
    y = np.array([kept.index(labels[i]) for i in rows])
    probs = cross_val_predict(LogisticRegression(max_iter=1000), features[rows], y,
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    return [{"index": int(rows[j]), "label": kept[y[j]], "label_probability": round(float(probs[j, y[j]]), 4),
             "model_label": kept[int(probs[j].argmax())]} for j in ranked]


def text_features(texts: list[str], batch: int = 64) -> np.ndarray:
    """Frozen MiniLM sentence embeddings (mean-pooled, L2-normalised), offline, one row per text."""
    import torch

    from emocare.models.text import MINILM, load_text_backbone

    model, tokenizer = load_text_backbone(MINILM)
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            enc = tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


def queue(records: list[dict], texts: dict[str, str], embed: Callable[[list[str]], np.ndarray] = text_features,
          limit: int = 200) -> dict:
    """The review queue over the labels ``records`` (posts' ``texts`` by id): disagreements first, then likely
    errors, each with every annotator's decision; posts a reviewer settled are left out. Likely errors are
    judged on each post's majority label (its single label, for most)."""
    settled = adjudications(records)
    by_post: dict[str, dict[str, str]] = {}
    for (who, pid), r in current(records).items():
        if pid in texts:
            by_post.setdefault(pid, {})[who] = r["label"]
    items = [{"id": pid, "reason": "disagreement", "decisions": v, "text": texts[pid]}
             for pid, v in sorted(by_post.items()) if len(set(v.values())) > 1 and pid not in settled]
    ids = [pid for pid in sorted(by_post) if pid not in settled and len(set(by_post[pid].values())) == 1]
    checked = 0
    if ids:
        found = likely_errors([next(iter(by_post[p].values())) for p in ids], embed([texts[p] for p in ids]))
        checked = len(ids)
        items += [{"id": ids[e["index"]], "reason": "likely error", "decisions": by_post[ids[e["index"]]],
                   "text": texts[ids[e["index"]]], "label_probability": e["label_probability"],
                   "model_label": e["model_label"]} for e in found]
    return {"items": items[:limit], "disagreements": sum(i["reason"] == "disagreement" for i in items),
            "likely_errors": sum(i["reason"] == "likely error" for i in items), "checked": checked,
            "adjudicated": len(settled)}
