"""Reddit post objects -> manifest records: filters, media URLs, labels only from the user, streaming import.

Flair is community metadata (``flair``), never a label: a label comes only from an explicit
``label_field``. Every object read is counted once: read = imported + filtered + malformed.
"""

from __future__ import annotations

import html
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from emocare.data.manifest import resolve_media, unix_time
from emocare.io import jsonl_writer
from emocare.labels import DEFAULT, LabelSet
from emocare.progress import progress_bar
from emocare.reddit.read import ReadLimits, TruncatedInput, iter_objects

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi")
IMAGE_HOSTS = ("i.redd.it", "i.imgur.com")
META_FIELDS = ("subreddit", "created_utc", "author", "url", "permalink", "score", "num_comments")
REMOVED_TEXT = ("[removed]", "[deleted]")


@dataclass
class PostFilter:
    """Which posts to keep: subreddits (case-insensitive), a date window [after, before), removed posts."""

    subreddits: list[str] = field(default_factory=list)
    after: float | None = None
    before: float | None = None
    skip_removed: bool = False

    def __post_init__(self) -> None:
        self._subs = {s.lower().removeprefix("r/") for s in self.subreddits}

    def reason(self, post: dict) -> str | None:
        """``None`` when the post passes, else the name of the filter that rejects it."""
        if self._subs and str(post.get("subreddit", "")).lower() not in self._subs:
            return "subreddit"
        if self.after is not None or self.before is not None:
            if post.get("created_utc") is None:
                return "no_date"
            t = unix_time(post["created_utc"])  # checked by _problem before any filter
            if (self.after is not None and t < self.after) or (self.before is not None and t >= self.before):
                return "date"
        if self.skip_removed and is_removed(post):
            return "removed"
        return None


def is_removed(post: dict) -> bool:
    """Removed by moderators or Reddit, or deleted by its author."""
    return bool(post.get("removed_by_category")) or post.get("selftext") in REMOVED_TEXT \
        or post.get("author") == "[deleted]"


def _source(post: dict) -> dict:
    """The post whose media a crosspost shows (the crosspost parent), else the post itself."""
    parents = post.get("crosspost_parent_list") or []
    return parents[0] if parents and isinstance(parents[0], dict) else post


def _reddit_video(post: dict) -> str | None:
    for key in ("media", "secure_media"):
        video = ((post.get(key) or {}).get("reddit_video") or {}).get("fallback_url")
        if video:
            return html.unescape(video)
    return None


def media_urls(post: dict, all_gallery: bool = False) -> tuple[str | None, list[str]]:
    """(``image`` | ``video`` | ``None``, URLs) of a post's media, most direct source first.

    Reddit-hosted videos (``media``/``secure_media``, also through ``crosspost_parent_list``),
    GIF posts (``preview.reddit_video_preview``), galleries (first image, or all), direct image
    links (i.redd.it, i.imgur.com, an image extension; imgur ``.gifv`` as its MP4), then the
    preview image (HTML-unescaped) as the fallback.
    """
    for candidate in (post, _source(post)):
        video = _reddit_video(candidate)
        if video:
            return "video", [video]
    src = _source(post)
    preview = src.get("preview") or {}
    gif = (preview.get("reddit_video_preview") or {}).get("fallback_url")
    if gif:
        return "video", [html.unescape(gif)]
    if src.get("is_gallery") and src.get("gallery_data"):
        meta = src.get("media_metadata") or {}
        urls = []
        for item in src["gallery_data"].get("items", []):
            s = (meta.get(item.get("media_id")) or {}).get("s") or {}
            url = s.get("u") or s.get("gif")
            if url:
                urls.append(html.unescape(url))
        if urls:
            return "image", urls if all_gallery else urls[:1]
    url = html.unescape(str(src.get("url_overridden_by_dest") or src.get("url") or ""))
    parsed = urlparse(url)
    path = parsed.path.lower()
    if parsed.netloc == "i.imgur.com" and path.endswith(".gifv"):
        return "video", [url[: -len(".gifv")] + ".mp4"]
    if path.endswith(VIDEO_EXTS):
        return "video", [url]
    if parsed.netloc in IMAGE_HOSTS or path.endswith(IMAGE_EXTS):
        return "image", [url]
    images = preview.get("images") or []
    fallback = ((images[0] if images else {}).get("source") or {}).get("url")
    if fallback:
        return "image", [html.unescape(fallback)]
    return None, []


