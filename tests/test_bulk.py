"""Bulk prediction: metadata carried through, bad media, Parquet, torchrun shards, and resuming after kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from procs import children, kill_and_wait

from emocare.cli import main as cli
from emocare.labels import DEFAULT

META = {"subreddit": "Brawlstars", "author": "u1", "url": "https://www.reddit.com/r/Brawlstars/x", "flair": "Humor"}


def make_manifest(demo_dir: Path, folder: Path, copies: int = 1, bad: bool = True) -> Path:
    """The demo posts (``copies`` times, new ids, no labels) with Reddit metadata, plus bad records."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "media").exists():
        shutil.copytree(demo_dir / "media", folder / "media", copy_function=os.link)  # hard links: not symlinks
    lines = []
    for c in range(copies):
        for i, line in enumerate((demo_dir / "manifest.jsonl").read_text().splitlines()):
            rec = json.loads(line)
            rec.pop("label")
            rec.update(id=f"{rec['id']}-{c}", created_utc=1714521600 + 3600 * i, **META)
            lines.append(json.dumps(rec))
    if bad:
        (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        lines[3:3] = [json.dumps({"id": "bad-image", "text": "so mad", "image": "bad.png", **META}), "",
                      "{not json", json.dumps({"id": "bad-only", "text": "", "image": "bad.png"})]
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_metadata_of_the_wrong_type_is_an_error_row_named_before_scoring(trained_bundle: Path, demo_dir: Path,
                                                                          tmp_path: Path, capsys):
    manifest = make_manifest(demo_dir, tmp_path / "m", bad=False)
    lines = manifest.read_text().splitlines()
    for i, (key, value) in enumerate((("created_utc", "1716768000"), ("created_utc", "2024-05-27"),
                                      ("created_utc", "someday"), ("score", "lots"), ("author", 42))):
        rec = json.loads(lines[i])
        rec[key] = value
        lines[i] = json.dumps(rec)
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred.parquet"
    assert cli(predict(trained_bundle, manifest, out)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 120 == summary["predicted"] + summary["errors"] and summary["errors"] == 2
    rows = pq.read_table(out).to_pylist()
    assert rows[0]["created_utc"] == rows[1]["created_utc"] == 1716768000 and rows[4]["author"] == "42"
    assert rows[2]["error"].startswith(f"post {rows[2]['id']}: field 'created_utc' 'someday' is not a Unix time")
    assert rows[3]["error"] == f"post {rows[3]['id']}: field 'score' 'lots' is not a whole number"
    assert rows[2]["label"] is None and not (tmp_path / "pred.parquet.parts").exists()


def predict(bundle: Path, manifest: Path, out: Path, *extra: str) -> list[str]:
    args = ["predict", "--models", str(bundle), "--device", "cpu", "--manifest", str(manifest), "-o", str(out),
            "--batch-size", "8", "--workers", "0", *extra]
    return args


def test_rows_carry_metadata_and_bad_media_is_handled(trained_bundle: Path, demo_dir: Path, tmp_path: Path, capsys):
    manifest = make_manifest(demo_dir, tmp_path / "m")
    out = tmp_path / "pred.jsonl"
    assert cli(predict(trained_bundle, manifest, out, "--workers", "2")) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["records"] == 123 == summary["predicted"] + summary["errors"]
    assert summary["errors"] == 3 and summary["degraded"] == 0 and summary["workers"] == 2
    progress = [line for line in captured.err.splitlines() if line.startswith("predict:")]  # no terminal here
    assert progress and "123/123" in progress[-1] and "\r" not in captured.err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows[:6]] == [1, 2, 3, 4, 6, 7]  # manifest order; the blank line 5 is no record
    by_id = {r["id"]: r for r in rows if r["id"]}
    assert "image could not be decoded" in by_id["bad-image"]["error"] and "label" not in by_id["bad-image"]
    assert "not valid JSON" in rows[4]["error"] and rows[4]["line"] == 6
    good = rows[0]
    assert good["label"] in DEFAULT.names and set(good["probabilities"]) == set(DEFAULT) and "true_label" not in good
    assert {k: good[k] for k in META} == META and good["created_utc"] == 1714521600
    assert good["text"] and (good.get("image") or good.get("video") or "").startswith("m/media/")
    assert not (tmp_path / "pred.jsonl.parts").exists()

    assert cli(predict(trained_bundle, manifest, out, "--media-errors", "text-only")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["errors"] == 2 and summary["degraded"] == 1  # bad-only has nothing left: still an error
    rows2 = {r["id"]: r for r in map(json.loads, out.read_text().splitlines()) if r["id"]}
    assert rows2["bad-image"]["degraded"] == ["image"] and rows2["bad-image"]["modalities"] == ["text"]
    assert rows2["bad-image"]["degraded_reason"].startswith("image could not be decoded: ")
    assert "image could not be decoded" in rows2["bad-only"]["error"]
    assert rows2[good["id"]] == good  # workers do not change results


def without_nulls(row: dict) -> dict:
    return {k: without_nulls(v) if isinstance(v, dict) else v for k, v in row.items() if v is not None}


def test_parquet_and_two_processes_give_the_same_rows(trained_bundle: Path, demo_dir: Path, tmp_path: Path, capsys):
    manifest = make_manifest(demo_dir, tmp_path / "m")
    one = tmp_path / "one.jsonl"
    assert cli(predict(trained_bundle, manifest, one)) == 0
    capsys.readouterr()
    rows = [json.loads(x) for x in one.read_text().splitlines()]
    assert cli(predict(trained_bundle, manifest, tmp_path / "p.parquet")) == 0
    table = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert len(table) == len(rows)
    for r, t in zip(rows, table, strict=True):  # Parquet's columns and structs hold null where JSON omits a key
        r = without_nulls(r)
        assert without_nulls(t) == {k: (float(v) if k == "created_utc" else v) for k, v in r.items()}
    two = tmp_path / "two.jsonl"
    cmd = [sys.executable, "-m", "emocare.cli", *predict(trained_bundle, manifest, two, "--nproc", "2")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["processes"] == 2 and summary["records"] == 123
    rows2 = [json.loads(x) for x in two.read_text().splitlines()]
    assert [r["line"] for r in rows2] == [r["line"] for r in rows]  # shards merged in manifest order
    floats = ("probabilities", "attribution")  # rounded to 4 places: float noise may move the last one
    for a, b in zip(rows, rows2, strict=True):  # other batch boundaries and threads: equal to float tolerance
        assert {k: v for k, v in a.items() if k not in floats} == {k: v for k, v in b.items() if k not in floats}
        for key in floats:
            assert a.get(key, {}).keys() == b.get(key, {}).keys()
            for c in a.get(key, {}):
                assert abs(a[key][c] - b[key][c]) <= 2e-4, (key, c)


def test_resume_after_kill_9_gives_the_uninterrupted_result(trained_bundle: Path, demo_dir: Path, tmp_path: Path,
                                                           capsys):
    manifest = make_manifest(demo_dir, tmp_path / "m", copies=3, bad=False)
    whole = tmp_path / "whole.jsonl"
    assert cli(predict(trained_bundle, manifest, whole, "--batch-size", "4")) == 0
    capsys.readouterr()
    out = tmp_path / "resumed.jsonl"
    progress = tmp_path / "resumed.jsonl.parts" / "rank0-of-1.progress.json"
    cmd = [sys.executable, "-m", "emocare.cli", *predict(trained_bundle, manifest, out, "--batch-size", "4")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    deadline, done = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None:
        if progress.exists():
            done = json.loads(progress.read_text())["rows_done"]
            if done >= 40:
                break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 40 <= done < 360, f"the run was not killed part-way (rows done {done})"
    assert not out.exists()
    with open(tmp_path / "resumed.jsonl.parts" / "rank0-of-1.jsonl", "ab") as f:
        f.write(b'{"id": "half a batch')  # as if killed in the middle of writing a batch
    assert cli(predict(trained_bundle, manifest, out, "--batch-size", "4")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 360 and out.read_bytes() == whole.read_bytes()


def test_no_dataloader_worker_outlives_a_killed_predict(trained_bundle: Path, demo_dir: Path, tmp_path: Path):
    # big batches: each worker holds 4 x 128 queued posts to decode, and without a parent-death signal it decodes
    # them all before it looks for its parent
    manifest = make_manifest(demo_dir, tmp_path / "m", copies=8, bad=False)
    cmd = [sys.executable, "-m", "emocare.cli", *predict(trained_bundle, manifest, tmp_path / "p.jsonl", "--batch-size",
                                                          "128", "--workers", "2")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    deadline, workers = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None and len(workers) < 2:
        workers = children(proc.pid)
        time.sleep(0.05)
    assert len(workers) >= 2 and proc.poll() is None, "predict did not start its two workers"
    time.sleep(1)  # the workers have their posts queued
    assert kill_and_wait(proc, workers, within_s=5) == [], "DataLoader workers outlived their parent"


def test_bad_arguments(trained_bundle: Path, tmp_path: Path, capsys):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "text": "x"}\n')
    assert cli(predict(trained_bundle, tmp_path / "m.jsonl", tmp_path / "p.csv")) == 1
    assert ".jsonl or .parquet" in capsys.readouterr().err
    assert cli(predict(trained_bundle, tmp_path / "missing.jsonl", tmp_path / "p.jsonl")) == 1
    with pytest.raises(SystemExit):
        cli(predict(trained_bundle, tmp_path / "m.jsonl", tmp_path / "p.jsonl", "--media-errors", "skip"))
