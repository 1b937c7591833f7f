"""The CSV importer on real MELD text (the Reddit importer: test_reddit.py)."""

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
