"""`emocare trends` on generated hostile prediction files (hypothesis): whatever the rows hold, the run ends with the
outputs or a clear error (exit 1, no traceback), the counts add up, every period's shares sum to 1, and memory
stays bounded. Examples and time are bounded so the suite stays fast."""

from __future__ import annotations

import json
import math
import tempfile
import tracemalloc
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emocare.cli import main as cli
from emocare.labels import DEFAULT_LABELS as LABELS
from emocare.trends import LEFT_OUT

T0 = 1704067200  # 2024-01-01
PEAK_BYTES = 300 * 2**20  # a few hundred rows: far below this unless a date or a class blows a table up

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1), st.just(0.2))
dates = st.one_of(st.integers(T0, T0 + 60 * 86400), st.integers(-2**62, 2**62), st.floats(allow_nan=True),
                  st.sampled_from([253402300799, -62135596800, 1e20, -1e20, "soon", None, "1704067200"]))
probabilities = st.one_of(
    st.builds(lambda k: {c: float(c == LABELS[k]) for c in LABELS}, st.integers(0, len(LABELS) - 1)),
    st.dictionaries(st.sampled_from([*LABELS, "awe", "1"]), floats, max_size=7),
    st.lists(floats, max_size=5), st.none(), st.text(max_size=5))
rows = st.fixed_dictionaries(
    {"id": st.text(max_size=8), "created_utc": dates, "probabilities": probabilities},
    optional={"label": st.one_of(st.sampled_from([*LABELS, "awe"]), st.none(), st.integers()),
              "error": st.one_of(st.none(), st.text(max_size=10)),
              "subreddit": st.one_of(st.none(), st.text(max_size=4))})
valid = st.builds(lambda i, t, k, g: {"id": f"v{i}", "created_utc": t, "label": LABELS[k], "subreddit": g,
                                     "probabilities": {c: float(c == LABELS[k]) for c in LABELS}},
                  st.integers(0, 10**6), st.integers(T0, T0 + 90 * 86400), st.integers(0, len(LABELS) - 1),
                  st.sampled_from(["a", "b"]))
files = st.lists(st.one_of(valid, rows), min_size=1, max_size=60)


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(files, st.sampled_from(["day", "week", "month"]), st.booleans())
def test_trends_on_hostile_prediction_files(records: list[dict], by: str, grouped: bool):
    with tempfile.TemporaryDirectory() as tmp:
        preds = Path(tmp) / "p.jsonl"
        preds.write_text("".join(json.dumps(r) + "\n" for r in records))  # NaN and Infinity as json writes them
        tracemalloc.start()
        try:
            code = cli(["trends", str(preds), "-o", str(Path(tmp) / "out"), "--by", by,
                        *(["--group", "subreddit"] if grouped else [])])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert code in (0, 1)  # 1: a clear error (cli prints it); any other exception fails the test with its traceback
        assert peak < PEAK_BYTES
        if code == 1:
            assert not (Path(tmp) / "out" / "trends.csv").exists()
            return
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
        assert summary["read"] == len(records) == summary["used"] + sum(summary[k] for k in LEFT_OUT)
        table = pd.read_csv(Path(tmp) / "out" / "trends.csv")
        assert table["count"].sum() == summary["used"]
        shares = table.dropna(subset=["share"]).groupby(["group", "period"])["share"].sum()
        assert all(math.isclose(s, 1, abs_tol=2e-3) for s in shares)
