"""`emocare fetch-media`: download each post's image or video so that `import reddit` can link it.

One httpx client shared by a bounded pool of worker threads; a per-host rate limit; connect
and read timeouts; retries with exponential backoff on 429, 5xx and network errors, honouring
``Retry-After``. A file is kept only when its bytes are the media expected (an HTML error page
served as ``image/jpeg`` is rejected) and decode fully; it is written under a temporary name
and renamed to ``<post id>.<ext>`` (gallery extras ``<post id>-2.<ext>``...). Every post's
outcome goes to ``DIR/fetch-log.jsonl``; a post whose media could not be fetched stays a
text-only post.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

from emocare.io import FILE_MODE, jsonl_writer
from emocare.media.image import check_image
from emocare.media.sniff import HEAD_BYTES, sniff
from emocare.media.video import check_video
from emocare.progress import progress_bar
from emocare.reddit.config import FetchConfig
from emocare.reddit.posts import PostFilter, find_media, iter_posts, media_urls
from emocare.reddit.read import ReadLimits

FETCHED = ("ok", "present")  # outcomes that leave a valid file on disk


class HostRateLimiter:
    """Spaces requests to the same host at least ``1 / rate`` seconds apart, across threads."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, 0.0))
            self._next[host] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _check(path: Path, kind: str) -> str | None:
    return check_image(path) if kind == "image" else check_video(path)


def _keep(tmp: Path, media_dir: Path, stem: str, kind: str) -> tuple[str, str, str | None]:
    """Judge a downloaded file by its bytes and decode it; rename it into place when it is valid."""
    with open(tmp, "rb") as f:
        found = sniff(f.read(HEAD_BYTES))
    if found is None or found[0] != kind:
        what = f"a {found[0]} ({found[1]})" if found else "not an image or video"
        return "not_media", f"expected {kind}, the content is {what}", None
    problem = _check(tmp, kind)
    if problem:
        return "corrupt", problem, None
    final = media_dir / f"{stem}.{found[1]}"
    os.replace(tmp, final)
    return "ok", "", final.name


class Fetcher:
    """Downloads media files with retries, limits and content checks (thread-safe)."""

    def __init__(self, media_dir: str | Path, cfg: FetchConfig):
        self.media_dir, self.cfg = Path(media_dir), cfg
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.limiter = HostRateLimiter(cfg.per_host_rps)
        self.client = httpx.Client(
            timeout=httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s), follow_redirects=True,
            headers={"User-Agent": cfg.user_agent},
            limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency))

    def close(self) -> None:
        self.client.close()

    def download(self, url: str, stem: str, kind: str) -> dict:
        """Fetch one URL into ``<stem>.<ext>``; returns ``{"url", "outcome", "detail", "file"}``."""
        existing = find_media(self.media_dir, stem)
        if existing is not None and existing[0] == kind and _check(existing[1], kind) is None:
            return {"url": url, "outcome": "present", "detail": "", "file": existing[1].name}
        host = urlparse(url).netloc
        detail = ""
        for attempt in range(self.cfg.retries + 1):
            self.limiter.wait(host)
            try:
                outcome, detail, name, wait_s = self._attempt(url, stem, kind)
            except httpx.TimeoutException as e:
                outcome, detail, name, wait_s = "retry", f"timed out ({type(e).__name__})", None, None
            except httpx.TransportError as e:
                outcome, detail, name, wait_s = "retry", f"network error: {e}", None, None
            if outcome != "retry":
                return {"url": url, "outcome": outcome, "detail": detail, "file": name}
            if attempt < self.cfg.retries:
                backoff = self.cfg.backoff_s * 2**attempt
                time.sleep(min(self.cfg.max_backoff_s, wait_s if wait_s is not None else backoff))
        return {"url": url, "outcome": "gave_up", "detail": f"{detail} after {self.cfg.retries + 1} attempts",
                "file": None}

    def _attempt(self, url: str, stem: str, kind: str) -> tuple[str, str, str | None, float | None]:
        """One GET: (outcome or "retry", detail, file name, seconds the server asked us to wait)."""
        with self.client.stream("GET", url) as r:
            code = r.status_code
            if code == 429 or code >= 500:
                return "retry", f"HTTP {code}", None, retry_after(r.headers.get("retry-after"))
            if code in (404, 410):
                return "not_found", f"HTTP {code}", None, None
            if code >= 400:
                return "http_error", f"HTTP {code}", None, None
            length = r.headers.get("content-length", "")
            if length.isdigit() and int(length) > self.cfg.max_bytes:
                return "too_large", f"Content-Length {int(length)} bytes > {self.cfg.max_bytes}", None, None
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=self.media_dir)
            try:
                size = 0
                with os.fdopen(fd, "wb") as f:
                    for chunk in r.iter_bytes(1 << 16):
                        size += len(chunk)
                        if size > self.cfg.max_bytes:
                            return "too_large", f"over {self.cfg.max_bytes} bytes (no or wrong Content-Length)", \
                                None, None
                        f.write(chunk)
                os.chmod(tmp, FILE_MODE)
                return (*_keep(Path(tmp), self.media_dir, stem, kind), None)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def fetch_post(self, post: dict) -> dict:
        """Every media file of one post; the post's outcome is its first (primary) file's."""
        kind, urls = media_urls(post, self.cfg.all_gallery)
        entry: dict = {"id": str(post["id"]), "kind": kind}
        if not urls:
            return {**entry, "outcome": "no_media"}
        items = [self.download(url, str(post["id"]) if i == 0 else f"{post['id']}-{i + 1}", kind)
                 for i, url in enumerate(urls)]
        entry.update(outcome=items[0]["outcome"], url=items[0]["url"], detail=items[0]["detail"],
                     file=items[0]["file"])
        if len(items) > 1:
            entry["gallery"] = items
        return entry


