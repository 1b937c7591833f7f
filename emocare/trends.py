"""`emocare trends`: how a community's emotions move over time, from a predictions file.

Writes ``trends.csv`` (per emotion, period and group: the posts it is the top label of, and its
estimated share with a bootstrap interval), ``trends.png`` (the shares over time per group, each
with its interval as a band, post volume below) and ``report.html``: one self-contained page
(images inline, no network) with the chart, the periods whose emotion shares moved most against
their trailing average ("anger spiked the week of the update"), whether each move lies outside its
interval, and the most confident example posts per emotion and period with their text and a thumbnail.

A share is a quantification (:mod:`emocare.quantify`) from the calibrated probabilities, not a count
of top labels, which would carry the classifier's bias toward the classes training weighted up.

Rows with an ``error``, without ``created_utc`` or below ``min_confidence`` are left out and
counted: read = used + errors + undated + low_confidence. The classes, their names and colours come
from the bundle that wrote the predictions (``<predictions>.models.json``, see
:func:`emocare.bundle.provenance_path`), else from the probabilities themselves. A period without
posts has no share: the chart leaves a gap there and ``trends.csv`` an empty ``share``.
"""

from __future__ import annotations

import base64
import html
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from emocare.bundle import demo_warning, evaluation_line, evaluation_warning, provenance_path
from emocare.gallery import attribution_line, ocr_line
from emocare.io import atomic_path, read_json, write_json, write_text
from emocare.labels import NAME, LabelSet
from emocare.media.thumbs import thumbnail
from emocare.quantify import DEFAULT, DESCRIPTIONS, LEVEL, METHODS, NEEDS_STATS, estimate, interval, interval_covers

PERIODS = {"day": "D", "week": "W", "month": "M"}
DATES = ("1970-01-01", "2100-01-01")  # a created_utc outside (a post dated 9999, or year 1) is a bad date, counted
MAX_PERIODS = 5000  # more periods than this from well-dated posts is an error naming the first and last post
LEFT_OUT = ("errors", "malformed", "undated", "bad_dates", "low_confidence")
EXAMPLES_NAMED = 5
PROBABILITY_SUM_TOLERANCE = 0.01  # predictions round each probability to 4 places
MAX_GROUPS_CHARTED = 6
MAX_TICKS = 14
THUMB_PX = 96


def load_predictions(path: str | Path) -> tuple[pd.DataFrame, LabelSet, dict]:
    """A predictions file (``.jsonl`` or ``.parquet``) with one probability column per class (``p_<class>``),
    its classes and the record of the bundle that wrote it (``{}`` when there is none). A predicted row whose
    probabilities are unusable gets the reason in ``malformed`` (:func:`_malformed`); the others have None there."""
    path = Path(path)
    if path.suffix not in (".parquet", ".jsonl"):
        raise ValueError(f"{path}: expected a .jsonl or .parquet predictions file (from `emocare predict`)")
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} not found")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True, dtype=False)
    except Exception as e:  # noqa: BLE001 - pandas and pyarrow raise many types for one thing: an unreadable file
        raise ValueError(f"{path}: not a readable predictions file ({type(e).__name__}: {e})") from None
    if "probabilities" not in df:
        raise ValueError(f"{path}: no 'probabilities' column: is this the output of `emocare predict --manifest`?")
    given = df.pop("probabilities")
    probs = [p if isinstance(p, dict) else {} for p in given]
    origin = read_json(provenance_path(path)) if provenance_path(path).is_file() else {}
    if origin.get("label_set"):
        classes = LabelSet.from_dict(origin["label_set"])
    else:
        # the classes most rows give (not the first row's: one odd row must not make every other row malformed)
        sets = Counter(tuple(p) for p in probs if len(p) > 1 and all(isinstance(c, str) and NAME.match(c) for c in p))
        if not sets:
            raise ValueError(f"{path}: no row has probabilities: nothing was predicted")
        classes = LabelSet.of(list(sets.most_common(1)[0][0]))
    table = pd.DataFrame(probs, index=df.index)
    for c in classes:
        df[f"p_{c}"] = pd.to_numeric(table[c], errors="coerce") if c in table else np.nan
    df["malformed"] = _malformed(df, table, classes, given)
    return df, classes, origin


