"""``emocare label export``: the labelled posts only, as a manifest that ``emocare validate`` keeps whole.

Each post is its line of the posts file with ``label`` set (a reviewer's adjudication, else resolved across
annotators, :func:`~emocare.labelling.decisions.resolve`), its media paths rewritten relative to the new
manifest's folder, and ``label_votes``, ``label_random`` (the post was a random pick: an unbiased sample) and
``label_adjudicated`` beside. The labels are a labels file or a labels database.
"""

from __future__ import annotations

import os
from pathlib import Path

from emocare.data.manifest import iter_manifest, resolve_media
from emocare.io import write_jsonl
from emocare.labelling.decisions import resolve
from emocare.labelling.store import open_labels
from emocare.labels import LabelSet


def export(labels_path: str | Path, posts_path: str | Path, out: str | Path, classes: LabelSet,
           how: str = "majority") -> dict:
    """Write the manifest ``out``; returns counts (labelled posts, written, random picks, per class)."""
    labels_path, posts_path, out = Path(labels_path), Path(posts_path), Path(out)
    resolved = resolve(open_labels(labels_path).read(), how)
    unknown = sorted({r["label"] for r in resolved.values()} - set(classes.names))
    if unknown:
        raise ValueError(f"{labels_path}: labels {unknown} are not among the classes {list(classes.names)}")
    records, seen = [], set()
    for line in iter_manifest(posts_path):
        rec = line.record
        if rec is None:
            raise ValueError(f"{posts_path}: {line.error}")
        pid = str(rec.get("id"))
        if pid not in resolved:
            continue
        seen.add(pid)
        rec = {**rec, "label": resolved[pid]["label"], "label_votes": resolved[pid]["votes"],
               "label_random": resolved[pid]["random"], "label_adjudicated": resolved[pid]["adjudicated"]}
        for key in ("image", "video"):
            if rec.get(key):
                if not isinstance(rec[key], str):
                    raise ValueError(f"{posts_path}: post {pid!r}: {key} must be a path string, not {rec[key]!r:.80}")
                if os.path.isabs(rec[key]):
                    raise ValueError(f"{posts_path}: post {pid!r}: absolute {key} path {rec[key]} (validate it first)")
                # not resolved: a linked media folder stays linked
                rec[key] = os.path.relpath(os.path.abspath(posts_path.parent / rec[key]), os.path.abspath(out.parent))
                try:
                    resolve_media(out.parent, rec[key])  # the rule `emocare validate` applies to the export
                except ValueError as e:
                    raise ValueError(f"post {pid!r}: {e}: write the manifest inside your project (the working "
                                     "directory) or beside the posts") from None
        records.append(rec)
    missing = sorted(set(resolved) - seen)
    if missing:
        raise ValueError(f"{labels_path}: {len(missing)} labelled post(s) are not in {posts_path}, e.g. "
                         f"{missing[:3]}: is this the posts file they were labelled from?")
    write_jsonl(out, records)
    per_class = {c: sum(r["label"] == c for r in records) for c in classes.names}
    return {"labelled": len(resolved), "written": len(records), "random": sum(r["label_random"] for r in records),
            "adjudicated": sum(r["label_adjudicated"] for r in records),
            "per_class": per_class, "out": str(out)}
