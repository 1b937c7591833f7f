"""Reddit data in: dump reading, filters, labels only from the user, media download from a loopback server,
and unlabelled posts through validate, split and predict."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import zstandard
from media_server import MediaServer

from emocare.cli import main as cli
from emocare.data.manifest import load_posts
from emocare.data.split import dataset_stats, stratified_split
from emocare.data.validate import validate_manifest
from emocare.labels import DEFAULT
from emocare.reddit.fetch import FetchConfig, HostRateLimiter, fetch_media, retry_after
from emocare.reddit.posts import import_reddit, media_urls, to_record
from emocare.reddit.read import ReadLimits, iter_objects

DAY = 86400
T0 = 1714521600  # 2024-05-01T00:00:00Z


def post(pid: str, **kw) -> dict:
    base = {"id": pid, "title": f"title {pid}", "selftext": "", "subreddit": "Brawlstars", "created_utc": T0,
            "author": "someone", "is_video": False, "link_flair_text": "Humor"}
    return {**base, **kw}


def write_zst(path: Path, lines: list[str]) -> Path:
    """A dump as Pushshift writes them: streamed (no content size), 2 GiB window, long-distance matching."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31, enable_ldm=True)
    with open(path, "wb") as f, zstandard.ZstdCompressor(compression_params=params).stream_writer(f) as w:
        w.write("\n".join(lines).encode() + b"\n")
    return path


# --- reading -----------------------------------------------------------------------------------

def test_zst_dump_needs_the_long_window_and_streams(tmp_path: Path):
    dump = write_zst(tmp_path / "RS_2024-05.zst", [json.dumps(post(f"p{i}")) for i in range(300)] + ["{oops"])
    with open(dump, "rb") as f, pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.ZstdDecompressor().stream_reader(f).read(10)  # the library default refuses such a dump
    items = list(iter_objects(dump))
    assert [i.obj["id"] for i in items[:-1]] == [f"p{i}" for i in range(300)]
    assert items[-1].line_no == 301 and items[-1].obj is None and "not valid JSON" in items[-1].error


def test_json_list_and_api_listings(tmp_path: Path):
    (tmp_path / "list.json").write_text(json.dumps([post("a"), {"kind": "t3", "data": post("b")}, post("c")]))
    assert [i.obj["id"] for i in iter_objects(tmp_path / "list.json")] == ["a", "b", "c"]
    listing = {"kind": "Listing", "data": {"children": [{"kind": "t3", "data": post("d")},
                                                        {"kind": "t3", "data": post("e")}]}}
    (tmp_path / "page.json").write_text(json.dumps(listing))
    assert [i.obj["id"] for i in iter_objects(tmp_path / "page.json")] == ["d", "e"]
    comments = [{"kind": "Listing", "data": {"children": [{"kind": "t3", "data": post("f")}]}},
                {"kind": "Listing", "data": {"children": [{"kind": "t1", "data": {"id": "c1", "body": "x"}}]}}]
    (tmp_path / "thread.json").write_text(json.dumps(comments))
    assert [i.obj["id"] for i in iter_objects(tmp_path / "thread.json")] == ["f"]
    with pytest.raises(ValueError, match="unsupported format"):
        list(iter_objects(tmp_path / "posts.csv"))


def test_reddit_html_escapes_are_undone_in_text_and_flair(tmp_path: Path):
    post = {"id": "q1", "title": "Q&amp;A: 1 &lt; 2", "selftext": "a &gt; b &amp;&amp; c",
            "link_flair_text": "Tips &amp; Tricks"}
    rec, status = to_record(post, None, tmp_path)
    assert rec["text"] == "Q&A: 1 < 2\n\na > b && c" and rec["flair"] == "Tips & Tricks" and status == "text"