def find_media(media_dir: Path, post_id: str) -> tuple[str, Path] | None:
    """The file `fetch-media` wrote for a post (``<id>.<ext>``): ("video" | "image", path) or None."""
    for kind, exts in (("video", VIDEO_EXTS), ("image", IMAGE_EXTS)):
        for ext in exts:
            candidate = media_dir / f"{post_id}{ext}"
            if candidate.is_file():
                return kind, candidate
    return None


def to_record(post: dict, media_dir: Path | None, out_dir: Path, label_field: str | None = None,
              label_map: dict[str, str] | None = None, labels: LabelSet = DEFAULT) -> tuple[dict, str]:
    """One post object -> (manifest record, media status).

    Status: ``video`` or ``image`` (linked from ``media_dir``), ``text`` (no media),
    ``media_missing`` (the post has media that is not on disk; it stays a text-only post).
    A label is set only from ``label_field``; a value outside ``labels`` (after ``label_map``) is
    kept raw so that validation quarantines it with a reason.
    """
    # Reddit's API and dumps HTML-escape text (&amp; &lt; &gt;), as they do URLs: the model reads it plain
    title, body = html.unescape(post.get("title") or ""), html.unescape(post.get("selftext") or "")
    if body in REMOVED_TEXT:
        body = ""
    rec: dict = {"id": str(post["id"]), "text": f"{title}\n\n{body}".strip()}
    if label_field and post.get(label_field) not in (None, ""):
        raw = post[label_field]
        rec["label"] = labels.normalise(raw, label_map) or raw
    for key in META_FIELDS:
        if post.get(key) is not None:
            rec[key] = post[key]
    if "created_utc" in rec:  # dumps carry numbers, numeric strings or ISO dates; the manifest holds a Unix time
        rec["created_utc"] = unix_time(rec["created_utc"])
    if post.get("link_flair_text"):
        rec["flair"] = html.unescape(post["link_flair_text"])
    kind, _ = media_urls(post)
    found = find_media(media_dir, rec["id"]) if media_dir is not None else None
    if found is not None:
        rec[found[0]] = os.path.relpath(found[1].resolve(), out_dir.resolve())
        return rec, found[0]
    return rec, "media_missing" if kind else "text"


def _problem(post: dict) -> str | None:
    post_id = post.get("id")
    if not isinstance(post_id, str | int) or isinstance(post_id, bool) or str(post_id).strip() == "":
        return "not_a_post: no 'id'"
    if "title" not in post and "selftext" not in post:
        return f"not_a_post: post {post_id}: no 'title' or 'selftext' (a comment, not a post?)"
    if post.get("created_utc") is not None:
        try:
            unix_time(post["created_utc"])
        except ValueError as e:
            return f"bad_date: post {post_id}: 'created_utc' {e}"
    for key in ("title", "selftext", "link_flair_text"):
        if post.get(key) is not None and not isinstance(post[key], str):
            return f"bad_field: post {post_id}: '{key}' must be a string, not {type(post[key]).__name__}"
    try:  # the media fields are nested objects of Reddit's shape; a dump with other shapes there is malformed
        media_urls(post)
    except (AttributeError, TypeError, IndexError, KeyError) as e:
        return f"bad_media_fields: post {post_id}: its media fields are not of Reddit's shape ({e})"
    return None


