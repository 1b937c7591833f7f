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
from emocare.labels import DEFAULT_LABELS as LABELS
from emocare.labels import KNOWN_COLOURS as CLASS_COLOURS

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
            row["attribution"] = {}
            if label == "anger":
                row.update(image="angry.png", modalities=["text", "image"], attribution={"text": 0.1, "image": 0.3})
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
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")  # attribution: a struct, null where a post lacks a key
    assert cli(["trends", str(tmp_path / "p.parquet"), "-o", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["used"] == 640
    assert "why: text +10 pts &middot; image +30 pts" in (tmp_path / "out" / "report.html").read_text()
    assert cli(["trends", str(preds), "-o", str(tmp_path / "x"), "--group", "flair"]) == 1
    assert "no such column" in capsys.readouterr().err
    (tmp_path / "m.jsonl").write_text('{"id": "a", "text": "x"}\n')
    assert cli(["trends", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "x")]) == 1
    assert "emocare predict" in capsys.readouterr().err


def test_examples_show_the_text_read_from_their_images(tmp_path: Path):
    preds = synthetic_predictions(tmp_path)
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    for r in rows:
        if r.get("image"):
            r["ocr_text"] = "WHY IS MATCHMAKING <BROKEN>"  # what a text.ocr bundle's predictions carry
    preds.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    examples = re.search(r'<table id="examples">(.*?)</table>', page, re.S).group(1)
    assert examples.count('class="ocr"') == 16 and "WHY IS MATCHMAKING &lt;BROKEN&gt;" in examples


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
    assert "<td>yes</td>" in first  # the trailing mean lies outside the spike week's interval
    examples = re.search(r'<table id="examples">(.*?)</table>', html, re.S).group(1)
    assert len(re.findall(r"<tr>", examples)) == 1 + 16  # header + one row per week
    assert examples.count('<img src="data:image/jpeg;base64,') == 16  # an anger example each week, with its image

    pixels = screenshot(out / "report.html", tmp_path / "shot.png")
    assert not_blank(pixels)
    anger = np.array(Image.new("RGB", (1, 1), CLASS_COLOURS["anger"]).getpixel((0, 0)))
    top = pixels[: pixels.shape[0] * 2 // 5]  # the chart; the tables (and their red thumbnails) come below
    near = (np.abs(top.astype(int) - anger).sum(-1) < 40).mean()
    assert near > 0.002, f"the chart's anger line is not on screen ({near:.4f} of the pixels)"
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


def _weekly(folder: Path, weeks: list[int], per_week: int, labels: list[str] = LABELS) -> Path:
    rows = [{"id": f"w{w}k{k}", "line": i, "label": labels[k % len(labels)], "created_utc": T0 + w * 7 * 86400 + k,
             "probabilities": {c: float(c == labels[k % len(labels)]) for c in labels}}
            for i, (w, k) in enumerate((w, k) for w in weeks for k in range(per_week))]
    path = folder / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _figure(preds: Path):
    from emocare.trends import chart_figure, load_predictions, period_table, prepare

    df, classes, _ = load_predictions(preds)
    return chart_figure(period_table(prepare(df, classes, "week", None, 0.0)[0], "week", classes, "pcc"), "week",
                        classes)


def test_an_empty_week_is_a_gap_and_every_volume_bar_is_drawn(tmp_path: Path, capsys):
    import matplotlib.dates as mdates

    preds = _weekly(tmp_path, [0, 1, 3, 4, 5], per_week=10)  # nothing in week 2
    fig = _figure(preds)
    top, bottom = fig.axes[:2]
    assert len(top.collections[0].get_paths()) == 2  # the stack breaks at the empty week, no dip to 0 %
    bars, (lo, hi) = bottom.containers[0].patches, bottom.get_xlim()
    assert len(bars) == 6 and all(lo <= b.get_x() and b.get_x() + b.get_width() <= hi for b in bars)
    assert abs(hi - lo - 6 * 7) < 1e-3  # six whole weeks, the last one's bar included
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    table = pd.read_csv(tmp_path / "out" / "trends.csv")
    empty = table[table["period"] == "2024-01-15"]
    assert (empty["count"] == 0).all() and empty["share"].isna().all() and (empty["posts"] == 0).all()
    assert mdates.num2date(lo).date().isoformat() == "2024-01-01"


def test_one_week_gets_a_one_week_axis(tmp_path: Path):
    lo, hi = _figure(_weekly(tmp_path, [3], per_week=10)).axes[1].get_xlim()
    assert 6.9 < hi - lo <= 7  # not matplotlib's default years around a single date


def test_min_posts_is_named_when_it_empties_the_moves_table(tmp_path: Path, capsys):
    preds = _weekly(tmp_path, list(range(8)), per_week=5)
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out"), "--min-posts", "10"]) == 0
    capsys.readouterr()
    page = (tmp_path / "out" / "report.html").read_text()
    assert "0 of 8 periods have at least 10 posts (--min-posts)" in page and "Not enough periods" not in page


def test_unreadable_predictions_are_a_clear_error(tmp_path: Path, capsys):
    (tmp_path / "p.parquet").write_bytes(b"PAR1 not really")
    assert cli(["trends", str(tmp_path / "p.parquet"), "-o", str(tmp_path / "out")]) == 1
    assert "not a readable predictions file" in capsys.readouterr().err


def test_the_bundles_classes_colours_and_demo_warning_reach_the_report(tmp_path: Path, capsys):
    from emocare.bundle import provenance_path
    from emocare.labels import LabelSet

    classes = LabelSet.of(["positive", "negative"], display={"positive": "Upbeat"})
    preds = _weekly(tmp_path, list(range(4)), per_week=10, labels=list(classes))
    provenance_path(preds).write_text(json.dumps({"label_set": classes.to_dict(), "training_data": {
        "manifest": "data/demo/manifest.jsonl", "train_posts": 100, "synthetic_train_posts": 100}}))
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out")]) == 0
    assert "synthetic demo set" in capsys.readouterr().err
    assert set(pd.read_csv(tmp_path / "out" / "trends.csv")["emotion"]) == {"positive", "negative"}
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="warning"' in page and "Upbeat" in page and classes.colours["negative"] in page


def test_hostile_rows_are_counted_not_charted(tmp_path: Path, capsys):
    """Dates of 9999, year 1 and 1e20, NaN and missing probabilities, a class the bundle lacks: each row is left
    out and counted under its reason, quickly, and the periods' shares still sum to 1."""
    preds = _weekly(tmp_path, [0, 1, 2], per_week=10)
    good = json.loads(preds.read_text().splitlines()[0])
    nan = dict(good["probabilities"], joy=float("nan"))
    hostile = [dict(good, id="far", created_utc=253402300799), dict(good, id="old", created_utc=-62135596800),
               dict(good, id="huge", created_utc=1e20), dict(good, id="word", created_utc="soon"),
               dict(good, id="nan", probabilities=nan), dict(good, id="gone", probabilities={"anger": 1.0}),
               dict(good, id="alien", probabilities={**good["probabilities"], "awe": 0.0}),
               dict(good, id="awe", label="awe"), dict(good, id="list", probabilities=[0.2] * 5),
               dict(good, id="sum", probabilities=dict.fromkeys(LABELS, 0.5))]
    with preds.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in hostile)  # json writes NaN, as a careless producer would
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["read"] == 40 and summary["used"] == 30 and summary["periods"] == 3
    assert summary["bad_dates"] == 3 and summary["undated"] == 1 and summary["malformed"] == 6
    named = summary["examples_left_out"]
    assert named["bad_dates"][0].startswith("far: created_utc 2.534") and "awe: a label" in " ".join(named["malformed"])
    assert any(x.startswith("alien: a probability for a class the bundle does not have") for x in named["malformed"])
    table = pd.read_csv(tmp_path / "out" / "trends.csv")
    assert np.allclose(table.groupby("period")["share"].sum(), 1, atol=1e-3) and table["count"].sum() == 30
    page = (tmp_path / "out" / "report.html").read_text()
    assert "6 with unusable probabilities" in page and "3 dated\noutside 1970-01-01 to 2100-01-01" in page


def test_all_nan_predictions_are_a_clear_error_before_any_file(tmp_path: Path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": str(i), "label": "joy", "created_utc": T0 + i,
                                         "probabilities": dict.fromkeys(LABELS, float("nan"))}) + "\n"
                             for i in range(4)))
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "'malformed': 4" in err and "0: a probability missing or not a number" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_span_of_too_many_periods_names_its_first_and_last_post(tmp_path: Path, capsys):
    preds = _weekly(tmp_path, [0], per_week=2)
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    rows[1]["created_utc"] = 4000000000  # 2096: in range, but 3,800 weeks after the first post
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out"), "--by", "day"]) == 1
    err = capsys.readouterr().err
    assert "post w0k0 of 2024-01-01 to post w0k1 of 2096-10-02" in err and "Traceback" not in err
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out"), "--by", "month"]) == 0  # 874 months: fine