def _malformed(df: pd.DataFrame, table: pd.DataFrame, classes: LabelSet, given: pd.Series) -> pd.Series:
    """Why each row's prediction cannot be counted (None where it can): probabilities that are not an object,
    name a class the bundle does not have, miss one or are not a number in [0, 1], or do not sum to 1; or a label
    that is not one of the classes. Counting such a row would skew its period's shares (NaN read as 0 made a
    period's shares sum to 0.96), so it is left out and counted."""
    cols = [f"p_{c}" for c in classes]
    values = df[cols].to_numpy(float)
    total = np.nansum(values, axis=1)
    extra = [c for c in table.columns if c not in classes]
    unknown = table[extra].notna().any(axis=1) if extra else pd.Series(False, index=df.index)
    label = df["label"] if "label" in df else pd.Series(None, index=df.index, dtype=object)
    reasons = [
        (~given.map(lambda p: isinstance(p, dict)), "probabilities are not an object of class: probability"),
        (unknown, f"a probability for a class the bundle does not have (its classes: {', '.join(classes)})"),
        (label.notna() & ~label.isin(list(classes)), "a label that is not one of the bundle's classes"),
        (pd.Series(~((values >= 0) & (values <= 1)).all(axis=1), index=df.index),
         "a probability missing or not a number in [0, 1]"),
        (pd.Series(np.abs(total - 1) > PROBABILITY_SUM_TOLERANCE, index=df.index),
         "probabilities that do not sum to 1"),
    ]
    out = pd.Series(None, index=df.index, dtype=object)
    for bad, why in reversed(reasons):  # the first reason that applies is the one given
        out[bad.to_numpy()] = why
    return out


def prepare(df: pd.DataFrame, classes: LabelSet, by: str, group: str | None,
            min_confidence: float) -> tuple[pd.DataFrame, dict]:
    """Rows that count (predicted, well-formed, dated in :data:`DATES`, confident enough) with ``period``, ``group``
    and ``confidence``; the counts, which add up (read = used + errors + malformed + undated + bad_dates +
    low_confidence), and up to :data:`EXAMPLES_NAMED` ids with the reason for each kind of row left out."""
    if by not in PERIODS:
        raise ValueError(f"--by must be one of {', '.join(PERIODS)}, not {by!r}")
    if group and group not in df:
        raise ValueError(f"--group {group!r}: no such column; columns are {', '.join(map(str, df.columns))}")
    counts: dict = {"read": len(df)}
    named: dict = {}
    ids = df["id"].astype(str) if "id" in df else pd.Series(df.index.astype(str), index=df.index)

    def leave_out(bad: pd.Series, kind: str, why) -> pd.DataFrame:
        counts[kind] = int(bad.sum())
        if bad.any():
            named[kind] = [f"{i}: {w}" for i, w in zip(ids[bad[bad].index][:EXAMPLES_NAMED], why(bad), strict=False)]
        return df[~bad.to_numpy()]

    ok = df["label"].notna() if "label" in df else pd.Series(False, index=df.index)
    if "error" in df:
        ok &= df["error"].isna()
    df = leave_out(~ok, "errors", lambda bad: [str(e) if isinstance(e, str) else "no label" for e in
                                               (df.loc[bad, "error"] if "error" in df else [None] * EXAMPLES_NAMED)])
    df = leave_out(df["malformed"].notna(), "malformed", lambda bad: df.loc[bad, "malformed"].head(EXAMPLES_NAMED))
    seconds = pd.to_numeric(df["created_utc"], errors="coerce") if "created_utc" in df else \
        pd.Series(np.nan, index=df.index)  # a column may be absent
    df = leave_out(seconds.isna(), "undated", lambda bad: ["no created_utc (seconds since 1970)"] * EXAMPLES_NAMED)
    seconds = seconds[seconds.notna()]
    earliest, latest = (pd.Timestamp(d, tz="UTC").timestamp() for d in DATES)
    df = leave_out(~seconds.between(earliest, latest, inclusive="left"), "bad_dates",
                   lambda bad: [f"created_utc {v:g} is outside {DATES[0]} to {DATES[1]}"
                                for v in seconds[bad].head(EXAMPLES_NAMED)])
    when = pd.to_datetime(seconds[df.index], unit="s", utc=True).dt.tz_localize(None)
    df = df.assign(when=when, period=when.dt.to_period(PERIODS[by]).dt.start_time,
                   confidence=df[[f"p_{c}" for c in classes]].max(axis=1))
    df = leave_out(df["confidence"] < min_confidence, "low_confidence",
                   lambda bad: [f"confidence {v:.3f} < {min_confidence}"
                                for v in df.loc[bad, "confidence"].head(EXAMPLES_NAMED)])
    df = df.assign(group=df[group].fillna("(none)").astype(str) if group else "all")
    counts["used"] = len(df)
    assert counts["read"] == counts["used"] + sum(counts[k] for k in LEFT_OUT)
    span = len(pd.period_range(df["period"].min(), df["period"].max(), freq=PERIODS[by])) if len(df) else 0
    if span > MAX_PERIODS:
        first, last = ids[df.index[df["period"].argmin()]], ids[df.index[df["period"].argmax()]]
        raise ValueError(f"the posts span {span:,} {by}s (post {first} of {df['period'].min().date()} to post "
                         f"{last} of {df['period'].max().date()}), more than {MAX_PERIODS:,}: check those dates, or "
                         "use a longer --by")
    return df, {**counts, "examples_left_out": named}


