"""`emocare import reddit` on a generated Pushshift-style dump: posts/s and peak memory.

Writes the same post objects twice as zstd NDJSON, once with the 2 GiB window that real
monthly dumps use and once with an 8 MiB window, then imports each, filtered to one subreddit,
in a fresh process pinned to one core, and reports throughput and peak RSS. Goals: >= 20,000
posts/s, peak RSS < 300 MB whatever the dump size.

Why two windows: a zstd decoder must keep the last window-size bytes of output for
back-references, so on a long-window dump its history buffer grows with the uncompressed size
up to 2 GiB, whatever reads it. The 8 MiB run shows the importer's own memory, which is flat;
the 2 GiB run shows what a real dump costs in total. Prints JSON.

    python benchmarks/reddit_import.py [--posts 200000] [--subreddits 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

SUBREDDITS = ["Brawlstars", "ClashRoyale", "gaming", "pics", "memes", "AskReddit", "funny", "videos", "aww",
              "Minecraft", "leagueoflegends", "FortNiteBR", "pokemon", "Overwatch", "DestinyTheGame", "GlobalOffensive",
              "apexlegends", "Genshin_Impact", "Eldenring", "Steam"]


def fake_post(i: int, rng: random.Random, subreddits: list[str]) -> dict:
    """A post object with the fields of a real dump line (about 1.2 KB of JSON)."""
    sub = subreddits[i % len(subreddits)]
    pid = f"{i:07x}"
    image = rng.random() < 0.5
    post = {
        "id": pid, "name": f"t3_{pid}", "subreddit": sub, "subreddit_id": "t5_2x1m5", "subreddit_type": "public",
        "title": " ".join(rng.choice(["new", "brawler", "update", "finally", "got", "Leon", "me", "rn", "lost",
                                      "again", "why", "this", "is", "so", "good"]) for _ in range(rng.randint(3, 14))),
        "selftext": "" if image else "I have been playing for a while and " * rng.randint(0, 6),
        "author": f"user_{rng.randint(0, 10**6)}", "author_fullname": f"t2_{rng.randint(0, 10**9):x}",
        "created_utc": 1714521600 + i * 13, "retrieved_on": 1714521600 + i * 13 + 86400, "score": rng.randint(0, 5000),
        "num_comments": rng.randint(0, 400), "upvote_ratio": round(rng.random(), 2), "over_18": False,
        "spoiler": False, "stickied": False, "locked": False, "is_self": not image, "is_video": False,
        "link_flair_text": rng.choice(["Humor", "Discussion", "Art", None]), "link_flair_css_class": None,
        "permalink": f"/r/{sub}/comments/{pid}/post/", "url": f"https://i.redd.it/{pid}.jpg" if image
        else f"https://www.reddit.com/r/{sub}/comments/{pid}/post/", "domain": "i.redd.it" if image else f"self.{sub}",
        "thumbnail": f"https://b.thumbs.redditmedia.com/{pid}.jpg", "gilded": 0, "total_awards_received": 0,
        "removed_by_category": "moderator" if rng.random() < 0.05 else None, "all_awardings": [], "awarders": [],
        "treatment_tags": [], "author_flair_richtext": [], "link_flair_richtext": [], "mod_reports": [],
        "user_reports": [], "media": None, "secure_media": None, "media_embed": {}, "secure_media_embed": {},
    }
    if image:
        post["post_hint"] = "image"
        post["preview"] = {"images": [{"source": {"url": f"https://preview.redd.it/{pid}.jpg?width=1080&amp;s=ab",
                                                  "width": 1080, "height": 1350},
                                       "resolutions": [{"url": f"https://preview.redd.it/{pid}.jpg?width={w}&amp;s=cd",
                                                        "width": w, "height": w} for w in (108, 216, 320, 640)],
                                       "variants": {}, "id": pid}], "enabled": True}
    return post


def write_dump(path: Path, n: int, subreddits: list[str], window_log: int) -> int:
    rng = random.Random(0)
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log, enable_ldm=window_log > 27)
    with open(path, "wb") as f, zstandard.ZstdCompressor(compression_params=params).stream_writer(f) as w:
        for i in range(n):
            w.write(json.dumps(fake_post(i, rng, subreddits)).encode() + b"\n")
    return path.stat().st_size


def child(dump: str, out: str, subreddit: str) -> None:
    """Runs in a fresh process: the import alone, then its own peak RSS."""
    from emocare.reddit.posts import PostFilter, import_reddit

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    started = time.perf_counter()
    summary = import_reddit([dump], out, post_filter=PostFilter([subreddit]))
    elapsed = time.perf_counter() - started
    print(json.dumps({"summary": summary, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS. (getrusage's ru_maxrss would carry the parent's peak across fork/exec.)"""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=200_000)
    ap.add_argument("--subreddits", type=int, default=20, help="how many subreddits the dump mixes")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    result: dict = {"posts_in_dump": a.posts,
                    "json_bytes_per_post": len(json.dumps(fake_post(0, random.Random(0), SUBREDDITS))),
                    "cores": 1, "goal_posts_per_s": 20000, "goal_peak_rss_mb": 300}
    with tempfile.TemporaryDirectory() as tmp:
        for window_log in (31, 23):
            dump = Path(tmp) / f"RS_window{window_log}.zst"
            size = write_dump(dump, a.posts, SUBREDDITS[: a.subreddits], window_log)
            proc = subprocess.run([sys.executable, __file__, "--child", str(dump), str(Path(tmp) / "m.jsonl"),
                                   "brawlstars"], capture_output=True, text=True, check=True, timeout=1800,
                                  env={**os.environ, "TQDM_DISABLE": "1"})
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            s = r["summary"]
            assert s["read"] == s["imported"] + s["filtered"] + s["malformed"] == a.posts
            result[f"window_2^{window_log}"] = {
                "dump_mb": round(size / 2**20, 1), "import_s": round(r["seconds"], 2),
                "posts_per_s": round(s["read"] / r["seconds"]), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                "read": s["read"], "imported": s["imported"], "filtered": s["filtered"]}
            dump.unlink()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