def test_an_overlong_line_is_too_long_and_never_held_whole(tmp_path: Path):
    import tracemalloc

    huge = json.dumps(post("huge", selftext="x" * (64 << 20)))  # one 64 MB line; the cap is 1 MB
    dump = write_zst(tmp_path / "RS.zst", [json.dumps(post("a")), huge, json.dumps(post("b"))])
    tracemalloc.start()
    items = list(iter_objects(dump, max_line_bytes=1 << 20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [i.obj["id"] if i.obj else i.error.split(":")[0] for i in items] == ["a", "too_long", "b"]
    assert items[1].line_no == 2 and peak < 24 << 20  # a 1 MB line buffer and chunks of a few MB

    out = tmp_path / "m.jsonl"
    assert import_reddit([dump], out, limits=ReadLimits(max_line_bytes=1 << 20))["malformed_by"] == {"too_long": 1}
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b"]


def test_a_truncated_dump_is_an_error_unless_allowed(tmp_path: Path, capsys):
    dump = write_zst(tmp_path / "RS.zst", [json.dumps(post(f"p{i}", selftext=f"{i} " * 50)) for i in range(2000)])
    data = dump.read_bytes()
    out = tmp_path / "m.jsonl"
    for cut in (int(len(data) * 0.6), 9):  # most of a file; and just past the frame header
        (tmp_path / "cut.zst").write_bytes(data[:cut])
        assert cli(["import", "reddit", str(tmp_path / "cut.zst"), "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert "cut.zst" in err and "ends inside a frame" in err and "last complete line" in err
        assert "--allow-truncated" in err and not out.exists()

    (tmp_path / "cut.zst").write_bytes(data[: int(len(data) * 0.6)])
    assert cli(["import", "reddit", str(tmp_path / "cut.zst"), "-o", str(out), "--allow-truncated"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["malformed_by"] == {"truncated": 1} and 0 < summary["imported"] < 2000
    assert summary["read"] == summary["imported"] + summary["malformed"]
    logged = json.loads(Path(summary["malformed_log"]).read_text())
    assert logged["line"] == summary["imported"] + 1 and f"line {summary['imported']} is the last" in logged["error"]
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert ids == [f"p{i}" for i in range(summary["imported"])]  # every complete line, in order; none cut off


def test_dates_are_normalised_at_import_and_a_bad_one_is_named(tmp_path: Path):
    posts = [post("n", created_utc=1716768000.0), post("s", created_utc="1716768000"),
             post("iso", created_utc="2024-05-27T00:00:00Z"), post("bad", created_utc="last tuesday")]
    out = tmp_path / "m.jsonl"
    summary = import_reddit([write_zst(tmp_path / "RS.zst", [json.dumps(p) for p in posts])], out)
    recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {k: r["created_utc"] for k, r in recs.items()} == {"n": 1716768000, "s": 1716768000, "iso": 1716768000}
    assert summary["malformed_by"] == {"bad_date": 1}
    error = summary["malformed_first"][0]["error"]
    assert "post bad" in error and "created_utc" in error and "last tuesday" in error


def test_media_beside_the_manifest_folder_passes_validation_again_and_again(tmp_path: Path, monkeypatch, capsys):
    """The README's recipe: media in brawl/media, the labelled manifest in brawl-labelled/."""
    monkeypatch.chdir(tmp_path)
    media = Path("brawl/media")
    media.mkdir(parents=True)
    import cv2
    import numpy as np

    cv2.imwrite(str(media / "img1.jpg"), np.full((32, 32, 3), 90, np.uint8))
    posts = Path("brawl/sample.jsonl")
    posts.write_text(json.dumps(post("img1", emotion="joy")) + "\n" + json.dumps(post("txt1", emotion="anger")) + "\n")
    assert cli(["import", "reddit", str(posts), "--media-dir", str(media), "--label-field", "emotion",
                "-o", "brawl-labelled/manifest.jsonl"]) == 0
    capsys.readouterr()
    assert json.loads(Path("brawl-labelled/manifest.jsonl").read_text().splitlines()[0])["image"] == \
        "../brawl/media/img1.jpg"
    assert cli(["validate", "brawl-labelled/manifest.jsonl", "-o", "checked"]) == 0
    assert json.loads(capsys.readouterr().out)["kept"] == 2
    assert cli(["validate", "checked/posts.jsonl", "-o", "checked-again"]) == 0  # validated output validates
    assert json.loads(capsys.readouterr().out)["kept"] == 2
    assert Path("checked-again/posts.jsonl").read_text().count("img1.jpg") == 1

    # outside both the manifest's folder and the working directory: refused before anything is written
    elsewhere = tmp_path.parent / f"{tmp_path.name}-media"
    elsewhere.mkdir()
    assert cli(["import", "reddit", str(posts), "--media-dir", str(elsewhere), "-o", "x/manifest.jsonl"]) == 1
    assert "outside the manifest's folder" in capsys.readouterr().err and not Path("x/manifest.jsonl").exists()
    escaping = Path("brawl-labelled/escape.jsonl")
    escaping.write_text(json.dumps({"id": "e", "text": "t", "label": "joy", "image": f"../../{elsewhere.name}/a.jpg"}))
    assert cli(["validate", str(escaping), "-o", "checked-escape"]) == 0
    assert json.loads(capsys.readouterr().out)["reasons"] == {"path_escapes": 1}


# --- media URLs --------------------------------------------------------------------------------

def test_media_urls_for_every_kind_of_post():
    assert media_urls(post("a", url="https://i.redd.it/x.jpeg")) == ("image", ["https://i.redd.it/x.jpeg"])
    assert media_urls(post("b", url="https://i.imgur.com/AbC")) == ("image", ["https://i.imgur.com/AbC"])
    assert media_urls(post("c", url="https://i.imgur.com/AbC.gifv")) == ("video", ["https://i.imgur.com/AbC.mp4"])
    preview = {"images": [{"source": {"url": "https://preview.redd.it/p.jpg?width=640&amp;s=abc"}}]}
    assert media_urls(post("d", url="https://www.reddit.com/r/x/comments/d", preview=preview)) == \
        ("image", ["https://preview.redd.it/p.jpg?width=640&s=abc"])
    gallery = post("e", is_gallery=True, url="https://www.reddit.com/gallery/e",
                   gallery_data={"items": [{"media_id": "m2"}, {"media_id": "m1"}]},
                   media_metadata={"m1": {"s": {"u": "https://preview.redd.it/m1.png?a=1&amp;b=2"}},
                                   "m2": {"s": {"u": "https://preview.redd.it/m2.jpg"}}})
    assert media_urls(gallery) == ("image", ["https://preview.redd.it/m2.jpg"])
    assert media_urls(gallery, all_gallery=True)[1] == ["https://preview.redd.it/m2.jpg",
                                                        "https://preview.redd.it/m1.png?a=1&b=2"]
    video = {"reddit_video": {"fallback_url": "https://v.redd.it/abc/DASH_480.mp4?source=fallback"}}
    for key in ("media", "secure_media"):
        assert media_urls(post("f", is_video=True, **{key: video})) == \
            ("video", ["https://v.redd.it/abc/DASH_480.mp4?source=fallback"])
    crosspost = post("g", url="https://v.redd.it/abc", crosspost_parent_list=[post("orig", media=video)])
    assert media_urls(crosspost)[0] == "video"
    gif = post("h", url="https://i.redd.it/x.gif", preview={
        "images": [{"source": {"url": "https://preview.redd.it/x.gif"}}],
        "reddit_video_preview": {"fallback_url": "https://v.redd.it/gif/DASH_240.mp4"}})
    assert media_urls(gif) == ("video", ["https://v.redd.it/gif/DASH_240.mp4"])
    assert media_urls(post("i", selftext="just text", url="https://www.reddit.com/r/x/comments/i")) == (None, [])


# --- import ------------------------------------------------------------------------------------

def test_import_filters_labels_and_counts_add_up(tmp_path: Path, capsys):
    posts = [
        post("keep1", subreddit="brawlstars", title="so happy", mood="happy"),
        post("keep2", subreddit="BrawlStars", created_utc=T0 + 3 * DAY, selftext="body"),
        post("other", subreddit="ClashRoyale"),
        post("early", created_utc=T0 - DAY),
        post("late", created_utc=T0 + 40 * DAY),
        post("removed", removed_by_category="moderator"),
        post("deleted", selftext="[deleted]", author="[deleted]"),
        post("angry", mood="rage"),
        post("weird", mood="bored"),
    ]
    lines = [json.dumps(p) for p in posts[:4]] + ['{"id": "broken", "title": '] + \
        [json.dumps(p) for p in posts[4:]] + [json.dumps({"id": "c9", "body": "a comment"})]
    dump = write_zst(tmp_path / "RS.zst", lines)
    out = tmp_path / "out" / "manifest.jsonl"
    assert cli(["import", "reddit", str(dump), "-o", str(out), "--subreddit", "BRAWLSTARS", "--subreddit", "r/none",
                "--after", "2024-05-01", "--before", "2024-05-31", "--skip-removed",
                "--label-field", "mood", "--label-map", "rage=anger"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["read"] == 11 and summary["imported"] == 4 and summary["malformed"] == 2
    assert summary["filtered_by"] == {"date": 2, "removed": 2, "subreddit": 1}
    assert summary["read"] == summary["imported"] + summary["filtered"] + summary["malformed"]
    assert summary["labels"] == {"labelled": 3, "unlabelled": 1}
    malformed = [json.loads(x) for x in Path(summary["malformed_log"]).read_text().splitlines()]
    assert [m["line"] for m in malformed] == [5, 11] and "comment" in malformed[1]["error"]
    recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(recs) == ["keep1", "keep2", "angry", "weird"]
    assert recs["keep1"]["label"] == "joy" and recs["angry"]["label"] == "anger" and "label" not in recs["keep2"]
    assert recs["weird"]["label"] == "bored"  # kept raw: validation quarantines it with a reason
    assert all(r["flair"] == "Humor" for r in recs.values())
    assert recs["keep2"]["text"] == "title keep2\n\nbody" and recs["keep1"]["created_utc"] == T0

    assert cli(["import", "reddit", str(dump), "-o", str(out), "--limit", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["imported"] == 2 and summary["read"] == 2
    assert all("label" not in json.loads(x) for x in out.read_text().splitlines())  # flair is never a label
    assert not Path(str(out) + ".malformed.jsonl").exists()


def test_label_map_without_label_field_is_an_error(tmp_path: Path, capsys):
    (tmp_path / "p.jsonl").write_text(json.dumps(post("a")) + "\n")
    assert cli(["import", "reddit", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "m.jsonl"),
                "--label-map", "humor=joy"]) == 1
    assert "--label-field" in capsys.readouterr().err


# --- media download ------------------------------------------------------------------------------

@pytest.fixture
def media_server(tmp_path_factory):
    with MediaServer(tmp_path_factory.mktemp("served")) as server:
        yield server


def _image(pid: str, url: str) -> dict:
    return post(pid, url=url, post_hint="image")


FAST = {"retries": 1, "backoff_s": 0.05, "read_timeout_s": 0.5, "connect_timeout_s": 1.0, "per_host_rps": 0}


def test_fetch_media_outcomes(media_server: MediaServer, tmp_path: Path):
    u = media_server.url
    posts = [
        _image("ok", f"{u}/i.redd.it/joy.jpg"),
        _image("redirect", f"{u}/i.redd.it/moved.jpg"),
        post("vid", is_video=True, media={"reddit_video": {"fallback_url": f"{u}/v.redd.it/abc/DASH_480.mp4"}}),
        post("xpost", crosspost_parent_list=[post("orig", secure_media={
            "reddit_video": {"fallback_url": f"{u}/v.redd.it/abc/DASH_480.mp4"}})]),
        post("prev", url="https://www.reddit.com/r/x/comments/prev",
             preview={"images": [{"source": {"url": f"{u}/preview.redd.it/p.jpg?w=1&amp;s=2"}}]}),
        post("gal", is_gallery=True, gallery_data={"items": [{"media_id": "a"}, {"media_id": "b"}]},
             media_metadata={"a": {"s": {"u": f"{u}/i.redd.it/joy.jpg"}},
                             "b": {"s": {"u": f"{u}/i.redd.it/second.png"}}}),
        _image("missing", f"{u}/i.redd.it/gone.jpg"),
        _image("busy", f"{u}/busy/i.redd.it/joy.jpg"),
        _image("flaky", f"{u}/flaky/i.redd.it/joy.jpg"),
        _image("down", f"{u}/down/i.redd.it/joy.jpg"),
        _image("slow", f"{u}/slow/joy.jpg"),
        _image("huge", f"{u}/i.redd.it/huge.jpg"),
        _image("chunked", f"{u}/i.redd.it/chunked-huge.jpg"),
        _image("html", f"{u}/i.redd.it/error.jpg"),
        _image("wrongkind", f"{u}/i.redd.it/really-a-video.jpg"),
        post("selfpost", selftext="no media here", url="https://www.reddit.com/r/x/comments/selfpost"),
    ]
    src = tmp_path / "posts.jsonl"
    src.write_text("\n".join(json.dumps(p) for p in posts) + "\n")
    media = tmp_path / "media"
    cfg = FetchConfig(concurrency=4, max_bytes=1024 * 1024, all_gallery=True, **FAST)
    summary = fetch_media([src], media, cfg)
    log = {e["id"]: e for e in map(json.loads, (media / "fetch-log.jsonl").read_text().splitlines())}
    outcomes = {pid: e["outcome"] for pid, e in log.items()}
    assert outcomes == {"ok": "ok", "redirect": "ok", "vid": "ok", "xpost": "ok", "prev": "ok", "gal": "ok",
                        "missing": "not_found", "busy": "ok", "flaky": "ok", "down": "gave_up", "slow": "gave_up",
                        "huge": "too_large", "chunked": "too_large", "html": "not_media", "wrongkind": "not_media",
                        "selfpost": "no_media"}
    assert summary["posts"] == 16 and summary["with_media"] == 15 and summary["no_media"] == 1
    assert summary["fetched"] == 8 and summary["failed"] == 7
    assert summary["with_media"] == summary["fetched"] + summary["failed"]
    assert "timed out" in log["slow"]["detail"] and "HTTP 502 after 2 attempts" in log["down"]["detail"]
    assert "not an image or video" in log["html"]["detail"]
    files = sorted(p.name for p in media.iterdir())
    assert files == ["busy.jpg", "fetch-log.jsonl", "flaky.jpg", "gal-2.png", "gal.jpg", "ok.jpg", "prev.jpg",
                     "redirect.jpg", "vid.mp4", "xpost.mp4"]  # nothing partial, nothing rejected kept
    assert [g["file"] for g in log["gal"]["gallery"]] == ["gal.jpg", "gal-2.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert {(p.stat().st_mode & 0o777) for p in media.iterdir()} == {0o666 & ~umask}  # as any new file, not 0600
    busy = media_server.hits["/busy/i.redd.it/joy.jpg"]
    assert len(busy) == 2 and busy[1] - busy[0] >= 0.9  # Retry-After: 1 honoured, not the 0.05 s backoff
    assert media_server.user_agents == {cfg.user_agent}

    hits_before = sum(len(v) for v in media_server.hits.values())
    joy_hits = len(media_server.hits["/i.redd.it/joy.jpg"])  # ok, gal, and redirect's target
    again = fetch_media([src], media, FetchConfig(concurrency=4, max_bytes=1024 * 1024, **{**FAST, "retries": 0}))
    assert again["outcomes"]["present"] == 8 and again["fetched"] == 8 and again["failed"] == 7
    assert len(media_server.hits["/i.redd.it/joy.jpg"]) == joy_hits  # valid files are not fetched again
    assert sum(len(v) for v in media_server.hits.values()) - hits_before == 7  # the 7 failures retried once each


def test_retry_after_and_rate_limit():
    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    assert 0 <= retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # a date in the past: no wait
    limiter, started = HostRateLimiter(20.0), time.monotonic()
    for _ in range(5):
        limiter.wait("a.example")
    limiter.wait("b.example")  # another host does not wait behind the first
    assert time.monotonic() - started >= 4 / 20 - 0.01


# --- the whole way in ----------------------------------------------------------------------------

def test_reddit_to_predictions(media_server: MediaServer, trained_bundle: Path, tmp_path: Path, capsys, monkeypatch):
    """Dump -> import (save posts) -> fetch-media -> import again linking media -> validate -> split -> predict."""
    monkeypatch.chdir(tmp_path)  # the project: validate's posts.jsonl points to ../media, inside it
    u = media_server.url
    posts = [_image("img1", f"{u}/i.redd.it/joy.jpg"), _image("img2", f"{u}/i.redd.it/gone.jpg"),
             post("vid1", is_video=True, media={"reddit_video": {"fallback_url": f"{u}/v.redd.it/abc/DASH_480.mp4"}}),
             post("txt1", selftext="we lost again"), post("lab1", title="so happy", emotion="joy"),
             post("lab2", title="furious", emotion="anger"), post("elsewhere", subreddit="ClashRoyale")]
    dump = write_zst(tmp_path / "RS.zst", [json.dumps(p) for p in posts])
    work = tmp_path / "brawl"
    assert cli(["import", "reddit", str(dump), "--subreddit", "brawlstars", "--save-posts", str(work / "posts.jsonl"),
                "-o", str(work / "manifest.jsonl")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["imported"] == 6 and first["media"]["media_missing_text_only"] == 3
    assert cli(["fetch-media", str(work / "posts.jsonl"), "--media-dir", str(work / "media"), "--retries", "0",
                "--rate", "0"]) == 0
    fetched = json.loads(capsys.readouterr().out)
    assert fetched["with_media"] == 3 and fetched["fetched"] == 2 and fetched["outcomes"]["not_found"] == 1
    assert cli(["import", "reddit", str(work / "posts.jsonl"), "--media-dir", str(work / "media"),
                "--label-field", "emotion", "-o", str(work / "manifest.jsonl")]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["media"] == {"video": 1, "image": 1, "text_only": 3, "media_missing_text_only": 1}
    recs = {r["id"]: r for r in map(json.loads, (work / "manifest.jsonl").read_text().splitlines())}
    assert recs["img1"]["image"] == "media/img1.jpg" and recs["vid1"]["video"] == "media/vid1.mp4"

    assert cli(["validate", str(work / "manifest.jsonl"), "-o", str(work / "checked"), "--allow-unlabelled"]) == 0
    assert json.loads(capsys.readouterr().out)["kept"] == 6
    strict = validate_manifest(work / "manifest.jsonl")
    assert len(strict.kept) == 2 and all("missing_label" in q["reasons"][0] for q in strict.quarantined)

    kept = load_posts(work / "checked" / "posts.jsonl")
    assignment = stratified_split(kept, {"train": 0.5, "val": 0.25, "test": 0.25}, 0)
    assert set(assignment) == {"lab1", "lab2"}
    stats = dataset_stats(kept, assignment, DEFAULT)
    assert stats["total"] == 2 and stats["unlabelled_set_aside"] == 4

    preds = work / "predictions.jsonl"
    assert cli(["predict", "--models", str(trained_bundle), "--device", "cpu", "--manifest",
                str(work / "checked" / "posts.jsonl"), "-o", str(preds)]) == 0
    rows = {r["id"]: r for r in map(json.loads, preds.read_text().splitlines())}
    assert len(rows) == 6 and all("label" in r for r in rows.values())
    assert rows["img1"]["modalities"] == ["text", "image"] and rows["vid1"]["modalities"] == ["text", "video"]
    assert rows["img2"]["modalities"] == ["text"]