def period_table(df: pd.DataFrame, by: str, classes: LabelSet, method: str, stats: dict | None = None
                 ) -> pd.DataFrame:
    """Per group and period: the posts whose top class is each class (columns named after the classes), the
    period's ``posts``, each class's estimated share (``share:<class>``, :func:`emocare.quantify.estimate`)
    with its interval (``low:<class>``, ``high:<class>``, :func:`emocare.quantify.interval`), and ``partial``:
    whether the posts begin after the period's first day or end before its last (the first and last periods
    of a collection usually do), so that its shares rest on part of it. Every period of each group's range is
    present: an empty one has zero posts and no share (NaN)."""
    names, cols = list(classes), [f"p_{c}" for c in classes]
    rows = []
    for (g, period), part in df.groupby(["group", "period"]):
        probs = part[cols].to_numpy(float)
        share, (low, high) = estimate(probs, method, stats), interval(probs, method, stats)
        rows.append({"group": g, "period": period,
                     **dict(zip(names, np.bincount(probs.argmax(1), minlength=len(names)).tolist(), strict=True)),
                     **{f"{k}:{c}": float(v[i]) for k, v in (("share", share), ("low", low), ("high", high))
                        for i, c in enumerate(names)}})
    frames = []
    for g, part in pd.DataFrame(rows).set_index(["group", "period"]).groupby(level="group"):
        periods = part.index.get_level_values("period")
        full = pd.period_range(periods.min(), periods.max(), freq=PERIODS[by]).start_time
        part = part.droplevel("group").reindex(full)
        part[names] = part[names].fillna(0).astype(int)
        frames.append(part.assign(group=g))
    table = pd.concat(frames).rename_axis("period").reset_index().set_index(["group", "period"])
    table["posts"] = table[names].sum(axis=1)
    first, last = df["when"].min().normalize(), df["when"].max().normalize()
    starts = table.index.get_level_values("period")
    ends = starts.to_period(PERIODS[by]).end_time.normalize()
    table["partial"] = ((starts < first) & (first <= ends)) | ((starts <= last) & (last < ends))
    return table


def _classes(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("posts", "partial") and ":" not in c]  # ":" is never in a class name


def _estimates(part: pd.DataFrame, kind: str = "share") -> pd.DataFrame:
    """The ``share``, ``low`` or ``high`` columns of a period table, named by class; NaN for a period without
    posts."""
    return part[[f"{kind}:{c}" for c in _classes(part)]].set_axis(_classes(part), axis=1)


def long_table(table: pd.DataFrame, method: str, stats: dict | None = None) -> pd.DataFrame:
    """``trends.csv``: one row per group, period and emotion: the posts it is the top label of (``count``),
    its estimated share with the interval (empty without posts), the period's posts, whether the period is
    ``partial``, the ``estimator`` (a :data:`emocare.quantify.METHODS` name) and what its ``interval`` covers."""
    out = table[_classes(table)].stack().rename("count").to_frame()
    for kind, column in (("share", "share"), ("low", "share_low"), ("high", "share_high")):
        out = out.join(_estimates(table, kind).stack(future_stack=True).rename(column))
    out = out.join(table[["posts", "partial"]]).reset_index().rename(columns={"level_2": "emotion"})
    out["period"] = out["period"].dt.date.astype(str)
    for column in ("share", "share_low", "share_high"):
        out[column] = out[column].round(4)
    out["estimator"], out["interval"] = method, interval_covers(method, stats)
    return out[["group", "period", "emotion", "count", "share", "share_low", "share_high", "posts", "partial",
                "estimator", "interval"]]