def test_partial_periods_are_marked_and_ticks_fall_on_the_tables_periods(tmp_path: Path, capsys):
    """Posts from a Wednesday to a Friday four weeks later: the first and last weeks are partial (in trends.csv,
    on the page and shaded on the chart), the middle ones are not; every tick is a period the tables name."""
    import matplotlib.dates as mdates

    wednesday, friday = T0 + 2 * 86400, T0 + 4 * 7 * 86400 + 4 * 86400
    rows = [{"id": str(i), "label": LABELS[i % 5], "created_utc": int(t),
             "probabilities": {c: float(c == LABELS[i % 5]) for c in LABELS}}
            for i, t in enumerate(np.linspace(wednesday, friday, 60))]
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    table = pd.read_csv(tmp_path / "out" / "trends.csv")
    weeks = table.groupby("period")["partial"].first()
    assert weeks.to_dict() == {"2024-01-01": True, "2024-01-08": False, "2024-01-15": False, "2024-01-22": False,
                               "2024-01-29": True}
    assert (table["estimator"] == "pcc").all() and table["interval"].str.contains("not the classifier's error").all()
    page = (tmp_path / "out" / "report.html").read_text()
    assert "partial (the posts cover only part of it, shaded on the chart): 2024-01-01, 2024-01-29" in page
    assert 'id="estimator">Estimator: pcc' in page and "Its 95% interval covers" in page
    fig = _figure(preds)
    for ax in fig.axes[:2]:
        ticks = [mdates.num2date(t).date().isoformat() for t in ax.get_xticks()]
        assert ticks == list(weeks.index) and [t.get_text() for t in ax.get_xticklabels()] == ticks
    assert sum(t.get_text() == "partial" for t in fig.axes[0].texts) == 2


