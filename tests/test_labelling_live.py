"""The labelling page's live model: the order it asks in, its figures on the random picks, its feature store, and
its panel on the page (Chromium)."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from browser import need_chromium

from emocare import metrics
from emocare.labelling import live as live_mod
from emocare.labelling import queue
from emocare.labelling.live import Evaluator, PostFeatures, fold_of
from emocare.labelling.queue import START, interleave, rank
from emocare.labelling.server import Session, _handler
from emocare.labels import DEFAULT

CLASSES = list(DEFAULT.names)
WORDS = {"neutral": ["the bus leaves at", "meeting notes for", "the weather report says"],
         "joy": ["so happy about", "what a wonderful", "I love this"],
         "anger": ["I am furious about", "this is outrageous", "I hate how they"],
         "surprise": ["I can't believe", "wow, did not expect", "what a shock:"],
         "sadness": ["I miss my", "so sad about", "heartbroken over"]}


def test_rank_balances_predicted_classes_and_margin_takes_the_least_sure():
    rng = np.random.default_rng(0)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    assert rank("margin", probs, np.zeros(2), 2, rng).tolist() == [2, 5]
    # class 1 has fewer labels: its predicted posts come first, then the classes alternate
    picks = rank("balanced", probs, np.array([5, 3]), 4, rng)
    assert [int(probs[i].argmax()) for i in picks] == [1, 1, 0, 1] or \
        [int(probs[i].argmax()) for i in picks][:2] == [1, 1]
    within = rank("balanced-margin", probs, np.array([0, 0]), 2, rng)
    assert set(within.tolist()) == {2, 3}  # the least sure of each predicted class
    with pytest.raises(ValueError, match="live strategy"):
        rank("mixed", probs, np.zeros(2), 2, rng)


def test_interleave_keeps_the_random_share_from_the_first_post():
    order = list(interleave(list("SSSSSSSSSS"), list(range(40)), 0, 0, 0.2))
    flags = [s for _, s in order]
    assert flags[0] is True  # the evaluation sample starts with the first post
    assert all(sum(flags[:n]) == int(np.ceil(0.2 * n)) for n in range(1, 41))
    assert sorted(str(i) for i, _ in order) == sorted(["S"] * 10 + [str(i) for i in range(40)])


def test_each_random_pick_is_scored_by_a_model_that_never_trained_on_it(monkeypatch):
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(200)]
    x = {p: rng.normal(size=160).astype(np.float32) for p in ids}
    labels = {p: int(rng.integers(3)) for p in ids}  # noise: only memorising would score well
    picks = ids[::3]
    trained = []
    real_fit = live_mod.fit
    monkeypatch.setattr(live_mod, "fit", lambda a, b, k: trained.append(a) or real_fit(a, b, k))
    evaluator = Evaluator(3)
    figures = evaluator.evaluate(x, ids, labels, picks)
    rows = {x[p].tobytes(): p for p in ids}
    for a in trained:  # each model left out one whole fold of the picks: the fold it scores
        seen = {rows[r.tobytes()] for r in a}
        assert any(all(p not in seen for p in picks if fold_of(p) == f) for f in range(live_mod.FOLDS))
    in_sample = real_fit(np.stack([x[p] for p in ids]), np.array([labels[p] for p in ids]), 3)
    memorised = (in_sample(np.stack([x[p] for p in picks])).argmax(1) == [labels[p] for p in picks]).mean()
    assert memorised > 0.9 and figures["macro_f1"] < 0.55  # out of fold it is near chance (1/3)
    lo, hi = figures["interval"]
    assert lo <= figures["macro_f1"] <= hi and figures["curve"][-1][0] == 200
    trained.clear()  # nothing changed: the next evaluation reuses every model
    assert evaluator.evaluate(x, ids, labels, picks) == figures and not trained


def test_the_last_100_labels_pay_when_a_class_first_appears_in_them():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 16)) * 3
    ids = [f"p{i}" for i in range(260)]
    labels = {p: (2 if i >= 160 else i % 2) for i, p in enumerate(ids)}  # class 2 only among the last 100
    x = {p: (centres[labels[p]] + rng.normal(size=16)).astype(np.float32) for p in ids}
    picks = [p for i, p in enumerate(ids) if i % 4 == 0]
    paid = Evaluator(3).evaluate(x, ids, labels, picks)["last_100"]
    assert paid["paid"] and paid["interval"][0] > 0.1
    flat = {p: labels[p] % 2 for p in ids}  # no new class: the last 100 add nothing the first 160 lacked
    stopped = Evaluator(3).evaluate({p: (centres[flat[p]] + rng.normal(size=16)).astype(np.float32) for p in ids},
                                    ids, flat, picks)["last_100"]
    assert not stopped["paid"] and stopped["interval"][0] <= 0 <= stopped["interval"][1]


def _posts(folder: Path, n: int) -> tuple[Path, dict[str, str]]:
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {f"p{i}": rng.choice(CLASSES) for i in range(n)}
    (folder / "posts.jsonl").write_text("".join(
        json.dumps({"id": p, "text": f"{rng.choice(WORDS[c])} the {rng.choice(['game', 'trip', 'news'])}"}) + "\n"
        for p, c in truth.items()))
    return folder / "posts.jsonl", truth


def _wait(session: Session, labels: int, bundle: bool = False, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = session.live.report
        scored = (r.get("bundle") or {}).get("posts")  # the bundle scores the random picks a few at a time
        if r.get("trained_on") == labels and r.get("macro_f1") is not None and (not bundle or
                                                                               scored == r["random_picks"]):
            return r
        time.sleep(0.2)
    raise AssertionError(f"the live model did not catch up: {session.live.report}")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, trained_bundle: Path):
    """A session over 240 posts with the demo bundle (synthetic training posts) as --models, 170 labels given."""
    tmp = tmp_path_factory.mktemp("live")
    posts, truth = _posts(tmp / "p", 240)
    original = queue.uncertainty_scores
    queue.uncertainty_scores = lambda *a: pytest.fail("day one: the demo bundle must not score the posts")
    try:
        session = Session.open(posts, tmp / "labels.jsonl", DEFAULT, "ann", models_dir=trained_bundle)
    finally:
        queue.uncertainty_scores = original
    asked = []
    state = session.state()
    for n in range(170):
        if n == START:  # an annotator reads each post for seconds: by then the live model has ranked
            _wait(session, START)
        pid = state["post"]["id"]
        asked.append(pid)
        state = session.label(pid, truth[pid])
    report = _wait(session, 170, bundle=True)
    yield session, truth, asked, report, tmp
    session.live.stop()


def test_the_live_order_starts_random_and_the_figures_follow(labelled):
    session, truth, asked, report, _ = labelled
    records = session.log.read()
    tags = [r["strategy"] for r in records]
    assert tags[0] == "random" and tags[:START].count("random") == START // 5  # the evaluation sample, 1 in 5
    assert set(tags[:START]) == {"random", "start"}  # no model ranks the first batch
    assert {r["id"] for r in records if r["strategy"] == "random"} <= session.live.sample
    assert queue.DEFAULT in tags  # ranked by the live model once it had START labels
    assert report["random_picks"] == tags.count("random") and report["labels"] == 170
    assert report["macro_f1"] > 0.8 and report["interval"][0] <= report["macro_f1"] <= report["interval"][1]
    assert [n for n, _ in report["curve"]] == [50, 100, 150, 170]
    assert report["last_100"]["paid"] is False  # the templates are learnt from the first 70 labels
    assert report["bundle"]["posts"] == report["random_picks"] and report["bundle_warning"]


def test_features_are_kept_and_a_restart_resumes(labelled, monkeypatch):
    session, *_, tmp = labelled
    assert len(session.live.features.x) == 240
    again = PostFeatures(tmp / "labels.jsonl.live", session.posts, tmp / "p")
    monkeypatch.setattr(PostFeatures, "compute", lambda *a: pytest.fail("a kept feature was computed again"))
    assert set(again.x) == set(session.posts)
    pid = next(iter(session.posts))
    assert np.allclose(again.x[pid], session.live.features.x[pid])
    edited = {**session.posts, pid: {**session.posts[pid], "text": "an edited post"}}
    assert pid not in PostFeatures(tmp / "labels.jsonl.live", edited, tmp / "p").x  # its text changed: not reused


def test_the_page_shows_the_live_panel(labelled, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    session, *_ = labelled
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(session, "s3cret", "127.0.0.1"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=need_chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1000, "height": 1000})
            page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url
                       else route.abort())
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/?token=s3cret")
            page.wait_for_selector("#live-curve polyline")
            text = page.inner_text("#live")
            page.locator("#live").screenshot(path=str(tmp_path / "live.png"))
            browser.close()
    finally:
        server.shutdown()
    r = session.live.report
    assert f"macro-F1 on the {r['random_picks']} random picks" in text and f"{r['macro_f1']:.3f}" in text
    assert "stopped paying" in text and "last trained bundle" in text and "dvc repro" in text


def test_the_bootstrap_is_macro_f1_on_each_resample():
    """The live figures' intervals (emocare.metrics, as the pipeline's reports) resample the picks and score
    macro-F1 on each resample; the paired one scores both models on the same resamples."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 80)
    pred = np.where(rng.random(80) < 0.6, y, rng.integers(0, 4, 80))
    other = np.where(rng.random(80) < 0.4, y, rng.integers(0, 4, 80))
    draws = np.random.default_rng(0).integers(0, 80, (metrics.BOOTSTRAP_RESAMPLES, 80))
    expected = [metrics.macro_f1(y[d], pred[d], 4) for d in draws]
    assert metrics.macro_f1_interval(y, pred, 4) == pytest.approx(np.percentile(expected, [2.5, 97.5]), abs=1e-4)
    diffs = [e - metrics.macro_f1(y[d], other[d], 4) for e, d in zip(expected, draws, strict=True)]
    paired = metrics.paired_difference(y, pred, other, 4)
    assert paired["interval"] == pytest.approx(np.percentile(diffs, [2.5, 97.5]), abs=1e-4)
    assert paired["difference"] == pytest.approx(metrics.macro_f1(y, pred, 4) - metrics.macro_f1(y, other, 4),
                                                 abs=1e-4)


