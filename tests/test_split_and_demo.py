"""Stratified split, leakage, class weights, dataset stats and the demo generator."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from emocare.data.demo import CLASS_MIX, MODALITY_MIX, build_if_used, generate, summary
from emocare.data.manifest import Post, load_posts
from emocare.data.split import SPLITS, class_weights, content_key, dataset_stats, stratified_split
from emocare.labels import DEFAULT, combo_name

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_class_weights_on_the_original_study_counts():
    counts = {"neutral": 1580, "joy": 1456, "anger": 1328, "surprise": 367, "sadness": 268}
    labels = [c for c, n in counts.items() for _ in range(n)]
    assert [round(w, 4) for w in class_weights(labels, DEFAULT)] == [0.6328, 0.6867, 0.7529, 2.7243, 3.7306]


@pytest.fixture(scope="module")
def demo_posts(tmp_path_factory) -> list[Post]:
    d = tmp_path_factory.mktemp("split-demo")
    generate(d, posts=400, seed=11)
    return [Post(id=r.id, text=r.text, image=r.image, video=r.video, label=r.label)
            for r in load_posts(d / "manifest.jsonl")]


def test_every_class_and_modality_in_every_split_within_one_post(demo_posts):
    assignment = stratified_split(demo_posts, FRACTIONS, seed=5)
    n = len(demo_posts)
    sizes = Counter(assignment.values())
    for s in SPLITS:
        assert abs(sizes[s] - n * FRACTIONS[s]) <= 1
    for key in [lambda p: p.label, lambda p: combo_name(p.modalities)]:
        groups = Counter(key(p) for p in demo_posts)
        for value, total in groups.items():
            per_split = Counter(assignment[p.id] for p in demo_posts if key(p) == value)
            for s in SPLITS:
                assert per_split[s] >= 1, (value, s)
                assert abs(per_split[s] - total * FRACTIONS[s]) <= 1.0 + 1e-9, (value, s, per_split[s], total)


def test_split_is_deterministic(demo_posts):
    assert stratified_split(demo_posts, FRACTIONS, 5) == stratified_split(demo_posts, FRACTIONS, 5)
    assert stratified_split(demo_posts, FRACTIONS, 5) != stratified_split(demo_posts, FRACTIONS, 6)


def test_same_content_never_crosses_splits(demo_posts, tmp_path):
    img = demo_posts[[p.image is not None for p in demo_posts].index(True)].image
    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(img).read_bytes())
    dupes = [Post(id=f"dup{i}", text="Me  RN:" if i % 2 else "me rn:", image=str(copy), label="joy") for i in range(9)]
    texts = [Post(id=f"t{i}", text="Same text", label="anger") for i in range(7)]
    posts = demo_posts + dupes + texts
    assignment = stratified_split(posts, FRACTIONS, 5)
    assert len({assignment[p.id] for p in dupes}) == 1
    assert len({assignment[p.id] for p in texts}) == 1
    keys = {}
    for p in posts:
        keys.setdefault(content_key(p), set()).add(assignment[p.id])
    assert all(len(s) == 1 for s in keys.values())


def test_stats_report_totals_and_weights(demo_posts):
    assignment = stratified_split(demo_posts, FRACTIONS, 5)
    stats = dataset_stats(demo_posts, assignment, DEFAULT)
    assert stats["total"] == len(demo_posts) == sum(v["count"] for v in stats["splits"].values())
    train = [p.label for p in demo_posts if assignment[p.id] == "train"]
    assert list(stats["class_weights"].values()) == [round(w, 4) for w in class_weights(train, DEFAULT)]
    assert sum(v["count"] for v in stats["classes"].values()) == len(demo_posts)


def test_demo_distributions_match_the_original_study(tmp_path):
    s = summary(generate(tmp_path, posts=1250, seed=7))
    for c in DEFAULT:
        assert abs(s["classes"][c] - CLASS_MIX[c]) <= 0.01
    for m in MODALITY_MIX:
        assert abs(s["modalities"][m] - MODALITY_MIX[m]) <= 0.01


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_bytes(tmp_path):
    generate(tmp_path / "a", posts=60, seed=1)
    generate(tmp_path / "b", posts=60, seed=1)
    generate(tmp_path / "c", posts=60, seed=2)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    media = list((tmp_path / "a" / "media").iterdir())
    assert {f.suffix for f in media} == {".png", ".mp4"}


def test_the_demo_set_is_built_only_when_the_pipeline_reads_it(tmp_path):
    demo = tmp_path / "data" / "demo"
    said = build_if_used(demo, tmp_path / "data" / "ours", posts=20, seed=1)
    assert "skipped" in said and not (demo / "manifest.jsonl").exists()
    assert "data.root is" in (demo / "NOT_BUILT.md").read_text()
    said = build_if_used(demo, demo, posts=20, seed=1)
    assert said.startswith("wrote") and summary(demo / "manifest.jsonl")["posts"] == 20