def spikes(table: pd.DataFrame, window: int = 4, min_posts: int = 10, top: int = 10) -> pd.DataFrame:
    """The (group, period, emotion) whose estimated share moved most against the mean of the ``window`` periods
    before; ``outside`` says whether that mean lies outside the period's interval.

    Periods with fewer than ``min_posts`` posts, and those with fewer than two earlier periods to
    compare with, are not ranked.
    """
    rows = []
    for g, part in table.groupby(level="group"):
        part = part.droplevel("group")
        share, low, high = (_estimates(part, k) for k in ("share", "low", "high"))
        trailing = share.shift(1).rolling(window, min_periods=2).mean()
        for c in _classes(part):
            moved = pd.DataFrame({"share": share[c], "trailing": trailing[c], "low": low[c], "high": high[c],
                                  "posts": part["posts"], "count": part[c]}).dropna()
            moved = moved[moved["posts"] >= min_posts]
            rows += [{"group": g, "period": p.date().isoformat(), "emotion": c, "share": r.share,
                      "low": r.low, "high": r.high, "trailing": r.trailing, "change": r.share - r.trailing,
                      "outside": bool(r.trailing < r.low or r.trailing > r.high), "count": int(r["count"]),
                      "posts": int(r.posts)} for p, r in moved.iterrows()]
    ranked = pd.DataFrame(rows, columns=["group", "period", "emotion", "share", "low", "high", "trailing", "change",
                                         "outside", "count", "posts"])
    return ranked.reindex(ranked["change"].abs().sort_values(ascending=False).index).head(top).reset_index(drop=True)


