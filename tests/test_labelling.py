"""`emocare label`: the decisions log, what to ask next, agreement, export, and the page driven in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from browser import need_chromium
from PIL import Image
from sklearn.metrics import cohen_kappa_score

from emocare.bundle import fusion_path
from emocare.cli import main as cli
from emocare.data.validate import Rules, validate_manifest
from emocare.labelling.agreement import fleiss_kappa, stats
from emocare.labelling.decisions import LabelLog, current, resolve
from emocare.labelling.queue import entropy, order
from emocare.labelling.server import Session, _handler
from emocare.labels import DEFAULT
from emocare.media.thumbs import video_strip
from emocare.predict import EmoCare

CLASSES = list(DEFAULT.names)


def posts_file(demo_dir: Path, folder: Path, n: int = 12) -> Path:
    """The first ``n`` demo posts with one image and one video post among them, in ``folder`` with their media."""
    (folder / "media").mkdir(parents=True)
    rows = [json.loads(x) for x in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    picked = [next(r for r in rows if r.get("image")), next(r for r in rows if r.get("video"))]
    picked += [r for r in rows if r not in picked][: n - 2]
    for r in picked:
        for key in ("image", "video"):
            if r.get(key):
                shutil.copy(demo_dir / r[key], folder / r[key])
    path = folder / "posts.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in picked))
    return path


def test_log_replays_undos_and_survives_a_torn_line(tmp_path: Path):
    log = LabelLog(tmp_path / "labels.jsonl")
    log.append({"id": "a", "label": "joy", "annotator": "ann", "strategy": "random", "score": None})
    log.append({"id": "b", "label": "anger", "annotator": "ann", "strategy": "random", "score": None})
    log.append({"id": "b", "annotator": "ann", "undo": True})
    log.append({"id": "a", "label": "sadness", "annotator": "bob", "strategy": "uncertainty", "score": 1.2})
    with open(log.path, "ab") as f:
        f.write(b'{"id": "c", "lab')  # a kill in the middle of a write that was never acknowledged
    assert {k: r["label"] for k, r in current(log.read()).items()} == {("ann", "a"): "joy", ("bob", "a"): "sadness"}
    log.append({"id": "c", "label": "joy", "annotator": "ann", "strategy": "random", "score": None})
    assert [r["id"] for r in log.read()] == ["a", "b", "b", "a", "c"]  # the torn line is gone
    assert all(json.loads(x) for x in log.path.read_text().splitlines())
    assert resolve(log.read(), "latest")["a"]["label"] == "sadness"
    assert resolve(log.read(), "majority")["a"] == {"label": "sadness", "votes": {"joy": 1, "sadness": 1},
                                                   "random": True, "adjudicated": False}


def test_agreement_matches_the_textbook_figures():
    rng = np.random.default_rng(0)
    a = rng.choice(CLASSES, 200).tolist()
    b = [x if rng.random() < 0.7 else str(rng.choice(CLASSES)) for x in a]
    records = [{"id": str(i), "label": x, "annotator": who, "time": i}
               for who, labels in (("ann", a), ("bob", b)) for i, x in enumerate(labels)]
    out = stats(records, CLASSES)
    assert out["pairs"][0]["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b))
    assert out["posts"] == 200 and len(out["disagreements"]) == sum(x != y for x, y in zip(a, b, strict=True))
    assert sum(c["posts"] for c in out["pairs"][0]["confusion"]) == 200
    # the worked example of Fleiss' kappa (10 posts, 14 raters, 5 classes): 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1], [7, 7, 0, 0, 0],
             [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[c for c, n in zip(CLASSES, row, strict=True) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings, CLASSES) == pytest.approx(0.2099, abs=1e-4)
    assert fleiss_kappa([["joy"] * 3, ["anger"] * 3, ["sadness"] * 3], CLASSES) == pytest.approx(1.0)
    assert abs(fleiss_kappa([rng.choice(CLASSES, 3).tolist() for _ in range(3000)], CLASSES)) < 0.03


def test_uncertainty_order_follows_the_models_probabilities(trained_bundle: Path, demo_dir: Path, tmp_path: Path):
    posts = posts_file(demo_dir, tmp_path / "p")
    session = Session.open(posts, tmp_path / "labels.jsonl", DEFAULT, strategy="uncertainty",
                           models_dir=trained_bundle)
    model = EmoCare.load(trained_bundle, "cpu")
    rows = [json.loads(x) for x in posts.read_text().splitlines()]
    for r in rows:
        for key in ("image", "video"):
            if r.get(key):
                r[key] = str(posts.parent / r[key])
    probs = model.predict_batch(rows)
    expected = sorted(((-entropy(p["probabilities"]), r["id"]) for r, p in zip(rows, probs, strict=True)))
    got = [(i, s) for i, _, s in session.queue]
    assert [s for _, s in got] == pytest.approx([-e for e, _ in expected], abs=1e-5)
    assert all(s >= t for (_, s), (_, t) in zip(got, got[1:], strict=False))
    scores = tmp_path / "labels.jsonl.scores.jsonl"
    mtime = scores.stat().st_mtime_ns
    again = Session.open(posts, tmp_path / "labels.jsonl", DEFAULT, strategy="uncertainty", models_dir=trained_bundle)
    assert again.queue == session.queue and scores.stat().st_mtime_ns == mtime  # scored once, reused
    retrained = tmp_path / "models"
    shutil.copytree(trained_bundle, retrained)
    os.utime(fusion_path(retrained))  # as after a `dvc repro` on new labels
    Session.open(posts, tmp_path / "labels.jsonl", DEFAULT, strategy="uncertainty", models_dir=retrained)
    assert scores.stat().st_mtime_ns != mtime  # the next round ranks with the new models
    ids = [str(i) for i in range(4000)]
    mixed = order(ids, "mixed", {i: int(i) / 4000 for i in ids}, 0.2)
    assert sorted(i for i, _, _ in mixed) == sorted(ids)
    first = mixed[:1000]  # a labelling round that stops a quarter of the way
    randoms = [s for _, how, s in first if how == "random"]
    assert 0.15 < len(randoms) / 1000 < 0.25
    assert abs(np.mean(randoms) - 0.5) < 0.06 and max(randoms) > 0.95  # uniform over every post, not what's left
    assert min(s for _, how, s in first if how == "uncertainty") > 0.7
    with pytest.raises(ValueError, match="--models"):
        Session.open(posts, tmp_path / "l2.jsonl", DEFAULT, strategy="mixed", models_dir=tmp_path / "none")


def test_bad_requests_and_the_token(demo_dir: Path, tmp_path: Path):
    posts = posts_file(demo_dir, tmp_path / "p")
    session = Session.open(posts, tmp_path / "labels.jsonl", DEFAULT, "ann", strategy="random")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(session, "s3cret", "127.0.0.1"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(path: str, body, token: str | None = "s3cret", **headers) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json", **({"X-EmoCare-Token": token} if token else {}), **headers}
        req = urllib.request.Request(url + path, json.dumps(body).encode(), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(url + path, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    first = session.state()["post"]["id"]
    try:
        assert post("/api/label", {"id": first, "label": "joy"}, token=None)[0] == 403
        assert get("/api/state") == get("/media/x/image") == get("/") == 403  # reading needs the token too
        assert get("/api/state?token=s3cret") == 200
        assert post("/api/label", {"id": first, "label": "joy"}, Host="evil.example:80")[0] == 421  # rebinding
        assert post("/api/label", {"id": first, "label": "joy"}, **{"Content-Type": "text/plain"})[0] == 415
        assert post("/api/label", ["not", "an", "object"])[0] == 400
        assert post("/api/label", {"id": "nope", "label": "joy"}) == (404, {
            "error": "unknown post id 'nope': not in posts.jsonl"})
        status, body = post("/api/label", {"id": first, "label": "fear"})
        assert status == 422 and "not one of the classes" in body["error"]
        status, body = post("/api/label", {"id": first, "label": "joy"})
        assert status == 200 and body["labelled"] == 1 and body["post"]["id"] != first
        assert post("/api/label", {"id": first, "label": "anger"})[0] == 409  # a second tab: undo first
        assert post("/api/undo", {})[1]["post"]["id"] == first  # the undone post is asked again
        os.utime(posts, ns=(time.time_ns(), time.time_ns() + 10**9))  # the posts file changes under the tool
        status, body = post("/api/label", {"id": first, "label": "joy"})
        assert status == 409 and "changed since" in body["error"]
    finally:
        server.shutdown()
    assert [(r["id"], r.get("label"), r.get("undo")) for r in session.log.read()] == [
        (first, "joy", None), (first, None, True)]


def test_export_is_a_manifest_that_validate_keeps_whole(demo_dir: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the project
    posts = posts_file(demo_dir, tmp_path / "p")
    rows = [json.loads(x) for x in posts.read_text().splitlines()]
    log = LabelLog(tmp_path / "labels.jsonl")
    for i, r in enumerate(rows[:6]):
        log.append({"id": r["id"], "label": CLASSES[i % 5], "annotator": "ann",
                    "strategy": "random" if i % 2 else "uncertainty", "score": None})
    log.append({"id": rows[0]["id"], "label": "anger", "annotator": "bob", "strategy": "random", "score": None})
    out = tmp_path / "elsewhere" / "manifest.jsonl"
    assert cli(["label", "export", str(log.path), "--posts", str(posts), "-o", str(out), "--resolve", "latest",
                "--models", str(tmp_path / "no-models")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == summary["labelled"] == 6 and summary["random"] == 4
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert written[0]["label"] == "anger" and any(r.get("image") for r in written)
    assert any(r.get("video") for r in written)
    report = validate_manifest(out, Rules(labels=DEFAULT))
    assert report.counts["kept"] == 6 and report.counts["quarantined"] == 0, report.quarantined
    monkeypatch.chdir(tmp_path / "elsewhere")  # outside the project, the export could not validate: refused
    assert cli(["label", "export", str(log.path), "--posts", str(posts), "-o", str(out), "--models", "none"]) == 1
    assert "path escapes" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert cli(["label", "stats", str(log.path), "--models", str(tmp_path / "no-models")]) == 0
    assert json.loads(capsys.readouterr().out)["per_annotator"]["bob"]["posts"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(posts: Path, labels: Path, port: int, log: Path) -> tuple[subprocess.Popen, str]:
    """The server as a user starts it, and the URL it prints (with its token)."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "emocare.cli", "label", str(posts), "--labels", str(labels),
                                 "--strategy", "random", "--annotator", "ann", "--port", str(port)], stderr=err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"open (http://\S+)", log.read_text())
        if found:
            try:
                urllib.request.urlopen(found.group(1), timeout=2).read()
                return proc, found.group(1)
            except OSError:
                pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"label server did not start: {log.read_text()[-2000:]}")


