"""Property-based tests (hypothesis) of the file entry points on generated hostile input (issue 39).

For import csv, import reddit, validate, label export, label from-label-studio and predict --manifest, whatever
the input: the command ends with its summary or with ``emocare: error: <file>...`` (never a traceback: the CLI
answers only ValueError, FileNotFoundError and RuntimeError, anything else fails the test); the counts add up;
the Python heap stays under ``MAX_HEAP`` with lines and fields over the readers' limits in the input; and a file
planted outside the project (``secret.png``, named by absolute paths, ``../`` and a symlink) is never opened.
Examples and deadlines are bounded so that the module runs in well under a minute on two cores.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import tempfile
import tracemalloc
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emocare.cli import main as cli
from emocare.io import MAX_LINE_BYTES, MB
from emocare.predict import EmoCare

MAX_HEAP = 48 * MB  # inputs hold lines of up to 5 MB; the readers hold at most a few of them at once
HUGE = MAX_LINE_BYTES + 1000
SETTINGS = dict(deadline=None, database=None, derandomize=True,  # reproducible in CI; no .hypothesis/ folder
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])  # capsys: read before each run

# text with the characters that break parsers: delimiters, quotes, line ends, NUL, non-ASCII
nasty_text = st.text(st.sampled_from(list('ab ,;\t"\'\n\r\\\x00é😀{}[]:')) | st.characters(
    blacklist_categories=("Cs",)), max_size=30)
json_scalar = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | nasty_text
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3) |
                          st.dictionaries(nasty_text, inner, max_size=3), max_leaves=8)


class Project:
    """A temporary project (the working directory and media root) with a ``secret.png`` outside it; records
    every file opened while it is entered."""

    def __init__(self, base: Path):
        self.root = base / "project"
        (self.root / "data" / "media").mkdir(parents=True)
        self.secret = base / "secret.png"
        self.secret.write_bytes(b"\x89PNG\r\n\x1a\n secret")
        (self.root / "data" / "media" / "ok.png").write_bytes(self.secret.read_bytes())
        (self.root / "data" / "link.png").symlink_to(self.secret)
        self.opened: list[str] = []

    @property
    def media_values(self) -> list:
        return [str(self.secret), "../../secret.png", "link.png", "media/ok.png", "media/none.png", "media", "",
                {"path": str(self.secret)}, ["x"], 7, "a\x00b"]

    @contextlib.contextmanager
    def watching(self):
        real_open = builtins.open

        def spy(file, *args, **kwargs):
            if isinstance(file, str | bytes | os.PathLike):
                with contextlib.suppress(ValueError, OSError):
                    self.opened.append(os.path.realpath(file))
            return real_open(file, *args, **kwargs)

        cwd = os.getcwd()
        os.chdir(self.root)
        builtins.open = spy
        tracemalloc.start()
        try:
            yield
        finally:
            self.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            builtins.open = real_open
            os.chdir(cwd)
        assert str(self.secret) not in self.opened, "a file outside the project was opened"
        assert self.peak < MAX_HEAP, f"peak heap {self.peak / MB:.0f} MB"


def run(project: Project, args: list[str], capsys) -> tuple[int, dict | None, str]:
    """Run the CLI in the project; returns (exit code, summary, stderr), checking the error's form."""
    capsys.readouterr()
    with project.watching():
        code = cli(args)
    out, err = capsys.readouterr()
    assert code in (0, 1)
    if code:
        assert err.startswith("emocare: error: ") and "Traceback" not in err, err
        return code, None, err
    return code, json.loads(out), err