def test_em_is_the_default_where_the_bundle_kept_its_validation_posts(tmp_path: Path, capsys):
    """With the bundle's validation statistics beside the predictions, the shares are em's and trends.csv and the
    page say that the interval holds the classifier's error; without them, pcc, said on stderr."""
    from emocare.bundle import provenance_path
    from emocare.quantify import validation_stats

    preds = _weekly(tmp_path, [0, 1, 2], per_week=40)
    rng = np.random.default_rng(0)
    labels = rng.choice(5, 300)
    probs = np.full((300, 5), 0.1)
    probs[np.arange(300), labels] = 0.6
    provenance_path(preds).write_text(json.dumps({"validation": validation_stats(probs, labels)}))
    assert cli(["trends", str(preds), "-o", str(tmp_path / "em")]) == 0
    assert json.loads(capsys.readouterr().out)["quantifier"] == "em"
    table = pd.read_csv(tmp_path / "em" / "trends.csv")
    assert (table["estimator"] == "em").all() and table["interval"].str.contains("and the classifier's error").all()
    assert "Estimator: em, the calibrated probabilities re-weighted" in (tmp_path / "em" / "report.html").read_text()
    provenance_path(preds).unlink()
    assert cli(["trends", str(preds), "-o", str(tmp_path / "pcc")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["quantifier"] == "pcc" and "not the default em" in captured.err
