"""`emocare trends` on a synthetic prediction file with a planted anger spike, checked as a person sees it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import dom, not_blank, screenshot
from PIL import Image

from emocare.cli import main as cli
from emocare.labels import CLASS_COLOURS, LABELS

T0 = 1704067200  # 2024-01-01, a Monday
SPIKE_WEEK, SPIKE_SUB = 9, "Brawlstars"


def synthetic_predictions(folder: Path, weeks: int = 16, per_week: int = 40) -> Path:
    """Two subreddits, steady emotions, except that anger dominates r/Brawlstars in week 9."""
    rng = np.random.default_rng(0)
    Image.new("RGB", (120, 90), (219, 68, 55)).save(folder / "angry.png")
    rows = []
    for w in range(weeks):
        for k in range(per_week):
            sub = SPIKE_SUB if k % 2 else "ClashRoyale"
            mix = [0.1, 0.1, 0.7, 0.05, 0.05] if (w == SPIKE_WEEK and sub == SPIKE_SUB) else [0.35, 0.3, 0.2, 0.1, 0.05]
            label = LABELS[rng.choice(5, p=mix)]
            probs = rng.dirichlet(np.ones(5))
            probs[LABELS.index(label)] += 2
            probs /= probs.sum()
            row = {"id": f"w{w}k{k}", "line": len(rows) + 1, "text": f"week {w} post {k}: feeling {label}",
                   "subreddit": sub, "created_utc": T0 + w * 7 * 86400 + k * 3600, "label": label,
                   "probabilities": dict(zip(LABELS, map(float, probs), strict=True)), "modalities": ["text"]}
            if label == "anger":
                row["image"] = "angry.png"
            rows.append(row)
    rows += [{"id": "broken", "line": 9998, "error": "image could not be decoded: truncated"},
             {"id": "undated", "line": 9999, "label": "joy", "probabilities": dict.fromkeys(LABELS, 0.2)}]
    path = folder / "predictions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_trends_tables_and_counts(tmp_path: Path, capsys):
    preds = synthetic_predictions(tmp_path)
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out"), "--group", "subreddit", "--min-confidence",
                "0.3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["read"] == 642 and summary["errors"] == 1 and summary["undated"] == 1
    assert summary["read"] == summary["used"] + summary["errors"] + summary["undated"] + summary["low_confidence"]
    assert summary["periods"] == 16 and summary["groups"] == 2
    assert summary["top_move"]["emotion"] == "anger" and summary["top_move"]["period"] == "2024-03-04"
    table = pd.read_csv(tmp_path / "out" / "trends.csv")
    assert set(table["emotion"]) == set(LABELS) and len(table) == 2 * 16 * 5
    assert table["count"].sum() == summary["used"]
    per_period = table.groupby(["group", "period"]).agg(count=("count", "sum"), posts=("posts", "first"),
                                                       share=("share", "sum"))
    assert (per_period["count"] == per_period["posts"]).all() and np.allclose(per_period["share"], 1, atol=1e-3)

    assert cli(["trends", str(preds), "-o", str(tmp_path / "monthly"), "--by", "month"]) == 0
    monthly = json.loads(capsys.readouterr().out)
    assert monthly["groups"] == 1 and monthly["periods"] == 4 and monthly["low_confidence"] == 0


def test_trends_from_parquet_and_bad_input(tmp_path: Path, capsys):
    preds = synthetic_predictions(tmp_path)
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    assert cli(["trends", str(tmp_path / "p.parquet"), "-o", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["used"] == 640
    assert cli(["trends", str(preds), "-o", str(tmp_path / "x"), "--group", "flair"]) == 1
    assert "no such column" in capsys.readouterr().err
    (tmp_path / "m.jsonl").write_text('{"id": "a", "text": "x"}\n')
    assert cli(["trends", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "x")]) == 1
    assert "emocare predict" in capsys.readouterr().err


@pytest.mark.browser
def test_report_in_a_browser_names_the_spike(tmp_path: Path, capsys):
    preds = synthetic_predictions(tmp_path)
    out = tmp_path / "out"
    assert cli(["trends", str(preds), "-o", str(out), "--group", "subreddit"]) == 0
    page = (out / "report.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not load anything from the network"

    html = dom(out / "report.html")
    spikes = re.search(r'<table id="spikes">(.*?)</table>', html, re.S).group(1)
    first = re.findall(r"<tr>(.*?)</tr>", spikes, re.S)[1]  # after the header
    assert SPIKE_SUB in first and "2024-03-04" in first and "Anger" in first and "▲" in first
    examples = re.search(r'<table id="examples">(.*?)</table>', html, re.S).group(1)
    assert len(re.findall(r"<tr>", examples)) == 1 + 16  # header + one row per week
    assert examples.count('<img src="data:image/jpeg;base64,') == 16  # an anger example each week, with its image

    pixels = screenshot(out / "report.html", tmp_path / "shot.png")
    assert not_blank(pixels)
    anger = np.array(Image.new("RGB", (1, 1), CLASS_COLOURS["anger"]).getpixel((0, 0)))
    top = pixels[: pixels.shape[0] * 2 // 5]  # the chart; the tables (and their red thumbnails) come below
    near = (np.abs(top.astype(int) - anger).sum(-1) < 40).mean()
    assert near > 0.005, f"the chart's anger area is not on screen ({near:.4f} of the pixels)"
    chart = np.asarray(Image.open(out / "trends.png").convert("RGB"))
    assert not_blank(chart)


def test_predictions_without_any_date_are_a_clear_error(tmp_path: Path, capsys):
    """No created_utc column at all (a manifest without dates): exit 1 with the counts, no traceback."""
    probs = {c: 0.2 for c in LABELS}
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": str(i), "label": "joy", "probabilities": probs}) + "\n"
                             for i in range(5)))
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "no dated predictions" in err and "'undated': 5" in err and "Traceback" not in err
