"""The CSV importer on real MELD text and the Reddit importer on hand-written post objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED

from emocare.cli import main as cli
from emocare.data.validate import validate_manifest

MELD = SHARED / "data" / "meld" / "dev_sent_emo.csv"


@pytest.mark.skipif(not MELD.exists(), reason=f"MELD text not found at {MELD} (../shared beside the repository)")
def test_import_meld_csv_then_validate(tmp_path: Path, capsys):
    out = tmp_path / "meld.jsonl"
    assert cli(["import", "csv", str(MELD), "--text-col", "Utterance", "--label-col", "Emotion",
                "--label-map", "disgust=neutral,fear=neutral", "--id-col", "Sr No.", "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 1109
    assert set(summary["labels"]) == {"neutral", "joy", "anger", "surprise", "sadness"}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["Speaker"] and "Utterance" not in records[0]
    result = validate_manifest(out)
    assert result.read == 1109 == len(result.kept) + len(result.quarantined)
    assert all(p.modalities == ["text"] for p in result.kept)


def test_import_csv_without_label_map_keeps_unknown_labels_for_quarantine(tmp_path: Path):
    csv = tmp_path / "x.tsv"
    csv.write_text("txt\temo\nhello\tjoy\nugh\tdisgust\n")
    out = tmp_path / "m.jsonl"
    assert cli(["import", "csv", str(csv), "--text-col", "txt", "--label-col", "emo", "-o", str(out)]) == 0
    result = validate_manifest(out)
    assert len(result.kept) == 1 and result.quarantined[0]["reasons"][0].startswith("unknown_label")


def test_import_csv_names_a_missing_column(tmp_path: Path, capsys):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    assert cli(["import", "csv", str(csv), "--text-col", "text", "-o", str(tmp_path / "o.jsonl")]) == 1
    assert "text" in capsys.readouterr().err


def test_import_reddit_links_media_on_disk(tmp_path: Path, capsys):
    media = tmp_path / "media"
    media.mkdir()
    (media / "abc1.png").write_bytes(b"png")
    (media / "abc2.mp4").write_bytes(b"mp4")
    posts = [
        {"id": "abc1", "title": "Finally got Leon!", "selftext": "", "subreddit": "Brawlstars",
         "created_utc": 1700000000, "url": "https://i.redd.it/x.png", "post_hint": "image", "is_video": False},
        {"kind": "t3", "data": {"id": "abc2", "title": "clip", "selftext": "watch this", "is_video": True,
                                "media": {"reddit_video": {"fallback_url": "https://v.redd.it/x"}}}},
        {"id": "abc3", "title": "me rn:", "selftext": "", "url": "https://i.redd.it/y.jpg",
         "preview": {"images": [{"source": {"url": "https://x"}}]}},
        {"id": "abc4", "title": "Question", "selftext": "[removed]", "is_video": False},
    ]
    src = tmp_path / "posts.jsonl"
    src.write_text("\n".join(json.dumps(p) for p in posts))
    out = tmp_path / "out" / "manifest.jsonl"
    assert cli(["import", "reddit", str(src), "--media-dir", str(media), "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"posts": 4, "with_video": 1, "with_image": 1, "text_only": 1, "media_missing_text_only": 1}
    recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert recs["abc1"]["image"] == "../media/abc1.png" and recs["abc1"]["subreddit"] == "Brawlstars"
    assert recs["abc2"]["video"] == "../media/abc2.mp4" and recs["abc2"]["text"] == "clip\n\nwatch this"
    assert "image" not in recs["abc3"] and recs["abc4"]["text"] == "Question"