def test_the_page_with_the_keyboard_undo_reload_and_kill(demo_dir: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright  # a dev dependency; the browser is Debian's chromium

    posts, labels = posts_file(demo_dir, tmp_path / "p", n=8), tmp_path / "labels.jsonl"
    port = _free_port()
    proc, url = _start(posts, labels, port, tmp_path / "server.log")
    acknowledged = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=need_chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url
                       else route.abort())  # loopback only
            page.goto(url)
            page.wait_for_selector("#post[data-id]")
            page.keyboard.press("?")
            assert page.is_visible("#help") and "1: Neutral/Other" in page.inner_text("#help")
            page.keyboard.press("?")
            assert not page.is_visible("#help")
            seen = {}
            for n in range(8):  # every post: the image and the video post among them
                page.wait_for_selector("#post[data-id]")
                pid = page.get_attribute("#post", "data-id")
                post = next(json.loads(x) for x in posts.read_text().splitlines() if json.loads(x)["id"] == pid)
                kind = "video" if post.get("video") else "image" if post.get("image") else None
                if kind and kind not in seen:  # the media themselves, loaded: not the page around them
                    shown = "#media img.main" if kind == "image" else "#media img.strip"
                    page.wait_for_function(f"document.querySelector('{shown}')?.naturalWidth > 0")
                    png = tmp_path / f"{kind}.png"
                    page.locator(shown).screenshot(path=str(png))
                    source = (Image.open(posts.parent / post["image"]) if kind == "image"
                              else video_strip(posts.parent / post["video"], frames=8, px=960))
                    seen[kind] = (png, source)
                with page.expect_response("**/api/label") as answer:
                    page.keyboard.press(str(n % 5 + 1))
                assert answer.value.ok
                acknowledged.append((pid, CLASSES[n % 5]))
                if n < 7:
                    page.wait_for_function(f"document.querySelector('#post').dataset.id !== {json.dumps(pid)}")
            page.wait_for_selector("#done", state="visible")
            assert page.inner_text("#progress") == "8 / 8 labelled"
            with page.expect_response("**/api/undo"):
                page.keyboard.press("u")
            undone, _ = acknowledged.pop()
            page.wait_for_function(f"document.querySelector('#post').dataset.id === {json.dumps(undone)}")
            page.reload()
            page.wait_for_selector("#post[data-id]")
            assert page.inner_text("#progress") == "7 / 8 labelled"
            assert page.get_attribute("#post", "data-id") == undone  # the only post left

            proc.send_signal(signal.SIGKILL)  # mid-session: nothing acknowledged may be lost
            proc.wait(timeout=10)
            proc, url = _start(posts, labels, port, tmp_path / "server2.log")
            page.goto(url)
            page.wait_for_selector("#post[data-id]")
            assert page.inner_text("#progress") == "7 / 8 labelled"
            with page.expect_response("**/api/label"):
                page.keyboard.press("2")
            acknowledged.append((undone, CLASSES[1]))
            browser.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    standing = {pid: r["label"] for (_, pid), r in current(LabelLog(labels).read(), "ann").items()}
    assert len(standing) == 8 and all(standing[p] == label for p, label in acknowledged)
    assert all(r["strategy"] == "random" and "time" in r for r in LabelLog(labels).read() if not r.get("undo"))
    for kind in ("image", "video"):
        png, source = seen[kind]
        shot = Image.open(png).convert("RGB")
        assert shot.width >= 480, (kind, shot.size)  # shown large
        shot = np.asarray(shot.resize(source.size), dtype=float)
        assert shot.std() > 10 and np.abs(shot - np.asarray(source.convert("RGB"), dtype=float)).mean() < 20, kind


