"""The Reddit subcommands of `emocare`: ``import reddit`` and ``fetch-media``."""

from __future__ import annotations

import argparse

from emocare.io import MAX_LINE_BYTES, MB
from emocare.reddit.config import FetchConfig


def _add_input_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("posts", nargs="+", help="post objects: .jsonl, .json (list or API listing) or .zst dumps")
    s.add_argument("--subreddit", action="append", default=[], help="keep only this subreddit (repeatable)")
    s.add_argument("--after", help="keep posts created at or after this date (UTC), e.g. 2024-05-01")
    s.add_argument("--before", help="keep posts created before this date (UTC)")
    s.add_argument("--skip-removed", action="store_true", help="drop removed or deleted posts")
    s.add_argument("--limit", type=int, help="stop after this many posts pass the filters")
    s.add_argument("--max-line-mb", type=float, default=MAX_LINE_BYTES / MB,
                   help="longer lines are counted as malformed (too_long), never held whole")
    s.add_argument("--allow-truncated", action="store_true",
                   help="a dump that ends early keeps the posts read before the cut (default: an error)")


def _filter(a: argparse.Namespace):
    from emocare.data.manifest import unix_time
    from emocare.reddit.posts import PostFilter

    return PostFilter(a.subreddit, unix_time(a.after) if a.after else None,
                      unix_time(a.before) if a.before else None, a.skip_removed)


def _limits(a: argparse.Namespace):
    from emocare.reddit.read import ReadLimits

    return ReadLimits(max_line_bytes=int(a.max_line_mb * MB), allow_truncated=a.allow_truncated)


def cmd_import_reddit(a: argparse.Namespace) -> dict:
    from emocare.labels import parse_label_map
    from emocare.params import project_labels
    from emocare.reddit.posts import import_reddit

    if a.label_map and not a.label_field:
        raise ValueError("--label-map needs --label-field: labels come only from a field you name")
    return import_reddit(a.posts, a.out, a.media_dir, _filter(a), a.limit, a.label_field,
                         parse_label_map(a.label_map), a.save_posts, _limits(a), project_labels(a.labels))


def cmd_fetch_media(a: argparse.Namespace) -> dict:
    from emocare.reddit.fetch import fetch_media

    cfg = FetchConfig(concurrency=a.concurrency, per_host_rps=a.rate, max_bytes=int(a.max_mb * MB),
                      retries=a.retries, connect_timeout_s=a.connect_timeout, read_timeout_s=a.read_timeout,
                      user_agent=a.user_agent, all_gallery=a.all_gallery)
    return fetch_media(a.posts, a.media_dir, cfg, _filter(a), a.limit, _limits(a))


def register(sub, imp) -> None:
    """Add ``import reddit`` to the ``import`` subparsers and ``fetch-media`` to the top level."""
    d = FetchConfig()  # the defaults' one owner
    s = imp.add_parser("reddit", help="Reddit post objects (API JSON, JSON Lines, Pushshift/Arctic Shift .zst dumps)")
    _add_input_args(s)
    s.add_argument("-o", "--out", required=True, help="manifest to write")
    s.add_argument("--media-dir", help="folder where fetch-media wrote <post id>.<ext>; those files are linked")
    s.add_argument("--label-field", help="post field holding an emotion label (flair is never used unless named)")
    s.add_argument("--label-map", help="with --label-field: e.g. happy=joy,rage=anger")
    s.add_argument("--labels", help="the classes (default: params.yaml's labels, else the five)")
    s.add_argument("--save-posts", help="also write the raw post objects that passed the filters (JSON Lines)")
    s.set_defaults(func=cmd_import_reddit)

    s = sub.add_parser("fetch-media", help="download each post's image or video into --media-dir")
    _add_input_args(s)
    s.add_argument("--media-dir", required=True)
    s.add_argument("--concurrency", type=int, default=d.concurrency, help="parallel downloads")
    s.add_argument("--rate", type=float, default=d.per_host_rps, help="requests per second per host")
    s.add_argument("--max-mb", type=float, default=d.max_bytes / MB, help="largest file to keep")
    s.add_argument("--retries", type=int, default=d.retries, help="retries on 429, 5xx and network errors")
    s.add_argument("--connect-timeout", type=float, default=d.connect_timeout_s)
    s.add_argument("--read-timeout", type=float, default=d.read_timeout_s)
    s.add_argument("--user-agent", default=d.user_agent)
    s.add_argument("--all-gallery", action="store_true", help="every gallery image, not only the first")
    s.set_defaults(func=cmd_fetch_media)
