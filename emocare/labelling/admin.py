"""What the admin link shows: everyone's progress and pace, agreement on the overlap, and the review queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from emocare.labelling import review
from emocare.labelling.agreement import stats

if TYPE_CHECKING:
    from emocare.labelling.server import Session


def team_state(session: Session) -> dict:
    """Each member's link, posts labelled and pace; the posts done and leased; agreement (``label stats``)."""
    records = session.log.read()
    agreement = stats([r for r in records if r["id"] in session.posts], list(session.classes.names))
    members = [{"name": name, "role": role, "path": f"{'/admin' if role == 'admin' else '/'}?token={token}",
                "labelled": sum(1 for w, _ in session.labels if w == name),
                "skipped": len(session.skipped.get(name, ())),
                **{k: agreement["per_annotator"].get(name, {}).get(k) for k in ("per_hour", "active_hours", "last")}}
               for token, (name, role) in session.members.items()]
    return {"posts": len(session.posts), "routing": session.router.progress(), "members": members,
            "agreement": {k: agreement[k] for k in ("decisions", "undos", "adjudications", "pairs", "fleiss_kappa",
                                                    "fleiss_posts", "per_class")},
            "classes": list(session.classes.names)}


def review_queue(session: Session) -> dict:
    """The reviewer's queue (:func:`emocare.labelling.review.queue`), the posts' embeddings computed once each."""
    cache = session.features

    def embed(texts_of: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts_of) if t not in cache]
        if missing:
            cache.update(zip(missing, review.text_features(missing), strict=True))
        return np.stack([cache[t] for t in texts_of])

    records = [r for r in session.log.read() if r["id"] in session.posts]
    texts = {pid: session.posts[pid].get("text") or "" for pid in session.posts}
    return review.queue(records, texts, embed)