def test_label_studio_round_trip(demo_dir: Path, tmp_path: Path, capsys):
    posts = posts_file(demo_dir, tmp_path / "p", n=5)
    ids = [json.loads(x)["id"] for x in posts.read_text().splitlines()]
    log = LabelLog(tmp_path / "labels.jsonl")
    for pid, label in zip(ids[:3], ("joy", "anger", "sadness"), strict=True):
        log.append({"id": pid, "label": label, "annotator": "ann@team", "strategy": "random", "score": None})
    tasks = tmp_path / "ls" / "tasks.json"
    assert cli(["label", "to-label-studio", str(posts), "-o", str(tasks), "--labels", str(log.path), "--media-url",
                "/data/local-files/?d=", "--models", str(tmp_path / "none")]) == 0
    assert json.loads(capsys.readouterr().out)["annotations"] == 3
    exported = json.loads(tasks.read_text())
    assert exported[0]["data"]["image"].startswith("/data/local-files/?d=media/")
    assert exported[0]["annotations"][0]["result"][0]["value"] == {"choices": ["joy"]}
    assert all(set(t["data"]) >= {"text", "image", "video"} for t in exported)  # fields the config names
    assert '<Choice value="Neutral/Other" alias="neutral"/>' in tasks.with_suffix(".xml").read_text()
    # a teammate's annotations in Label Studio: by display name, one cancelled
    exported[3]["annotations"] = [{"result": [{"from_name": "emotion", "to_name": "text", "type": "choices",
                                               "value": {"choices": ["Surprise"]}}], "completed_by": 7},
                                  {"result": [], "was_cancelled": True, "completed_by": 7}]
    tasks.write_text(json.dumps(exported))
    back = tmp_path / "p" / "from-ls.jsonl"
    assert cli(["label", "from-label-studio", str(tasks), "--posts-out", str(back), "--labels",
                str(tmp_path / "back.jsonl"), "--media-url", "/data/local-files/?d=", "--models",
                str(tmp_path / "none")]) == 0
    assert json.loads(capsys.readouterr().out) | {"posts_out": "", "labels": ""} == {
        "tasks": 5, "posts": 5, "decisions": 4, "added": 4, "cancelled": 1, "posts_out": "", "labels": ""}
    assert [json.loads(x) for x in back.read_text().splitlines()][0]["image"] == \
        json.loads(posts.read_text().splitlines()[0])["image"]
    decisions = {r["id"]: (r["label"], r["annotator"]) for r in LabelLog(tmp_path / "back.jsonl").read()}
    assert decisions[ids[3]] == ("surprise", "label-studio-user-7") and decisions[ids[0]] == ("joy", "ann@team")
    assert LabelLog(tmp_path / "back.jsonl").read()[0]["time"] == log.read()[0]["time"]  # when it was decided
    assert cli(["label", "from-label-studio", str(tasks), "--posts-out", str(back), "--labels",
                str(tmp_path / "back.jsonl"), "--media-url", "/data/local-files/?d=", "--models",
                str(tmp_path / "none")]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 0  # the same export again adds nothing
    exported[4]["annotations"] = [{"result": [{"from_name": "emotion", "to_name": "text", "type": "choices",
                                               "value": {"choices": ["Boredom"]}}]}]
    tasks.write_text(json.dumps(exported))
    assert cli(["label", "from-label-studio", str(tasks), "--posts-out", str(back), "--labels",
                str(tmp_path / "bad.jsonl"), "--models", str(tmp_path / "none")]) == 1
    assert "task 5" in capsys.readouterr().err and not (tmp_path / "bad.jsonl").exists()
