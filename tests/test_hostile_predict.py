"""`emocare predict --manifest` on hostile manifests (issue 39): media outside the allowed folders are never
opened and their errors do not say whether a file is there; over-long texts and lines are error rows naming
the post while the other posts are written, with memory bounded."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from emocare.bulk import predict_manifest
from emocare.data.manifest import MAX_TEXT_CHARS
from emocare.io import MAX_LINE_BYTES


def _predict(bundle: Path, manifest: Path, out: Path, **kw) -> tuple[dict, dict]:
    summary = predict_manifest(bundle, manifest, out, batch_size=4, workers=0, device="cpu", **kw)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    return summary, {r["id"] or r["line"]: r for r in rows}


def test_media_outside_the_folders_is_refused_without_opening_it(trained_bundle: Path, tmp_path: Path,
                                                                  monkeypatch):
    project = tmp_path / "project"
    folder = project / "m"
    folder.mkdir(parents=True)
    secret = tmp_path / "secret.png"  # outside the project: exists
    secret.write_bytes(b"not for you")
    (folder / "link.png").symlink_to(secret)  # inside the folder, pointing out of it
    gone = tmp_path / "nothing-here.png"
    posts = [{"id": "good", "text": "so happy today"},
             {"id": "abs-there", "text": "x", "image": str(secret)},
             {"id": "abs-gone", "text": "x", "image": str(gone)},
             {"id": "up-there", "text": "x", "image": "../../secret.png"},
             {"id": "up-gone", "text": "x", "image": "../../nothing-here.png"},
             {"id": "link", "text": "x", "image": "link.png"},
             {"id": "video", "text": "x", "video": str(secret)},
             {"id": "typed", "text": "x", "image": {"path": str(secret)}}]
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(p) + "\n" for p in posts))
    monkeypatch.chdir(project)  # the media root
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(os.path.realpath(file) if isinstance(file, str | os.PathLike) else repr(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    summary, rows = _predict(trained_bundle, manifest, tmp_path / "pred.jsonl")
    monkeypatch.setattr(builtins, "open", real_open)
    assert not [f for f in opened if f in (str(secret), str(gone))], "a file outside the roots was opened"
    assert summary["records"] == 8 == summary["predicted"] + summary["errors"] and summary["errors"] == 7
    assert rows["good"]["label"] and "error" not in rows["good"]
    root = project.resolve()
    assert rows["abs-there"]["error"] == f"post abs-there: image: absolute path not allowed: {secret}"
    assert rows["abs-gone"]["error"] == f"post abs-gone: image: absolute path not allowed: {gone}"
    escapes = "path escapes the manifest folder and the media root {}: {}"
    assert rows["up-there"]["error"] == "post up-there: image: " + escapes.format(root, "../../secret.png")
    assert rows["up-gone"]["error"] == "post up-gone: image: " + escapes.format(root, "../../nothing-here.png")
    assert rows["link"]["error"] == "post link: image: " + escapes.format(root, "link.png")
    assert rows["video"]["error"] == f"post video: video: absolute path not allowed: {secret}"
    assert rows["typed"]["error"] == "post typed: invalid_schema: 'image' must be a path string"
    assert not any("image" in r or "video" in r for r in rows.values())  # no outside path reaches the output
    # the same manifest with the secret's folder as the media root: the relative paths are allowed again
    summary, rows = _predict(trained_bundle, manifest, tmp_path / "pred2.jsonl", media_root=tmp_path)
    assert "could not be decoded" in rows["up-there"]["error"] and "absolute" in rows["abs-there"]["error"]


def test_over_long_texts_and_lines_are_error_rows_and_the_rest_is_written(trained_bundle: Path, tmp_path: Path):
    lines = [json.dumps({"id": "before", "text": "so angry"}),
             json.dumps({"id": "long-text", "text": "a" * (MAX_TEXT_CHARS + 1)}),
             json.dumps({"id": "huge-line", "text": "b" * (MAX_LINE_BYTES + 10)}),
             json.dumps({"id": "not-text", "text": ["a", "list"]}),
             json.dumps({"id": "after", "text": "so sad"})]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    summary, rows = _predict(trained_bundle, manifest, tmp_path / "pred.jsonl")
    assert summary["records"] == 5 and summary["predicted"] == 2 and summary["errors"] == 3
    assert rows["before"]["label"] and rows["after"]["label"]
    assert rows["long-text"]["error"] == (f"post long-text: text_too_long: {MAX_TEXT_CHARS + 1:,} characters, over "
                                          f"the limit of {MAX_TEXT_CHARS:,}")
    assert rows["long-text"]["text"] == ""  # the row does not carry the text it refused
    assert rows[3]["error"] == f"{manifest}:3: too_long: line 3 is over {MAX_LINE_BYTES} bytes"
    assert rows["not-text"]["error"] == "post not-text: invalid_schema: 'text' must be a string"


def test_a_huge_post_does_not_grow_memory(trained_bundle: Path, tmp_path: Path):
    """Peak RSS of `predict` on a manifest with a 40 MB post, against the same manifest without it (one child
    process, the clean run first): the post is refused after reading at most MAX_LINE_BYTES of it."""
    good = "".join(json.dumps({"id": f"p{i}", "text": "so happy today"}) + "\n" for i in range(8))
    (tmp_path / "clean.jsonl").write_text(good)
    with open(tmp_path / "huge.jsonl", "w") as f:
        f.write(good[: len(good) // 2] + json.dumps({"id": "huge", "text": "z" * 40_000_000}) + "\n" +
                good[len(good) // 2:])
    script = textwrap.dedent(f"""
        import json, resource, sys
        from emocare.bulk import predict_manifest
        peaks = []
        for name in ("clean", "huge"):
            s = predict_manifest({str(trained_bundle)!r}, {str(tmp_path)!r} + f"/{{name}}.jsonl",
                                 {str(tmp_path)!r} + f"/{{name}}-pred.jsonl", batch_size=4, workers=0, device="cpu")
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            print(json.dumps(s), file=sys.stderr)
        print(json.dumps(peaks))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    clean_mb, huge_mb = json.loads(done.stdout)
    print(json.dumps({"peak_rss_mb": {"clean": round(clean_mb), "with_40mb_post": round(huge_mb)}}))
    assert huge_mb - clean_mb < 100, (clean_mb, huge_mb)
    rows = [json.loads(x) for x in (tmp_path / "huge-pred.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and sum("error" in r for r in rows) == 1 and "too_long" in rows[4]["error"]