def iter_posts(paths: Iterable[str | Path], post_filter: PostFilter, limit: int | None, counts: Counter,
               on_malformed: Callable[[dict], None], desc: str = "read",
               limits: ReadLimits | None = None) -> Iterator[dict]:
    """Stream the posts that pass ``post_filter`` (at most ``limit``), counting every object read.

    ``counts`` gains ``read``, ``malformed``, ``malformed_<code>`` and ``filtered_<reason>``; each
    malformed object is passed to ``on_malformed`` as ``{"file", "line", "error"}``. A dump that
    ends early raises :class:`TruncatedInput` unless ``limits.allow_truncated``, where its cut-off
    line counts as malformed.
    """
    limits = limits or ReadLimits()
    kept = 0
    with progress_bar(desc=desc, unit=" posts", smoothing=0.1, mininterval=0.5) as bar:
        for path in paths:
            for item in iter_objects(path, limits.max_line_bytes):
                if limit is not None and kept >= limit:
                    return
                if item.error and item.error.startswith("truncated:") and not limits.allow_truncated:
                    raise TruncatedInput(f"{item.error.removeprefix('truncated: ')}; stopped there "
                                         "(--allow-truncated keeps the posts read before the cut)")
                counts["read"] += 1
                bar.update()
                problem = item.error or _problem(item.obj)
                if problem:
                    counts["malformed"] += 1
                    counts[f"malformed_{problem.partition(':')[0]}"] += 1
                    on_malformed({"file": str(path), "line": item.line_no, "error": problem})
                    continue
                reason = post_filter.reason(item.obj)
                if reason:
                    counts[f"filtered_{reason}"] += 1
                    continue
                kept += 1
                yield item.obj


def import_reddit(paths: list[str | Path], out: str | Path, media_dir: str | Path | None = None,
                  post_filter: PostFilter | None = None, limit: int | None = None, label_field: str | None = None,
                  label_map: dict[str, str] | None = None, save_posts: str | Path | None = None,
                  limits: ReadLimits | None = None, labels: LabelSet = DEFAULT) -> dict:
    """Stream Reddit post objects into a manifest; returns counts per outcome.

    ``save_posts`` also writes the raw objects that passed the filters (JSON Lines), so that
    `fetch-media` and a second import read that small file instead of the whole dump. Malformed
    objects are listed in ``<out>.malformed.jsonl`` with their file and line number.
    """
    out = Path(out)
    media = Path(media_dir) if media_dir is not None else None
    if media is not None:
        try:  # the manifest's path rule, checked once for the folder every media path will point into
            resolve_media(out.parent, os.path.relpath(media.resolve(), out.parent.resolve()))
        except ValueError:
            raise ValueError(f"--media-dir {media} is outside the manifest's folder ({out.parent}) and the working "
                             "directory, so validate would reject its paths: run from a folder that holds both, "
                             "or write the manifest beside the media") from None
    counts: Counter = Counter()
    malformed_path = out.with_name(out.name + ".malformed.jsonl")
    first_malformed: list[dict] = []
    started = time.perf_counter()
    with ExitStack() as stack:
        write_record = jsonl_writer(stack, out)
        write_post = jsonl_writer(stack, save_posts) if save_posts else None
        write_malformed = jsonl_writer(stack, malformed_path)

        def on_malformed(rec: dict) -> None:
            write_malformed(rec)
            if len(first_malformed) < 3:
                first_malformed.append(rec)

        for post in iter_posts(paths, post_filter or PostFilter(), limit, counts, on_malformed, "import", limits):
            rec, status = to_record(post, media, out.parent, label_field, label_map, labels)
            counts["imported"] += 1
            counts[f"media_{status}"] += 1
            if label_field:
                counts["labelled" if "label" in rec else "unlabelled"] += 1
            write_record(rec)
            if write_post:
                write_post(post)
    if not counts["malformed"]:
        malformed_path.unlink()
    elapsed = time.perf_counter() - started
    filtered = {k.removeprefix("filtered_"): v for k, v in sorted(counts.items()) if k.startswith("filtered_")}
    malformed_by = {k.removeprefix("malformed_"): v for k, v in sorted(counts.items()) if k.startswith("malformed_")}
    summary = {"read": counts["read"], "imported": counts["imported"], "filtered": sum(filtered.values()),
               "malformed": counts["malformed"], "filtered_by": filtered, "malformed_by": malformed_by,
               "media": {"video": counts["media_video"], "image": counts["media_image"],
                         "text_only": counts["media_text"], "media_missing_text_only": counts["media_media_missing"]},
               "posts_per_s": round(counts["read"] / elapsed, 1) if elapsed > 0 else None}
    if label_field:
        summary["labels"] = {"labelled": counts["labelled"], "unlabelled": counts["unlabelled"]}
    if counts["malformed"]:
        summary["malformed_log"] = str(malformed_path)
        summary["malformed_first"] = first_malformed
    assert summary["read"] == summary["imported"] + summary["filtered"] + summary["malformed"]
    return summary
