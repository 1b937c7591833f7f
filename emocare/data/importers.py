"""Converters from third-party formats (CSV/TSV, Reddit post objects) into the post manifest."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

from emocare.io import write_jsonl
from emocare.labels import normalise_label

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi")


def import_csv(path: str | Path, out: str | Path, text_col: str, label_col: str | None,
               label_map: dict[str, str] | None = None, id_col: str | None = None,
               image_col: str | None = None, video_col: str | None = None) -> dict:
    """Convert a CSV or TSV file into a manifest; returns a summary with counts per label.

    Rows whose label is not one of the five classes (after ``label_map``) keep their raw
    label, so that validation quarantines them with a reason rather than losing them here.
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
        records, labels = [], Counter()
        for row_no, row in enumerate(reader, start=1):
            rec: dict = {"id": row[id_col] if id_col else f"{path.stem}-{row_no}", "text": row[text_col] or ""}
            if label_col:
                raw = row[label_col]
                rec["label"] = normalise_label(raw, label_map) or raw
                labels[rec["label"]] += 1
            for key, col in (("image", image_col), ("video", video_col)):
                if col and row[col]:
                    rec[key] = os.path.relpath((path.parent / row[col]).resolve(), out.parent.resolve())
            rec.update({k: v for k, v in row.items() if k not in {text_col, label_col, id_col, image_col, video_col}})
            records.append(rec)
    write_jsonl(out, records)
    return {"rows": len(records), "labels": dict(labels.most_common())}


def _find_media(media_dir: Path, post_id: str, exts: tuple[str, ...]) -> Path | None:
    for ext in exts:
        candidate = media_dir / f"{post_id}{ext}"
        if candidate.is_file():
            return candidate
    return None


def reddit_record(post: dict, media_dir: Path, out_dir: Path) -> tuple[dict, str]:
    """Convert one Reddit post object; returns the record and its media status.

    Status is ``video``, ``image``, ``text`` (a self post) or ``media_missing`` (the post links
    media that is not on disk in ``media_dir``; it becomes text-only).
    """
    title, body = post.get("title") or "", post.get("selftext") or ""
    if body in ("[removed]", "[deleted]"):
        body = ""
    rec = {"id": str(post["id"]), "text": f"{title}\n\n{body}".strip()}
    for key in ("subreddit", "created_utc", "author", "url"):
        if post.get(key) is not None:
            rec[key] = post[key]
    if post.get("link_flair_text"):
        rec["label"] = post["link_flair_text"]
    is_video = bool(post.get("is_video")) or post.get("post_hint") in ("hosted:video", "rich:video") \
        or bool((post.get("media") or {}).get("reddit_video"))
    url = str(post.get("url") or "").lower()
    is_image = post.get("post_hint") == "image" or bool((post.get("preview") or {}).get("images")) \
        or url.endswith(IMAGE_EXTS)
    video = _find_media(media_dir, rec["id"], VIDEO_EXTS)
    image = _find_media(media_dir, rec["id"], IMAGE_EXTS)
    if video is not None:
        rec["video"] = os.path.relpath(video.resolve(), out_dir.resolve())
        return rec, "video"
    if image is not None:
        rec["image"] = os.path.relpath(image.resolve(), out_dir.resolve())
        return rec, "image"
    return rec, "media_missing" if (is_video or is_image) else "text"


def import_reddit(path: str | Path, media_dir: str | Path, out: str | Path) -> dict:
    """Convert Reddit API / Pushshift post objects (JSON Lines or a JSON list) into a manifest.

    Media already on disk in ``media_dir`` are linked by post id (``<id>.png``, ``<id>.mp4``...).
    """
    path, media_dir, out = Path(path), Path(media_dir), Path(out)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        posts = json.loads(text)
    else:
        posts = [json.loads(line) for line in text.splitlines() if line.strip()]
    posts = [p.get("data", p) for p in posts]  # API listings wrap each post as {"kind": "t3", "data": ...}
    records, status = [], Counter()
    for post in posts:
        rec, s = reddit_record(post, media_dir, out.parent)
        records.append(rec)
        status[s] += 1
    write_jsonl(out, records)
    return {"posts": len(records), "with_video": status["video"], "with_image": status["image"],
            "text_only": status["text"], "media_missing_text_only": status["media_missing"]}
