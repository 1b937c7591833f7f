"""The file entry points on the hostile cases of issue 39: import csv, label from-label-studio, label export,
validate --allow-unlabelled, and progress output without a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emocare.cli import main as cli
from emocare.labelling.decisions import LabelLog

NO_MODELS = ["--models", "no-models"]  # the default classes


def _import(tmp_path: Path, csv_text: str | bytes, *args: str) -> int:
    src = tmp_path / "in.csv"
    src.write_bytes(csv_text if isinstance(csv_text, bytes) else csv_text.encode())
    return cli(["import", "csv", str(src), "-o", str(tmp_path / "out" / "m.jsonl"), *args])


def test_import_csv_never_lets_a_column_overwrite_a_chosen_field(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _import(tmp_path, "uid,text,emotion,label,image\nEVIL,hello,joy,anger,/etc/passwd\n", "--text-col", "text",
                   "--id-col", "uid", "--label-col", "emotion") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["labels"] == {"joy": 1} and summary["renamed_columns"] == {"label": "csv_label",
                                                                              "image": "csv_image"}
    rec = json.loads((tmp_path / "out" / "m.jsonl").read_text())
    assert (rec["id"], rec["label"], "image" in rec) == ("EVIL", "joy", False)
    assert rec["csv_label"] == "anger" and rec["csv_image"] == "/etc/passwd"  # kept, as metadata


@pytest.mark.parametrize(("csv_text", "message"), [
    ('id,text,label\n1,"broken,joy\n2,fine,sadness\n3,ok,anger\n',
     "the row starting at line 2: unexpected end of data (a quote opened there is never closed"),
    ('id,text,label\n1,"closed"late,joy\n', "the row starting at line 2: ',' expected after '\"'"),
    ("id,text,label\n1,a,joy\n2,b\n", "line 3: 2 field(s) where the header has 3"),
    ("id,text,label\n1," + "x" * 200_000 + ",joy\n", "field larger than field limit (131072)"),
    (b"id,text,label\n1,caf\xe9,joy\n", "line 2 is not UTF-8 text"),
    ("id,text,text\n1,a,b\n", "column(s) ['text'] appear more than once"),
    ("id,text,label,csv_label\n1,a,joy,x\n", "would be kept as ['csv_label'], which are columns too"),
])
def test_import_csv_reports_a_broken_file_with_its_line(tmp_path: Path, capsys, csv_text, message):
    assert _import(tmp_path, csv_text, "--text-col", "text", "--id-col", "id") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"emocare: error: {tmp_path / 'in.csv'}: ") and message in err, err
    assert not (tmp_path / "out" / "m.jsonl").exists()  # nothing half-written


def test_import_csv_counts_rows_spanning_lines(tmp_path: Path, capsys):
    assert _import(tmp_path, 'id,text\n1,"two\nlines"\n\n2,one\n3,"a ""quoted"" word"\n', "--text-col", "text",
                   "--id-col", "id") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 3 and summary["rows_spanning_lines"] == {"count": 1, "first_lines": [2]}
    texts = [json.loads(x)["text"] for x in (tmp_path / "out" / "m.jsonl").read_text().splitlines()]
    assert texts == ["two\nlines", "one", 'a "quoted" word']


def test_import_csv_media_paths_follow_the_path_rule(tmp_path: Path, capsys, monkeypatch):
    project = tmp_path / "project"
    (project / "media").mkdir(parents=True)
    monkeypatch.chdir(project)
    for value, message in (("/etc/passwd", "line 2: image: absolute path not allowed: /etc/passwd"),
                           ("../../../../etc/passwd", "line 2: image: path escapes the manifest folder")):
        assert _import(project, f"id,text,img\n1,hi,{value}\n", "--text-col", "text", "--image-col", "img") == 1
        assert message in capsys.readouterr().err
    assert _import(project, "id,text,img\n1,hi,media/a.png\n", "--text-col", "text", "--image-col", "img") == 0
    assert json.loads((project / "out" / "m.jsonl").read_text())["image"] == "../media/a.png"


def _tasks(tmp_path: Path, tasks) -> Path:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    return path


def _from_ls(tmp_path: Path, tasks_path: Path) -> int:
    return cli(["label", "from-label-studio", str(tasks_path), "--posts-out", str(tmp_path / "posts.jsonl"),
                "--labels", str(tmp_path / "labels.jsonl"), *NO_MODELS])


def _choice(label: str) -> dict:
    return {"result": [{"from_name": "emotion", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]}


def test_from_label_studio_refuses_two_tasks_for_one_post(tmp_path: Path, capsys):
    tasks = [{"id": 1, "data": {"post_id": "p1", "text": "a"}, "annotations": [_choice("Anger")]},
             {"id": 2, "data": {"post_id": "p1", "text": "b"}, "annotations": [_choice("Joy")]}]
    assert _from_ls(tmp_path, _tasks(tmp_path, tasks)) == 1
    err = capsys.readouterr().err
    assert "tasks 1 and 2 have the same post id 'p1'" in err
    assert not (tmp_path / "posts.jsonl").exists() and not (tmp_path / "labels.jsonl").exists()


@pytest.mark.parametrize(("task", "message"), [
    ({"data": {"post_id": "p"}, "annotations": "Joy"}, "task 1 (post 'p'): 'annotations' must be a list of objects"),
    ({"data": {"post_id": "p"}, "annotations": [{"result": "Joy"}]}, "an annotation's 'result' must be a list"),
    ({"data": {"post_id": "p"}, "annotations": [{"result": [{"from_name": "emotion", "type": "choices",
                                                             "value": "Joy"}]}]}, "without a list of 'choices'"),
    ({"data": {"post_id": ["p"]}}, "task 1: the post id must be a string or a number"),
])
def test_from_label_studio_names_the_task_of_a_malformed_annotation(tmp_path: Path, capsys, task, message):
    assert _from_ls(tmp_path, _tasks(tmp_path, [task])) == 1
    assert message in capsys.readouterr().err


def test_from_label_studio_names_a_file_that_is_not_json(tmp_path: Path, capsys):
    for text in ("[{", "[" * 100_000):
        (tmp_path / "tasks.json").write_text(text)
        assert _from_ls(tmp_path, tmp_path / "tasks.json") == 1
        assert f"{tmp_path / 'tasks.json'}: not valid JSON" in capsys.readouterr().err


def test_from_label_studio_fsyncs_once_for_a_whole_export(tmp_path: Path, capsys, monkeypatch):
    n = 2000
    tasks = [{"id": i, "data": {"post_id": f"p{i}", "text": "t"}, "annotations": [_choice("Joy")]} for i in range(n)]
    path = _tasks(tmp_path, tasks)
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    assert _from_ls(tmp_path, path) == 0
    assert json.loads(capsys.readouterr().out)["added"] == n and len(calls) <= 2  # the labels file, and posts'
    assert len(LabelLog(tmp_path / "labels.jsonl").read()) == n


@pytest.mark.parametrize(("record", "message"), [
    ({"id": "p1", "annotator": "a", "time": 1}, "line 1 is not a decision: post 'p1': 'label' must be a string"),
    ({"id": ["p1"], "label": "joy", "time": 1}, "line 1 is not a decision: 'id' must be a non-empty string"),
    ({"id": "p1", "label": "joy", "annotator": {"x": 1}}, "'annotator' must be a string"),
    ({"id": "p1", "label": "joy", "time": "yesterday"}, "'time' must be a Unix time"),
])
def test_label_export_names_a_labels_line_of_the_wrong_shape(tmp_path: Path, capsys, record, message):
    (tmp_path / "posts.jsonl").write_text(json.dumps({"id": "p1", "text": "hi"}) + "\n")
    (tmp_path / "labels.jsonl").write_text(json.dumps(record) + "\n")
    assert cli(["label", "export", str(tmp_path / "labels.jsonl"), "--posts", str(tmp_path / "posts.jsonl"), "-o",
                str(tmp_path / "out.jsonl"), *NO_MODELS]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"emocare: error: {tmp_path / 'labels.jsonl'}: line 1 is not a decision") and message in err


def test_validate_counts_the_unlabelled_posts_it_keeps(tmp_path: Path, capsys):
    posts = [{"id": "a", "text": "x", "label": "joy"}, {"id": "b", "text": "y"}, {"id": "c", "text": "z"},
             {"id": "d", "text": ""}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(p) + "\n" for p in posts))
    assert cli(["validate", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "v"), "--allow-unlabelled"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["read"], counts["kept"], counts["unlabelled"], counts["quarantined"]) == (4, 3, 2, 1)


def test_progress_without_a_terminal_is_lines_not_carriage_returns(tmp_path: Path):
    """`import reddit` (the reader fetch-media shares) with stderr to a pipe: whole lines, no ``\\r`` updates."""
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps({"id": f"p{i}", "title": f"post {i}", "selftext": "", "subreddit": "x",
                                        "created_utc": 1714521600 + i}) + "\n" for i in range(3000)))
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "emocare.cli", "import", "reddit", str(dump), "-o",
                           str(tmp_path / "m.jsonl")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("import:")]
    assert progress and "3000" in progress[-1]
    assert len(progress) <= 2 + (time.monotonic() - started) / 5  # a line every LOG_EVERY_S at most, and the last
