"""Manifest parsing and every validation reason, on hand-made bad files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emocare.cli import main as cli
from emocare.data.manifest import ManifestError, load_posts
from emocare.data.validate import Rules, validate_manifest, write_validation
from emocare.labels import DEFAULT, LabelSet, parse_label_map
from emocare.media.video import write_video


def _png(path: Path, size: int = 32) -> None:
    cv2.imwrite(str(path), np.full((size, size, 3), 120, np.uint8))


@pytest.fixture()
def bad_dataset(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    _png(media / "good.png")
    write_video(media / "good.mp4", [np.full((32, 32, 3), v, np.uint8) for v in range(0, 240, 20)])
    (media / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    full = (media / "good.png").read_bytes()
    (media / "truncated.png").write_bytes(full[: len(full) // 2])
    big = (media / "good.mp4").read_bytes()
    (media / "truncated.mp4").write_bytes(big[: len(big) // 3])
    (media / "empty.png").write_bytes(b"")
    (tmp_path.parent / "outside.png").write_bytes(full)
    lines = [
        {"id": "ok1", "text": "so happy", "image": "media/good.png", "label": "Joy", "subreddit": "Brawlstars"},
        {"id": "ok2", "text": "", "video": "media/good.mp4", "label": "SAD"},
        {"id": "ok3", "text": "just text", "label": "neutral/other"},
        {"id": "corrupt", "text": "x", "image": "media/corrupt.png", "label": "joy"},
        {"id": "trunc_img", "text": "x", "image": "media/truncated.png", "label": "joy"},
        {"id": "trunc_vid", "text": "x", "video": "media/truncated.mp4", "label": "joy"},
        {"id": "zero", "text": "x", "image": "media/empty.png", "label": "joy"},
        {"id": "escape", "text": "x", "image": "../outside.png", "label": "joy"},
        {"id": "absolute", "text": "x", "image": str(media / "good.png"), "label": "joy"},
        {"id": "missing", "text": "x", "image": "media/nope.png", "label": "joy"},
        {"id": "ok1", "text": "dup", "label": "joy"},
        {"id": "badlabel", "text": "x", "label": "disgust"},
        {"id": "empty", "text": "  ", "label": "joy"},
        {"text": "no id", "label": "joy"},
    ]
    with open(tmp_path / "manifest.jsonl", "wb") as f:
        for rec in lines:
            f.write((json.dumps(rec) + "\n").encode())
        f.write(b'{"id": "latin1", "text": "caf\xe9", "label": "joy"}\n')
    return tmp_path / "manifest.jsonl"


def test_every_reason_is_reported_and_counts_add_up(bad_dataset: Path, tmp_path: Path):
    result = validate_manifest(bad_dataset)
    assert [p.id for p in result.kept] == ["ok1", "ok2", "ok3"]
    assert result.kept[1].label == "sadness" and result.kept[2].label == "neutral"
    assert result.kept[0].meta == {"subreddit": "Brawlstars"}
    reasons = {(q.get("record") or {}).get("id", f"line{q['line']}"): q["reasons"] for q in result.quarantined}
    expect = {"corrupt": "undecodable_image", "trunc_img": "truncated_image", "trunc_vid": "video_unopenable",
              "zero": "zero_byte_file", "escape": "path_escapes", "absolute": "absolute_path",
              "missing": "missing_file", "ok1": "duplicate_id", "badlabel": "unknown_label", "empty": "empty_post",
              "line14": "invalid_schema", "line15": "not_utf8"}
    for key, code in expect.items():
        assert any(r.startswith(code) for r in reasons[key]), (key, reasons[key])
    counts = result.counts
    assert counts["read"] == 15 == counts["kept"] + counts["quarantined"]
    assert sum(counts["reasons"].values()) >= counts["quarantined"]
    assert {"zero_byte_file", "undecodable_image", "video_unopenable"} <= set(counts["reasons"])  # generic keys
    assert all(" " not in key for key in counts["reasons"])
    assert "zero_byte_file: image media/empty.png" in reasons["zero"]

    out = tmp_path / "out"
    write_validation(result, out / "posts.jsonl", out / "quarantine.jsonl", out / "validation.json")
    reloaded = load_posts(out / "posts.jsonl")
    assert [p.id for p in reloaded] == ["ok1", "ok2", "ok3"]
    assert Path(reloaded[0].image).is_file() and Path(reloaded[1].video).is_file()


def test_non_json_line_fails_with_its_line_number(tmp_path: Path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "text": "hi", "label": "joy"}\n\n{"id": "b", oops}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:3: not valid JSON"):
        validate_manifest(m)


def test_cli_validate_writes_the_three_files(bad_dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli-out"
    assert cli(["validate", str(bad_dataset), "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"posts.jsonl", "quarantine.jsonl", "validation.json"}
    report = json.loads((out / "validation.json").read_text())
    assert report["kept"] == 3 and report["quarantined"] == 12
    assert len((out / "quarantine.jsonl").read_text().splitlines()) == 12


def test_cli_reports_a_broken_manifest_without_a_traceback(tmp_path: Path, capsys):
    m = tmp_path / "m.jsonl"
    m.write_text("not json\n")
    assert cli(["validate", str(m), "-o", str(tmp_path / "o")]) == 1
    assert "m.jsonl:1" in capsys.readouterr().err


def test_image_pixel_limit(tmp_path: Path):
    _png(tmp_path / "big.png", size=200)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "text": "t", "image": "big.png", "label": "joy"}) + "\n")
    result = validate_manifest(tmp_path / "m.jsonl", Rules(max_pixels=100 * 100))
    assert result.quarantined[0]["reasons"][0].startswith("image_too_large")


def test_label_aliases_and_maps():
    assert DEFAULT.normalise("JOY") == "joy"
    assert DEFAULT.normalise("Neutral/Other") == "neutral"
    assert DEFAULT.normalise("disgust") is None
    assert DEFAULT.normalise("Disgust", parse_label_map("disgust=neutral, fear=neutral")) == "neutral"
    ekman = LabelSet.of(["neutral", "joy", "anger", "surprise", "sadness", "fear", "disgust"])
    assert ekman.normalise("Disgust") == "disgust" and ekman.normalise("happy") == "joy"  # aliases into the set
    assert LabelSet.of(["positive", "negative"]).normalise("happy") is None  # an alias outside the set: none
    with pytest.raises(ValueError):
        parse_label_map("disgust")


def test_unlabelled_posts_are_accepted_for_prediction(tmp_path: Path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "text": "t"}) + "\n")
    assert len(validate_manifest(tmp_path / "m.jsonl", Rules(require_label=False)).kept) == 1
    assert validate_manifest(tmp_path / "m.jsonl").quarantined[0]["reasons"][0].startswith("missing_label")


def test_text_length_and_dates_are_checked(tmp_path: Path):
    recs = [{"id": "long", "text": "x" * 41_000, "label": "joy"},
            {"id": "iso", "text": "t", "label": "joy", "created_utc": "2024-05-27T00:00:00+00:00"},
            {"id": "str", "text": "t", "label": "joy", "created_utc": "1716768000"},
            {"id": "bad", "text": "t", "label": "joy", "created_utc": "soon"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    result = validate_manifest(tmp_path / "m.jsonl")
    assert [p.meta["created_utc"] for p in result.kept] == [1716768000, 1716768000]
    reasons = {q["record"]["id"]: q["reasons"] for q in result.quarantined}
    assert reasons["long"] == ["text_too_long: 41,000 characters, over the limit of 40,302"]
    assert reasons["bad"][0].startswith("invalid_date: 'created_utc' 'soon' is not a Unix time")
    assert len(validate_manifest(tmp_path / "m.jsonl", Rules(max_text_chars=50_000)).kept) == 3


def test_an_overlong_manifest_line_is_quarantined_not_read_whole(tmp_path: Path, monkeypatch):
    import emocare.data.manifest as manifest

    monkeypatch.setattr(manifest, "MAX_LINE_BYTES", 1000)
    lines = [json.dumps({"id": "a", "text": "t", "label": "joy"}), json.dumps({"id": "b", "text": "y" * 5000})]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    result = validate_manifest(tmp_path / "m.jsonl")
    assert result.counts == {"read": 2, "kept": 1, "unlabelled": 0, "quarantined": 1,
                             "reasons": {"too_long": 1}}
    assert result.quarantined[0]["line"] == 2


@pytest.mark.parametrize("size", [1, 3, 7, 64])
def test_bounded_lines_splits_any_chunking_the_same(size: int):
    from emocare.io import bounded_lines

    data = b"ab\n\ncdefgh\nij\nklmnopqrstu\nlast"
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    assert list(bounded_lines(chunks, max_bytes=6)) == [
        (1, b"ab", True), (2, b"", True), (3, b"cdefgh", True), (4, b"ij", True), (5, None, True), (6, b"last", False)]
