"""`emocare label` for a team: the labels database, routing with overlap and leases, the team's links and admin
API, the review queue, and the server on hostile input."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_labelling import CLASSES, posts_file

from emocare.cli import main as cli
from emocare.labelling import review, server
from emocare.labelling.agreement import fleiss_kappa, pace, stats
from emocare.labelling.decisions import AlreadyLabelled, LabelLog, current, resolve
from emocare.labelling.routing import Router
from emocare.labelling.server import LabelServer, Session, _handler
from emocare.labelling.store import LabelStore
from emocare.labels import DEFAULT


def _race(stores: list, ids: list[str]) -> list[tuple[str, str]]:
    """Each store (its own connection or file handle, as two servers have) decides every id at once; what was
    acknowledged."""
    acked, go = [], threading.Barrier(len(stores))

    def work(n: int, store) -> None:
        go.wait()
        for pid in ids:
            try:
                store.decide({"id": pid, "label": CLASSES[n], "annotator": "ann", "strategy": "random", "score": None})
                acked.append((pid, CLASSES[n]))
            except AlreadyLabelled:
                pass

    threads = [threading.Thread(target=work, args=(n, s)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return acked


@pytest.mark.parametrize("kind", ["db", "jsonl"])
def test_two_servers_of_one_annotator_acknowledge_one_decision_per_post(tmp_path: Path, kind: str):
    path = tmp_path / f"labels.{kind}"
    opener = LabelStore if kind == "db" else LabelLog
    ids = [f"p{i:02d}" for i in range(40)]
    acked = _race([opener(path), opener(path)], ids)
    standing = {pid: r["label"] for (_, pid), r in current(opener(path).read()).items()}
    assert sorted(pid for pid, _ in acked) == ids  # each post acknowledged once, to one of the two
    assert all(standing[pid] == label for pid, label in acked)  # and what was acknowledged is what stands


def test_an_acknowledged_decision_survives_kill_9(tmp_path: Path):
    db = tmp_path / "labels.db"
    writer = ("import sys\nfrom emocare.labelling.store import LabelStore\ns = LabelStore(sys.argv[1])\n"
              "for i in range(100000):\n    s.decide({'id': f'p{i}', 'label': 'joy', 'annotator': 'ann'})\n"
              "    print(f'p{i}', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(db)], stdout=subprocess.PIPE, text=True)
    acked = [proc.stdout.readline().strip() for _ in range(300)]
    proc.kill()  # SIGKILL, mid-write
    proc.wait(10)
    acked += [x for x in proc.stdout.read().split() if x]  # printed, so acknowledged, before the kill
    standing = LabelStore(db).standing()
    assert all(("ann", pid) in standing for pid in acked) and len(acked) >= 300


def test_import_an_old_labels_file_then_export_prefers_the_adjudication(demo_dir: Path, tmp_path: Path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    posts = posts_file(demo_dir, tmp_path / "p", n=6)
    ids = [json.loads(x)["id"] for x in posts.read_text().splitlines()]
    old = LabelLog(tmp_path / "old.jsonl")
    for i, pid in enumerate(ids[:4]):
        old.append({"id": pid, "label": CLASSES[i], "annotator": "ann", "strategy": "random", "score": None})
    old.append({"id": ids[3], "annotator": "ann", "undo": True})
    old.append({"id": ids[0], "label": "anger", "annotator": "bob", "strategy": "random", "score": None})
    db = tmp_path / "team.db"
    assert cli(["label", "import", str(old.path), "--labels", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == 6
    store = LabelStore(db)
    assert store.read() == old.read()  # the same records, times kept
    assert store.standing() == {(w, p): r["label"] for (w, p), r in current(old.read()).items()}
    assert store.undo_last("ann", set(ids)) == ids[2]  # the import's undo left ids[3] undone: ids[2] is latest
    store.append({"id": ids[0], "label": "sadness", "annotator": "lead", "adjudication": True})
    assert resolve(store.read())[ids[0]] == {"label": "sadness", "votes": {"neutral": 1, "anger": 1},
                                             "random": True, "adjudicated": True}
    out = tmp_path / "manifest.jsonl"
    assert cli(["label", "export", str(db), "--posts", str(posts), "-o", str(out), "--models", "none"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 2 and summary["adjudicated"] == 1
    assert {r["id"]: r["label"] for r in map(json.loads, out.read_text().splitlines())} == {
        ids[0]: "sadness", ids[1]: CLASSES[1]}
    assert cli(["label", "stats", str(db), "--models", "none"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["adjudications"] == 1 and got["disagreements"][0]["adjudicated"] == "sadness"
    assert cli(["label", "to-label-studio", str(posts), "-o", str(tmp_path / "ls.json"), "--labels", str(db),
                "--models", "none"]) == 0
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert sum(len(t["annotations"]) for t in tasks) == 3  # ann's two standing decisions and bob's


def test_routing_hands_each_post_once_except_the_overlap_and_honours_leases():
    now = [0.0]
    ids = [f"p{i:02d}" for i in range(40)]
    router = Router(ids, [], overlap=0.25, k=3, lease_s=60, seed=1, clock=lambda: now[0])
    assert len(router.overlap) == 10
    a = router.next_for("ana", ids)
    assert router.next_for("ben", ids) != a or a in router.overlap  # leased: not handed to another
    first_single = next(p for p in ids if p not in router.overlap)
    router.next_for("ana", [first_single])
    assert router.next_for("ben", [first_single]) is None  # ana holds it
    now[0] += 61  # ana's lease ran out (she left the page open and went home)
    assert router.next_for("ben", [first_single]) == first_single
    router.release("ben")
    labelled: dict[str, list[str]] = {}
    for _ in range(200):  # three annotators take turns until nothing is left for anyone
        progressed = False
        for who in ("ana", "ben", "chloe"):
            pid = router.next_for(who, ids)
            if pid is not None:
                router.decided(who, pid)
                labelled.setdefault(pid, []).append(who)
                progressed = True
        if not progressed:
            break
    assert sorted(labelled) == ids
    assert all(len(set(w)) == len(w) for w in labelled.values())  # nobody twice on a post
    assert all(len(labelled[p]) == (3 if p in router.overlap else 1) for p in ids)
    assert router.progress()["posts_done"] == 40
    router.undone("ana", next(p for p, w in labelled.items() if w == ["ana"]))
    assert router.next_for("ana", ids) is not None and router.next_for("ben", ids) is None


def test_agreement_on_a_routed_overlap_and_pace():
    # Fleiss over posts with 2 and 3 raters: each post's agreement over its own pairs
    two_three = [["joy", "joy"], ["joy", "anger", "anger"], ["sadness", "sadness", "sadness"], ["anger", "joy"]]
    counts = np.array([[r.count(c) for c in CLASSES] for r in two_three], float)
    n = counts.sum(1)
    p_i = ((counts**2).sum(1) - n) / (n * (n - 1))
    p_j = counts.sum(0) / counts.sum()
    expected = (p_i.mean() - (p_j**2).sum()) / (1 - (p_j**2).sum())
    assert fleiss_kappa(two_three + [["joy"]], CLASSES) == pytest.approx(expected)  # one rater: not in it
    assert pace([0, 10, 20, 1000, 1010]) == {"per_hour": 360.0, "active_hours": round(30 / 3600, 3), "last": 1010}
    records = [{"id": "a", "label": "joy", "annotator": who, "time": t} for t, who in enumerate(["x", "y", "z"])]
    records.append({"id": "a", "label": "anger", "annotator": "lead", "adjudication": True, "time": 5})
    out = stats(records, CLASSES)
    assert out["fleiss_posts"] == 1 and out["decisions"] == 3 and "lead" not in out["per_annotator"]


def test_likely_errors_rank_flipped_labels_first():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    y = rng.integers(0, 3, 300)
    features = centres[y] + rng.normal(size=(300, 16))
    labels = [CLASSES[i] for i in y]
    flipped = rng.choice(300, 30, replace=False)
    for i in flipped:
        labels[i] = CLASSES[(y[i] + 1) % 3]
    found = review.likely_errors(labels, features)
    top = {e["index"] for e in found[:30]}
    assert len(top & set(flipped.tolist())) >= 25  # separable classes: nearly every flip is caught first
    assert all(e["model_label"] != e["label"] for e in found[:30])
    assert review.likely_errors(["joy"] * 10 + ["anger"] * 2, features[:12]) == []  # one class checkable: none


def _client(port: int):
    def call(method: str, path: str, token: str | None = None, body=None, **headers) -> tuple[int, dict | bytes]:
        headers = {"Content-Type": "application/json", **({"X-EmoCare-Token": token} if token else {}), **headers}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                raw = r.read()
                return r.status, json.loads(raw) if r.headers.get("Content-Type") == "application/json" else raw
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    return call


@pytest.fixture
def team(demo_dir: Path, tmp_path: Path, monkeypatch):
    """A team server on 12 demo posts (dated 1e20; one whose image is gone, one whose image is a folder):
    ana, ben, chloe and the admin lead, every post in the overlap."""
    monkeypatch.setattr(server, "TIMEOUT_S", 1)
    folder = tmp_path / "p"
    posts = posts_file(demo_dir, folder)
    rows = [json.loads(x) for x in posts.read_text().splitlines()]
    for r in rows:
        r["created_utc"] = 1e20
    rows[2]["image"], rows[3]["image"] = "media/gone.png", "media"
    posts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    session = Session.open(posts, tmp_path / "team.db", DEFAULT, "ana", strategy="random", overlap=1.0, k=3)
    tokens = {name: session.add_member(name) for name in ("ana", "ben", "chloe")}
    tokens["lead"] = session.add_member("lead", "admin")
    httpd = LabelServer(("127.0.0.1", 0), _handler(session, None, "127.0.0.1"))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield session, tokens, httpd.server_address[1], rows
    httpd.shutdown()
    httpd.server_close()


def test_team_links_admin_review_and_hostile_input(team, monkeypatch):
    session, tokens, port, rows = team
    call = _client(port)
    # the post dated 1e20 (issue 39): labelled, and the page goes on
    status, state = call("GET", f"/api/state?token={tokens['ana']}")
    assert status == 200 and "not a date" in state["post"]["meta"]["created_utc"]
    first = state["post"]["id"]
    status, state = call("POST", "/api/label", tokens["ana"], {"id": first, "label": "joy"})
    assert status == 200 and state["labelled"] == 1 and call("GET", "/api/state", tokens["ana"])[0] == 200
    # ben and chloe each get a post of their own while ana looks at hers (overlap: every post needs three)
    shown = {who: call("GET", "/api/state", tokens[who])[1]["post"]["id"] for who in ("ana", "ben", "chloe")}
    assert shown["ben"] == shown["chloe"] == first != shown["ana"]  # the overlap post, to everyone
    assert call("POST", "/api/label", tokens["ben"], {"id": first, "label": "anger"})[0] == 200
    assert call("POST", "/api/label", tokens["chloe"], {"id": first, "label": "joy"})[0] == 200
    # the media defects: a file gone and a folder are a 404 that names the post, not silence or an empty 200
    for row in rows[2:4]:
        status, body = call("GET", f"/media/{row['id']}/image", tokens["ana"])
        assert status == 404 and row["id"] in body["error"]
    assert call("GET", f"/media/{rows[1]['id']}/video", tokens["ana"])[0] == 200
    # tokens: a non-ASCII one is refused (no traceback), an annotator is not the admin
    assert call("GET", "/api/state?token=%C3%A9t%C3%A9")[0] == 403
    assert call("GET", "/api/admin/state", tokens["ana"])[0] == 403
    assert call("POST", "/api/admin/adjudicate", tokens["ana"], {"id": first, "label": "joy"})[0] == 404
    status, admin = call("GET", "/api/admin/state", tokens["lead"])
    assert status == 200 and {m["name"]: m["labelled"] for m in admin["members"]} == {
        "ana": 1, "ben": 1, "chloe": 1, "lead": 0}
    assert admin["agreement"]["fleiss_posts"] == 1 and len(admin["agreement"]["pairs"]) == 3
    status, added = call("POST", "/api/admin/annotators", tokens["lead"], {"name": "dan"})
    assert status == 200 and call("GET", added["path"])[0] == 200  # a new link, working at once
    assert call("POST", "/api/admin/annotators", tokens["lead"], {"name": "../evil"})[0] == 400
    # the review queue: the disagreement first, showing every decision; adjudicated, it leaves the queue
    monkeypatch.setattr(review, "text_features", lambda texts: np.ones((len(texts), 4)))
    status, queue = call("GET", "/api/admin/review", tokens["lead"])
    assert status == 200 and queue["items"][0] == {"id": first, "reason": "disagreement", "text": session.posts[
        first]["text"], "decisions": {"ana": "joy", "ben": "anger", "chloe": "joy"}}
    assert call("POST", "/api/admin/adjudicate", tokens["lead"], {"id": first, "label": "anger"})[0] == 200
    assert call("GET", "/api/admin/review", tokens["lead"])[1]["disagreements"] == 0
    assert resolve(session.log.read())[first]["label"] == "anger"


def test_the_server_holds_100_simultaneous_connections_and_drops_silent_ones(team):
    session, tokens, port, _ = team
    socks = []
    try:
        for _ in range(100):  # a burst: all connect before any is served
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        request = (f"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-EmoCare-Token: {tokens['ana']}\r\n"
                   "Connection: close\r\n\r\n").encode()
        for s in socks:
            s.sendall(request)
        answers = [s.recv(64) for s in socks]
        assert all(a.startswith(b"HTTP/1.0 200") for a in answers), {a[:20] for a in answers}
    finally:
        for s in socks:
            s.close()
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.monotonic()
    assert silent.recv(1) == b""  # closed by the server after its timeout (1 s here), not held forever
    assert time.monotonic() - started < 8


def test_the_cookie_is_the_ports_own(team):
    session, tokens, port, _ = team
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/?token={tokens['ana']}", timeout=10) as r:
        cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"emocare_label_token_{port}={tokens['ana']};")
    call = _client(port)
    assert call("GET", "/api/state", Cookie=f"emocare_label_token_{port + 1}={tokens['ana']}")[0] == 403
    assert call("GET", "/api/state", Cookie=f"emocare_label_token_{port}={tokens['ana']}")[0] == 200


def test_three_annotators_in_three_browsers_and_a_reviewer(demo_dir: Path, tmp_path: Path, monkeypatch):
    """Routing, overlap, a disagreement resolved on the admin page, export: as a team would, in Chromium."""
    from browser import need_chromium
    from playwright.sync_api import sync_playwright
    from test_labelling import _free_port

    monkeypatch.chdir(tmp_path)
    posts = posts_file(demo_dir, tmp_path / "p", n=8)
    db, port, log = tmp_path / "team.db", _free_port(), tmp_path / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "emocare.cli", "label", str(posts), "--labels", str(db),
                                 "--strategy", "random", "--annotators", "ana,ben,chloe", "--admin", "lead",
                                 "--overlap", "0.25", "--k", "3", "--port", str(port), "--models", "none"],
                                stderr=err)
    try:
        links: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(links) < 4 and time.monotonic() < deadline:
            links = dict(re.findall(r"  (\w+) \(\w+\): open (http://\S+)", log.read_text()))
            time.sleep(0.2)
        assert set(links) == {"ana", "ben", "chloe", "lead"}, log.read_text()[-2000:]
        keys = {"ana": "2", "ben": "3", "chloe": "2"}  # joy, anger, joy: ben disagrees on every overlap post
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=need_chromium(), args=["--no-sandbox"])
            pages = {}
            for who in keys:  # a context each: their own cookie jar, as three laptops
                page = browser.new_context().new_page()
                page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url
                           else route.abort())
                page.goto(links[who])
                pages[who] = page
            for page in pages.values():
                page.wait_for_selector("#post[data-id], #done:visible")
            seen: dict[str, set[str]] = {}
            for _ in range(40):  # turns until every page says done (bounded)
                moved = False
                for who, page in pages.items():
                    page.reload()  # the latest routing: a post another annotator gave back, or none left
                    page.wait_for_selector("#post[data-id], #done:visible")
                    if page.is_visible("#done"):
                        continue
                    pid = page.get_attribute("#post", "data-id")
                    assert pid not in seen.get(who, set())
                    with page.expect_response("**/api/label") as answer:
                        page.keyboard.press(keys[who])
                    assert answer.value.ok
                    seen.setdefault(who, set()).add(pid)
                    moved = True
                if not moved:
                    break
            by_post: dict[str, set[str]] = {}
            for who, ids in seen.items():
                for pid in ids:
                    by_post.setdefault(pid, set()).add(who)
            assert len(by_post) == 8 and all(seen.values())  # every post labelled, everyone got work
            overlap = [p for p, w in by_post.items() if len(w) > 1]
            assert len(overlap) == 2 and all(len(by_post[p]) == 3 for p in overlap)  # k = 3 on the overlap
            assert sum(len(w) for w in by_post.values()) == 6 + 2 * 3  # no other post was done twice
            admin = browser.new_context().new_page()
            admin.goto(links["lead"])
            admin.wait_for_selector("#pairs tbody tr")
            assert "Fleiss' kappa over the 2 posts" in admin.inner_text("#fleiss")
            assert admin.locator("#members tbody tr").count() == 4
            admin.click("#load-review")
            admin.wait_for_selector(".item[data-reason=disagreement]", timeout=120_000)
            item = admin.locator(".item[data-reason=disagreement]").first
            settled = item.get_attribute("data-id")
            assert settled in overlap and "ben: anger" in item.inner_text()
            with admin.expect_response("**/api/admin/adjudicate") as answer:
                item.locator("button[data-label=sadness]").click()
            assert answer.value.ok
            browser.close()
    finally:
        proc.kill()
        proc.wait(10)
    out = tmp_path / "labelled.jsonl"
    assert cli(["label", "export", str(db), "--posts", str(posts), "-o", str(out), "--models", "none"]) == 0
    exported = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(exported) == 8 and exported[settled]["label"] == "sadness" and exported[settled]["label_adjudicated"]
    other = next(p for p in overlap if p != settled)
    assert exported[other]["label"] == "joy" and exported[other]["label_votes"] == {"joy": 2, "anger": 1}


def test_beyond_loopback_the_names_given_are_accepted_and_no_other(team):
    session, tokens, _, _ = team
    httpd = LabelServer(("127.0.0.1", 0), _handler(session, None, "0.0.0.0", ["label.example.org"]))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        call, port = _client(httpd.server_address[1]), httpd.server_address[1]
        for host, status in (("label.example.org", 200), (f"label.example.org:{port}", 200),
                             (f"evil.example:{port}", 421)):
            assert call("GET", "/api/state", tokens["ben"], Host=host)[0] == status, host
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_two_annotators_share_the_live_order(tmp_path: Path):
    """Routing and the live model on one server: with overlap 0 the two annotators get disjoint posts, both from
    the live order (a random first batch, the evaluation sample keeping its share of the team's posts), and one
    live model trains on both annotators' decisions; its panel answers either."""
    from test_labelling_live import _posts

    from emocare.labelling.queue import DEFAULT as STRATEGY
    from emocare.labelling.queue import START

    posts, truth = _posts(tmp_path / "p", 120)
    session = Session.open(posts, tmp_path / "team.db", DEFAULT, "ana", overlap=0.0)
    tokens = {name: session.add_member(name) for name in ("ana", "ben")}
    httpd = LabelServer(("127.0.0.1", 0), _handler(session, None, "127.0.0.1"))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    call = _client(httpd.server_address[1])
    try:
        shown = {name: call("GET", "/api/state", token)[1]["post"]["id"] for name, token in tokens.items()}
        assert shown["ana"] != shown["ben"]  # each holds a lease on their own post
        for _ in range(20):  # turn about: 40 decisions, under START, so the order is the random first batch
            for name, token in tokens.items():
                status, state = call("POST", "/api/label", token, {"id": shown[name], "label": truth[shown[name]]})
                assert status == 200, state
                shown[name] = state["post"]["id"]
        records = session.log.read()
        by = {name: [r["id"] for r in records if r["annotator"] == name] for name in tokens}
        assert len(by["ana"]) == len(by["ben"]) == 20 and not set(by["ana"]) & set(by["ben"])
        tags = [r["strategy"] for r in records]
        assert set(tags) == {"random", "start"} and len(tags) < START  # nothing ranked before START labels
        assert tags.count("random") == len(tags) // 5  # 1 in 5 of the team's posts from the evaluation sample
        assert {r["id"] for r in records if r["strategy"] == "random"} <= session.live.sample
        deadline = time.monotonic() + 120
        while session.live.report.get("trained_on") != 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        for token in tokens.values():
            status, report = call("GET", "/api/live", token)
            assert status == 200 and report["strategy"] == STRATEGY and report["posts"] == 120
            assert report["trained_on"] == 40 and report["random_picks"] == 8  # both annotators' decisions
    finally:
        httpd.shutdown()
        httpd.server_close()
        session.live.stop()