def chart(table: pd.DataFrame, path: Path, by: str, classes: LabelSet) -> None:
    """``trends.png``: :func:`chart_figure`, saved."""
    import matplotlib.pyplot as plt

    fig = chart_figure(table, by, classes)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def chart_figure(table: pd.DataFrame, by: str, classes: LabelSet):
    """Each emotion's estimated share over time per group (the busiest groups), a line with its interval as a
    band, and the post volume in a panel below each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume = table.groupby(level="group")["posts"].sum().sort_values(ascending=False)
    groups = list(volume.index[:MAX_GROUPS_CHARTED])
    fig, axes = plt.subplots(2 * len(groups), 1, figsize=(11, 4.2 * len(groups)), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1] * len(groups)})
    for k, g in enumerate(groups):
        part = table.xs(g, level="group")
        # NaN where a period has no posts: a gap, not a dip to 0 %
        share, low, high = (_estimates(part, kind) for kind in ("share", "low", "high"))
        top, bottom = axes[2 * k, 0], axes[2 * k + 1, 0]
        for c in classes:
            top.fill_between(part.index, low[c], high[c], color=classes.colours[c], alpha=0.15, linewidth=0)
            top.plot(part.index, share[c], color=classes.colours[c], linewidth=2.5, marker="o", markersize=3,
                     label=classes.display[c])
        top.set_ylim(0, max(0.05, float(np.nanmax(high.to_numpy())) * 1.1))
        top.set_ylabel("share of posts (95% interval)")
        top.set_title(f"{g}: emotions per {by}" if g != "all" else f"Emotions per {by}")
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        # from the first period's start to the last period's end: the last volume bar whole, one period a period
        end = pd.Period(part.index[-1], PERIODS[by]).end_time
        top.set_xlim(part.index[0], end)
        width = {"day": 0.8, "week": 5.5, "month": 24}[by]
        bottom.bar(part.index, part["posts"], width=width, color="#5f6368", align="edge")
        bottom.set_ylabel("posts")
        bottom.set_xlim(part.index[0], end)
        for p in part.index[part["partial"]]:  # a share from part of a period: shaded and named on both panels
            for ax in (top, bottom):
                ax.axvspan(p, pd.Period(p, PERIODS[by]).end_time, color="#9aa0a6", alpha=0.2, linewidth=0)
            top.text(p, top.get_ylim()[1], "partial", fontsize=8, color="#5f6368", va="top")
        # ticks on the periods the tables name (each period's first day), thinned to at most MAX_TICKS labels
        ticks = part.index[::-(-len(part.index) // MAX_TICKS)]
        for ax in (top, bottom):
            ax.set_xticks(ticks, [t.date().isoformat() for t in ticks], rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    return fig


def examples(df: pd.DataFrame, k: int = 1) -> pd.DataFrame:
    """The ``k`` most confident posts per period and predicted emotion (all groups together)."""
    ranked = df.sort_values(["period", "label", "confidence"], ascending=[True, True, False])
    return ranked.groupby(["period", "label"], sort=True).head(k)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def report_html(counts: dict, table: pd.DataFrame, moved: pd.DataFrame, picks: pd.DataFrame, root: Path,
                chart_png: Path, by: str, source: str, classes: LabelSet, no_moves: str, warning: str | None,
                method_note: str) -> str:
    """The self-contained report page; ``no_moves`` says why the moves table is empty, if it is."""
    e = html.escape
    chart_uri = "data:image/png;base64," + base64.b64encode(chart_png.read_bytes()).decode()
    spike_rows = "".join(
        f'<tr><td>{e(str(r.group))}</td><td>{r.period}</td>'
        f'<td><span class="dot" style="background:{classes.colours[r.emotion]}"></span>{e(classes.display[r.emotion])}'
        f'</td>'
        f'<td class="num">{_pct(r.share)} <small>({_pct(r.low)} to {_pct(r.high)})</small></td>'
        f'<td class="num">{_pct(r.trailing)}</td>'
        f'<td class="num {"up" if r.change > 0 else "down"}">{"▲" if r.change > 0 else "▼"} '
        f'{100 * abs(r.change):.1f} pts</td><td>{"yes" if r.outside else "no: within the noise"}</td>'
        f'<td class="num">{r["count"]} / {r.posts}</td></tr>'
        for _, r in moved.iterrows()) or f'<tr><td colspan="8">{e(no_moves)}</td></tr>'
    cells: dict = {}
    for _, r in picks.iterrows():
        media = {k: root / r[k] for k in ("image", "video") if isinstance(r.get(k), str)}
        thumb = thumbnail(media.get("image"), media.get("video"), THUMB_PX)
        img = f'<img src="{thumb}" alt="">' if thumb else ""
        text = e(str(r.get("text") or "")[:160])
        cells.setdefault(r.period, {}).setdefault(r.label, []).append(
            f'<div class="ex">{img}<p>{text}</p>{ocr_line(r.get("ocr_text"))}'
            f'{attribution_line(r.get("attribution"))}<small>{_pct(r.confidence)} · {e(str(r.group))}</small></div>')
    head = "".join(f'<th><span class="dot" style="background:{classes.colours[c]}"></span>{e(classes.display[c])}'
                   "</th>" for c in classes)
    body = "".join(f"<tr><th>{p.date().isoformat()}</th>" + "".join(
        f"<td>{''.join(cells[p].get(c, []))}</td>" for c in classes) + "</tr>" for p in sorted(cells))
    banner = f'<p class="warn" id="warning">{e(warning)}</p>' if warning else ""
    n_periods = table.index.get_level_values("period").nunique()
    partial = sorted({p.date().isoformat() for p in table.index[table["partial"]].get_level_values("period")})
    partial_note = (f"; partial (the posts cover only part of it, shaded on the chart): {', '.join(partial)}"
                    if partial else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EmoCare emotion trends</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #202124; max-width: 1300px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #dadce0; padding: 4px 8px; vertical-align: top; text-align: left; }}
td.num {{ text-align: right; }} .up {{ color: #c5221f; }} .down {{ color: #1967d2; }}
.dot {{ display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 5px; }}
.ex {{ width: 150px; margin-bottom: 6px; }} .ex img {{ display: block; max-width: {THUMB_PX}px; }}
.ex p {{ margin: 2px 0; }} .ex p.ocr {{ color: #5f6368; font-style: italic; }}
.ex p.attr {{ color: #5f6368; font-size: 12px; }}
.ex small {{ color: #5f6368; }} .meta {{ color: #5f6368; }}
img.chart {{ max-width: 100%; }} .warn {{ background: #fce8e6; color: #a50e0e; padding: 8px 12px; }}
</style></head><body>
<h1>Emotion trends</h1>
{banner}
<p class="meta">{e(source)}: {counts['used']} posts used of {counts['read']} read ({counts['errors']} with errors,
{counts['malformed']} with unusable probabilities, {counts['undated']} without a date, {counts['bad_dates']} dated
outside {DATES[0]} to {DATES[1]}, {counts['low_confidence']} below the confidence threshold);
{n_periods} {by}s{partial_note}.</p>
<p class="meta" id="estimator">{e(method_note)}</p>
<h2>Emotions over time</h2>
<img class="chart" id="chart" src="{chart_uri}" alt="stacked emotion shares per {by}, with post volume">
<h2>Biggest moves against the trailing average</h2>
<table id="spikes"><tr><th>group</th><th>{by} of</th><th>emotion</th><th>share ({int(100 * LEVEL)}% interval)</th>
<th>trailing mean</th><th>change</th><th>trailing mean outside the interval</th><th>top label / posts</th></tr>
{spike_rows}</table>
<h2>Most confident posts per emotion and {by}</h2>
<table id="examples"><tr><th>{by} of</th>{head}</tr>{body}</table>
</body></html>
"""