def test_image_and_video_posts_get_their_frozen_towers_features(demo_dir: Path, tmp_path: Path, monkeypatch):
    from test_labelling import posts_file

    path = posts_file(demo_dir, tmp_path / "p", n=5)
    posts = {str(r["id"]): r for r in map(json.loads, path.read_text().splitlines())}
    (tmp_path / "p" / "broken.png").write_bytes(b"not an image")
    posts["broken"] = {"id": "broken", "text": "a post whose image is unreadable", "image": "broken.png"}
    vision = {"image": {"backbone": "EmoCare-ViT-Tiny-64", "pretrained": None},
              "video": {"backbone": "EmoCare-ViT-Tiny-64", "pretrained": None, "frames": 2}}
    features = PostFeatures(tmp_path / "live", posts, tmp_path / "p", vision=vision)
    features.compute(list(posts))
    dim = features._tower("image")[0].dim
    rows = {p: features.x[p] for p in posts}
    assert all(len(r) == 384 + 2 * dim for r in rows.values())
    for pid, rec in posts.items():  # each media block is there exactly when the post has that media, unit length
        for m, block in (("image", slice(384, 384 + dim)), ("video", slice(384 + dim, None))):
            has = bool(rec.get(m)) and pid != "broken"
            assert np.isclose(np.linalg.norm(rows[pid][block]), 1.0 if has else 0.0, atol=1e-4), (pid, m)
    assert list(features.media_errors) == ["broken"] and "image" in features.media_errors["broken"]
    # the towers' features sit in the media feature store: a new session reads them, the towers run no more
    again = PostFeatures(tmp_path / "live", posts, tmp_path / "p", vision=vision)
    assert all(np.allclose(again.x[p], rows[p]) for p in posts)
    spec, _ = features._tower("image")  # the same tower again (a random one here): read from the store
    image_post = next(p for p, r in posts.items() if r.get("image") and p != "broken")
    monkeypatch.setattr(spec, "encode", lambda *a: pytest.fail("a stored feature was computed again"))
    assert np.allclose(features._media(image_post, "image"), rows[image_post][384:384 + dim])