def jsonl(records: list) -> bytes:
    """JSON Lines from generated values: each a JSON value, a raw (broken) line, or a huge line."""
    lines = []
    for r in records:
        if isinstance(r, bytes):
            lines.append(r)
        else:
            lines.append(json.dumps(r, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass"))
    return b"\n".join(lines) + b"\n"


raw_lines = st.sampled_from([b"{not json", b"", b"   ", b"\xff\xfe bad utf-8", b"[1, 2]", b"null", b'"text"',
                             b"[" * 5000, b'{"id": "huge", "text": "' + b"x" * HUGE + b'"}', b"\x00"])


def post_record(project: Project):
    media = st.sampled_from(project.media_values)
    return st.fixed_dictionaries({}, optional={
        "id": st.sampled_from(["p1", "p2", "p1", "", 0, 7, None, ["p"], {"a": 1}, True]) | nasty_text,
        "text": nasty_text | json_value,
        "label": st.sampled_from(["joy", "Anger", "boredom", "", None, 3, ["joy"]]),
        "image": media, "video": media,
        "created_utc": st.sampled_from([1714521600, "2024-05-27", 1e20, -1e20, "9999-12-31", "someday", None,
                                        float("nan"), True, [1]]),
        "score": json_scalar})


def _counted_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip())


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_validate_on_hostile_manifests(data, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        records = data.draw(st.lists(post_record(project) | raw_lines, max_size=8))
        manifest = project.root / "data" / "manifest.jsonl"
        manifest.write_bytes(jsonl(records))
        unlabelled = data.draw(st.booleans())
        code, counts, err = run(project, ["validate", str(manifest), "-o", str(project.root / "v"),
                                          *(["--allow-unlabelled"] if unlabelled else [])], capsys)
        if code:  # only a manifest line that is not a JSON object stops validation, and it is named
            assert f"{manifest}:" in err and ("not valid JSON" in err or "expected a JSON object" in err), err
            return
        assert counts["read"] == counts["kept"] + counts["quarantined"] == _counted_lines(manifest)
        kept = [json.loads(x) for x in (project.root / "v" / "posts.jsonl").read_text().splitlines()]
        assert len(kept) == counts["kept"] and counts["unlabelled"] == sum("label" not in r for r in kept)
        for rec in kept:  # every kept media path is inside the project
            for key in ("image", "video"):
                if key in rec:
                    assert (project.root / "v" / rec[key]).resolve().is_relative_to(project.root)


def csv_file(project: Project):
    """A CSV: a header from likely names, then rows of nasty fields joined without escaping or with it."""
    names = st.sampled_from(["id", "text", "label", "image", "uid", "emotion", "csv_label", "notes", "x"])
    field = nasty_text | st.sampled_from(project.media_values[:5]) | st.just("y" * 140_000)

    @st.composite
    def build(draw):
        header = draw(st.lists(names, min_size=1, max_size=5))
        if "text" not in header:
            header.append("text")
        rows = draw(st.lists(st.lists(field, min_size=1, max_size=len(header) + 1), max_size=6))
        escaped = draw(st.booleans())
        if escaped:
            import csv
            import io
            buf = io.StringIO()
            csv.writer(buf).writerows([header, *rows])
            body = buf.getvalue().encode("utf-8", "surrogatepass")
        else:
            body = "\n".join(",".join(r) for r in [header, *rows]).encode("utf-8", "surrogatepass")
        if draw(st.booleans()):
            body += draw(st.sampled_from([b"\xff\xfe\n", b"z" * HUGE + b"\n", b'"open quote\n', b"\n\n"]))
        return header, body
    return build()


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_import_csv_on_hostile_files(data, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        header, body = data.draw(csv_file(project))
        src = project.root / "data" / "in.csv"
        src.write_bytes(body)
        args = ["import", "csv", str(src), "--text-col", "text", "-o", str(project.root / "data" / "m.jsonl")]
        for option in ("--id-col", "--label-col", "--image-col"):
            if data.draw(st.booleans()):
                args += [option, data.draw(st.sampled_from(header))]
        code, summary, err = run(project, args, capsys)
        if code:
            assert str(src) in err or "--" in err, err
            return
        records = [json.loads(x) for x in (project.root / "data" / "m.jsonl").read_text().splitlines()]
        assert len(records) == summary["rows"]
        if "--label-col" in args:
            assert sum(summary["labels"].values()) == summary["rows"]
        for rec in records:
            assert isinstance(rec["id"], str) and isinstance(rec["text"], str)
            if "image" in rec:
                assert (project.root / "data" / rec["image"]).resolve().is_relative_to(project.root)


reddit_post = st.fixed_dictionaries({"id": st.sampled_from(["a1", "a2", "a1", ""]) | json_scalar}, optional={
    "title": nasty_text | json_value, "selftext": nasty_text | json_value, "subreddit": json_scalar,
    "created_utc": st.sampled_from([1714521600, 1e20, "9999-12-31", "x", None, float("inf")]),
    "url": json_scalar, "is_video": json_scalar, "media_metadata": json_value, "preview": json_value,
    "flair": json_scalar, "link_flair_text": json_scalar})


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_import_reddit_on_hostile_dumps(data, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        dump = project.root / "data" / "dump.jsonl"
        dump.write_bytes(jsonl(data.draw(st.lists(reddit_post | raw_lines | json_value, max_size=8))))
        code, summary, err = run(project, ["import", "reddit", str(dump), "-o", str(project.root / "data" / "m.jsonl"),
                                           "--label-field", "flair"], capsys)
        if code:
            assert str(dump) in err, err
            return
        assert summary["read"] == summary["imported"] + summary["filtered"] + summary["malformed"]
        assert summary["read"] == _counted_lines(dump)
        assert _counted_lines(project.root / "data" / "m.jsonl") == summary["imported"]


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_label_export_on_hostile_labels(data, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        posts = project.root / "data" / "posts.jsonl"
        posts.write_bytes(jsonl(data.draw(st.lists(post_record(project) | raw_lines, max_size=5))))
        decision = st.fixed_dictionaries({"id": st.sampled_from(["p1", "p2", "p3"]) | json_scalar}, optional={
            "label": st.sampled_from(["joy", "anger", "boredom"]) | json_scalar, "annotator": json_scalar,
            "undo": st.booleans(), "strategy": json_scalar, "time": json_scalar})
        labels = project.root / "labels.jsonl"
        labels.write_bytes(jsonl(data.draw(st.lists(decision | raw_lines | json_value, max_size=6))))
        out = project.root / "data" / "export" / "m.jsonl"
        code, summary, err = run(project, ["label", "export", str(labels), "--posts", str(posts), "-o", str(out),
                                           "--models", "none"], capsys)
        if code:
            assert str(labels) in err or str(posts) in err or "post " in err, err
            return
        assert summary["written"] == summary["labelled"] == _counted_lines(out)
        assert sum(summary["per_class"].values()) == summary["written"]


def ls_task():
    choice = st.sampled_from(["Joy", "anger", "Boredom", "", 3]) | json_value
    result = st.fixed_dictionaries({}, optional={"type": st.sampled_from(["choices", "labels"]) | json_scalar,
                                                 "from_name": st.sampled_from(["emotion", "other"]),
                                                 "value": st.fixed_dictionaries({}, optional={
                                                     "choices": st.lists(choice, max_size=2) | json_value}) |
                                                 json_value})
    annotation = st.fixed_dictionaries({}, optional={
        "result": st.lists(result, max_size=2) | json_value, "was_cancelled": json_scalar,
        "completed_by": json_value, "created_at": st.sampled_from(["2024-05-27T10:00:00Z", "x", 1e20]) | json_scalar,
        "meta": json_value})
    data = st.fixed_dictionaries({}, optional={"post_id": st.sampled_from(["p1", "p2", "p1", 0, ""]) | json_value,
                                               "text": json_value, "image": json_value, "video": json_value})
    return st.fixed_dictionaries({}, optional={"id": json_scalar, "data": data | json_value,
                                               "annotations": st.lists(annotation, max_size=2) | json_value})


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_from_label_studio_on_hostile_exports(data, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        tasks = project.root / "tasks.json"
        body = data.draw(st.lists(ls_task(), max_size=5) | json_value)
        tasks.write_text(json.dumps(body) if data.draw(st.integers(0, 9)) else "[" * 50_000)
        labels = project.root / "labels.jsonl"
        code, summary, err = run(project, ["label", "from-label-studio", str(tasks), "--posts-out",
                                           str(project.root / "data" / "posts.jsonl"), "--labels", str(labels),
                                           "--models", "none"], capsys)
        if code:
            assert str(tasks) in err, err
            assert not labels.exists()  # nothing appended from an export that was refused
            return
        assert summary["posts"] == summary["tasks"] == _counted_lines(project.root / "data" / "posts.jsonl")
        assert summary["added"] == summary["decisions"] == (_counted_lines(labels) if labels.exists() else 0)


@pytest.fixture(scope="module")
def loaded_model(trained_bundle: Path) -> EmoCare:
    return EmoCare.load(trained_bundle, "cpu")


@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_predict_manifest_on_hostile_manifests(data, trained_bundle: Path, loaded_model: EmoCare, capsys):
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(EmoCare, "load", lambda *_: loaded_model):
        # the bundle loaded once: the examples differ only in their manifests
        project = Project(Path(tmp))
        manifest = project.root / "data" / "manifest.jsonl"
        manifest.write_bytes(jsonl(data.draw(st.lists(post_record(project) | raw_lines, min_size=1, max_size=6))))
        out = project.root / "pred.jsonl"
        code, summary, err = run(project, ["predict", "--models", str(trained_bundle), "--device", "cpu",
                                           "--manifest", str(manifest), "-o", str(out), "--workers", "0",
                                           "--batch-size", "4"], capsys)
        assert code == 0, err  # every bad post is an error row, never the end of the run
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert summary["records"] == len(rows) == _counted_lines(manifest)
        assert summary["predicted"] + summary["errors"] == summary["records"]
        assert all(("error" in r) != ("label" in r) for r in rows)
        assert all((out.parent / r[k]).resolve().is_relative_to(project.root)
                   for r in rows for k in ("image", "video") if r.get(k))