def _why_no_moves(table: pd.DataFrame, min_posts: int) -> str:
    """What an empty moves table means: too few periods, or too few with ``min_posts`` posts."""
    periods = table.groupby(level="group").size()
    if periods.max() < 3:
        return f"Not enough periods to compare: a move needs two earlier periods, and there are {periods.max()}."
    enough = int((table["posts"] >= min_posts).sum())
    return (f"No period to rank: {enough} of {len(table)} periods have at least {min_posts} posts (--min-posts), "
            "and a move needs such a period after two earlier ones.")


def trends(predictions: str | Path, out_dir: str | Path, by: str = "week", group: str | None = None,
           min_confidence: float = 0.0, window: int = 4, min_posts: int = 10, top: int = 10,
           examples_per_cell: int = 1, quantifier: str | None = None) -> dict:
    """Write ``trends.csv``, ``trends.png``, ``spikes.csv`` and ``report.html`` into ``out_dir``; returns counts.

    ``quantifier`` is the share estimator (:data:`emocare.quantify.METHODS`); ``acc``, ``pacc`` and ``em`` use the
    validation statistics of the bundle that wrote the predictions (``<predictions>.models.json``). Without one,
    :data:`emocare.quantify.DEFAULT`, or ``pcc`` (said on stderr and the page) when those statistics are missing."""
    if quantifier is not None and quantifier not in METHODS:
        raise ValueError(f"--quantifier must be one of {', '.join(METHODS)}, not {quantifier!r}")
    predictions, out_dir = Path(predictions), Path(out_dir)
    raw, classes, origin = load_predictions(predictions)
    measured = evaluation_line(origin.get("evaluation"))
    warning = " ".join(w for w in (demo_warning(origin.get("training_data")), evaluation_warning(
        origin.get("evaluation"))) if w) or None
    if warning:
        print(warning, file=sys.stderr)
    df, counts = prepare(raw, classes, by, group, min_confidence)
    if df.empty:
        named = counts.pop("examples_left_out")
        raise ValueError(f"{predictions}: no dated predictions left to chart ({counts}; for example {named})")
    stats = origin.get("validation")
    if quantifier is None:
        quantifier = DEFAULT if DEFAULT not in NEEDS_STATS or stats else "pcc"
        if quantifier != DEFAULT:
            print(f"{predictions.name} has no validation statistics beside it ({provenance_path(predictions).name}): "
                  f"shares by pcc, not the default {DEFAULT}", file=sys.stderr)
    if quantifier in NEEDS_STATS and not stats:
        raise ValueError(f"--quantifier {quantifier} needs the validation statistics of the bundle that wrote "
                         f"{predictions.name} (its {provenance_path(predictions).name}, written by `emocare predict` "
                         "with a bundle this version trained); use pcc")
    table = period_table(df, by, classes, quantifier, stats)
    write_text(out_dir / "trends.csv", long_table(table, quantifier, stats).to_csv(index=False))
    moved = spikes(table, window, min_posts, top)
    write_text(out_dir / "spikes.csv", moved.round(4).to_csv(index=False))
    chart(table, out_dir / "trends.png", by, classes)
    picks = examples(df, examples_per_cell)
    write_text(out_dir / "report.html", report_html(counts, table, moved, picks, predictions.parent,
                                                    out_dir / "trends.png", by, predictions.name, classes,
                                                    _why_no_moves(table, min_posts), warning,
                                                    f"Estimator: {quantifier}, {DESCRIPTIONS[quantifier]}. Its "
                                                    f"{int(100 * LEVEL)}% interval covers "
                                                    f"{interval_covers(quantifier, stats)}; it counts only the "
                                                    "posts that fell in the period. " + (
                                                        f"The classifier: {measured}." if measured else
                                                        "The classifier's accuracy was not recorded with its "
                                                        "bundle.")))
    summary = {**counts, "quantifier": quantifier, "periods": int(table.index.get_level_values("period").nunique()),
               "groups": int(table.index.get_level_values("group").nunique()),
               "top_move": moved.iloc[0][["group", "period", "emotion", "change"]].to_dict() if len(moved) else None,
               "out": str(out_dir)}
    write_json(out_dir / "summary.json", summary)
    return summary
