"""Converter from CSV/TSV files into the post manifest (Reddit post objects: :mod:`emocare.reddit`)."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

from emocare.io import write_jsonl
from emocare.labels import DEFAULT, LabelSet


def import_csv(path: str | Path, out: str | Path, text_col: str, label_col: str | None,
               label_map: dict[str, str] | None = None, id_col: str | None = None,
               image_col: str | None = None, video_col: str | None = None, labels: LabelSet = DEFAULT) -> dict:
    """Convert a CSV or TSV file into a manifest; returns a summary with counts per label.

    Rows whose label is not one of ``labels`` (after ``label_map``) keep their raw label, so that
    validation checks it against the pipeline's classes (quarantined with a reason, never lost here).
    Media paths are written relative to the output manifest's folder.
    """
    path, out = Path(path), Path(out)
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = f.readline()
        f.seek(0)
        delimiter = "\t" if header.count("\t") > header.count(",") else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = [c for c in (text_col, label_col, id_col, image_col, video_col)
                   if c and c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: column(s) {missing} not found; columns are {reader.fieldnames}")
        records, counts = [], Counter()
        for row_no, row in enumerate(reader, start=1):
            rec: dict = {"id": row[id_col] if id_col else f"{path.stem}-{row_no}", "text": row[text_col] or ""}
            if label_col:
                raw = row[label_col]
                rec["label"] = labels.normalise(raw, label_map) or raw
                counts[rec["label"]] += 1
            for key, col in (("image", image_col), ("video", video_col)):
                if col and row[col]:
                    rec[key] = os.path.relpath((path.parent / row[col]).resolve(), out.parent.resolve())
            rec.update({k: v for k, v in row.items() if k not in {text_col, label_col, id_col, image_col, video_col}})
            records.append(rec)
    write_jsonl(out, records)
    return {"rows": len(records), "labels": dict(counts.most_common())}