def fetch_media(paths: Iterable[str | Path], media_dir: str | Path, cfg: FetchConfig | None = None,
                post_filter: PostFilter | None = None, limit: int | None = None,
                limits: ReadLimits | None = None) -> dict:
    """Download the media of every post read from ``paths``; write ``fetch-log.jsonl``; return counts.

    Counts add up: posts = with_media + no_media + malformed, and with_media = fetched + failed.
    """
    cfg, media_dir = cfg or FetchConfig(), Path(media_dir)
    counts: Counter = Counter()
    outcomes: Counter = Counter()
    fetcher = Fetcher(media_dir, cfg)
    with ExitStack() as stack, ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="fetch") as pool, \
            progress_bar(desc="fetch-media", unit=" posts", smoothing=0.1) as bar:
        stack.callback(fetcher.close)
        log = jsonl_writer(stack, media_dir / "fetch-log.jsonl")
        malformed = jsonl_writer(stack, media_dir / "fetch-malformed.jsonl")
        pending: set[Future] = set()

        def drain(block_until: int) -> None:
            nonlocal pending
            while len(pending) > block_until:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    entry = fut.result()
                    log(entry)
                    outcomes[entry["outcome"]] += 1
                    bar.update()
                    bar.set_postfix(ok=outcomes["ok"] + outcomes["present"],
                                    failed=sum(v for k, v in outcomes.items() if k not in (*FETCHED, "no_media")))

        for post in iter_posts(paths, post_filter or PostFilter(), limit, counts, malformed, "read", limits):
            pending.add(pool.submit(fetcher.fetch_post, post))
            drain(cfg.concurrency * 4)  # bounded: a dump of any size holds a few dozen posts in memory
        drain(0)
    if not counts["malformed"]:
        (media_dir / "fetch-malformed.jsonl").unlink()
    with_media = sum(v for k, v in outcomes.items() if k != "no_media")
    fetched = sum(outcomes[k] for k in FETCHED)
    summary = {"posts": sum(outcomes.values()), "with_media": with_media, "no_media": outcomes["no_media"],
               "fetched": fetched, "failed": with_media - fetched, "malformed": counts["malformed"],
               "filtered": sum(v for k, v in counts.items() if k.startswith("filtered_")),
               "outcomes": dict(sorted(outcomes.items())), "log": str(media_dir / "fetch-log.jsonl")}
    assert summary["with_media"] == summary["fetched"] + summary["failed"]
    return summary
