"""Bulk prediction over a whole manifest: `emocare predict --manifest M -o OUT`.

- The manifest is indexed by the byte offset of each line (one pass, 8 bytes a post), so memory
  stays flat and any post can be read directly.
- DataLoader workers read and decode posts in manifest order, a whole batch each. On a GPU the main
  process scores the batches; on a CPU each worker also scores its own batch (:func:`scores_in_workers`).
- Under torchrun (``--nproc N``, or ``--torchrun-args`` for several machines) rank r takes the
  r-th contiguous block of posts. Rank 0 merges the blocks in rank order, which is manifest order.
- Resumable: each rank appends complete batches to ``OUT.parts/rank<r>-of-<w>.jsonl`` and, after
  each batch, atomically rewrites a small progress record beside it (rows done, bytes, counts).
  A re-run of the same command truncates the part to its last complete batch and continues. A
  changed manifest, model or setting starts over.
- Output rows: id, line, label (``uncertain`` below ``min_confidence``), calibrated probabilities, modalities used,
  their attribution (:func:`emocare.scoring.attribution`; and ``ocr_text``, the text read from its media, with a
  ``text.ocr`` bundle), the post's text and media paths
  (relative to OUT's folder), and the metadata fields in ``CARRY``, so that no join is needed.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emocare.bundle import fusion_path, provenance_path
from emocare.data.manifest import parse_line, scoring_problem, unix_time
from emocare.distributed import barrier, init_distributed, rank_world
from emocare.io import MAX_LINE_BYTES, MB, atomic_path, file_stamp, read_json, write_json
from emocare.labels import MODALITIES
from emocare.predict import NO_MODALITY, UNCERTAIN, EmoCare
from emocare.progress import progress_bar
from emocare.runtime import die_with_parent

CARRY = ("subreddit", "created_utc", "author", "url", "flair", "permalink", "score")
MEDIA_ERRORS = ("error", "text-only")


def line_offsets(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(byte offset, 1-based line number) of every non-blank line of ``path``; a line is read a MB at a time."""
    offsets, numbers, pos, start, number, blank = [], [], 0, 0, 1, True
    with open(path, "rb") as f:
        while piece := f.readline(MB):
            blank = blank and not piece.strip()
            pos += len(piece)
            if piece.endswith(b"\n"):
                if not blank:
                    offsets.append(start)
                    numbers.append(number)
                start, number, blank = pos, number + 1, True
    if not blank:  # a last line without its newline
        offsets.append(start)
        numbers.append(number)
    return np.asarray(offsets, np.int64), np.asarray(numbers, np.int64)


def default_workers(local_world: int = 1) -> int:
    """DataLoader workers per process: the cores this process may use, shared by the local ranks."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, local_world))


class ManifestPosts(Dataset):
    """Post ``i`` of a manifest, read at its byte offset and decoded for ``model``.

    An item is ``{"row", "line", "record", "inputs", "failed", "error"}``; ``error`` is set when
    the line itself is unusable (over ``MAX_LINE_BYTES``, not JSON, no id) or the post breaks the text limit
    or the path rule (:func:`emocare.data.manifest.scoring_problem`).
    """

    def __init__(self, manifest: Path, offsets: np.ndarray, numbers: np.ndarray, model: EmoCare,
                 media_root: Path | None = None):
        self.manifest, self.offsets, self.numbers, self.model = manifest, offsets, numbers, model
        self.media_root = media_root
        self._file = None  # opened in each worker

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        if self._file is None:
            self._file = open(self.manifest, "rb")  # noqa: SIM115 - one handle per worker for its lifetime
        self._file.seek(int(self.offsets[i]))
        raw = self._file.readline(MAX_LINE_BYTES + 1)  # never more than a line may hold
        if len(raw.removesuffix(b"\n")) > MAX_LINE_BYTES:
            line_no = int(self.numbers[i])
            return {"row": i, "line": line_no, "record": None, "inputs": {}, "failed": {},
                    "error": f"{self.manifest}:{line_no}: too_long: line {line_no} is over {MAX_LINE_BYTES} bytes"}
        line, _ = parse_line(raw, self.manifest, int(self.numbers[i]))
        item = {"row": i, "line": line.line_no, "record": None, "inputs": {}, "failed": {}, "error": line.error}
        if line.record is None:
            return item
        if line.record.get("id") in (None, ""):
            item["error"] = f"{self.manifest}:{line.line_no}: not a post object with an 'id'"
            return item
        post = dict(line.record)
        item["record"] = post
        problem = scoring_problem(post, self.manifest.parent, self.media_root)
        if problem:
            item["error"] = f"post {post['id']}: {problem}"
            return item
        item["inputs"], item["failed"] = self.model.decode(post)
        return item


def _carried(rec: dict) -> tuple[dict, str | None]:
    """The metadata a row carries, as its Parquet column types; or the first field that has no such value."""
    out = {}
    for key in CARRY:
        value = rec.get(key)
        if value is None:
            continue
        try:
            out[key] = unix_time(value) if key == "created_utc" else int(value) if key == "score" else str(value)
        except (TypeError, ValueError) as e:
            what = str(e) if key == "created_utc" else f"{value!r} is not a whole number"
            return out, f"post {rec['id']}: field '{key}' {what}"
    return out, None


def _row(item: dict, out_dir: Path) -> dict:
    """The output row for one post, before its prediction or error is added."""
    rec = item["record"] or {}
    row: dict = {"id": None if rec.get("id") is None else str(rec["id"]), "line": item["line"]}
    if rec:
        row["text"] = rec.get("text") or ""
        for key in ("image", "video"):
            if rec.get(key):
                row[key] = os.path.relpath(rec[key], out_dir)
        carried, problem = _carried(rec)
        row.update(carried)
        if problem:  # found before scoring, so the post is an error row, not a failed Parquet file at the end
            item["error"] = item["error"] or problem
        if rec.get("label") is not None:
            row["true_label"] = rec["label"]
    return row


def score_batch(model: EmoCare, items: list[dict], media_errors: str, out_dir: Path,
                min_confidence: float = 0.0) -> list[dict]:
    """Rows for a batch of decoded posts: a prediction, or an ``error``; ``degraded`` names media skipped and
    ``degraded_reason`` says why.

    With ``media_errors="error"`` a post whose media fails to decode gets an error; with
    ``"text-only"`` it is scored on the modalities it still has.
    """
    rows, todo, decoded = [], [], []
    for item in items:
        row = _row(item, out_dir)
        rows.append(row)
        failed = item["failed"]
        if item["error"]:
            row["error"] = item["error"]
        elif failed and media_errors == "error":
            row["error"] = next(iter(failed.values()))
        elif not item["inputs"]:
            row["error"] = "; ".join(failed.values()) or NO_MODALITY
        else:
            if failed:
                row["degraded"] = sorted(failed)
                row["degraded_reason"] = "; ".join(failed[m] for m in sorted(failed))
            todo.append(row)
            decoded.append(item["inputs"])
    for row, result in zip(todo, model.score(decoded, min_confidence), strict=True):
        row.update(result)
    return rows


def run_fingerprint(manifest: Path, models_dir: Path, settings: dict) -> dict:
    """What a progress record (or a cached result) must match for a re-run to reuse it."""
    return {"manifest": str(manifest.resolve()), "manifest_stamp": file_stamp(manifest),
            "models_stamp": file_stamp(fusion_path(models_dir)), **settings}


def _resume_state(progress: Path, part: Path, fingerprint: dict) -> dict:
    """The progress to continue from (truncating the part to its last complete batch), or a fresh one."""
    fresh = {"fingerprint": fingerprint, "rows_done": 0, "bytes": 0, "predicted": 0, "errors": 0, "degraded": 0,
             "uncertain": 0}
    if progress.exists() and part.exists():
        state = read_json(progress)
        if state.get("fingerprint") == fingerprint and part.stat().st_size >= state["bytes"]:
            with open(part, "r+b") as f:
                f.truncate(state["bytes"])  # drop a batch that was being written when the run died
            return state
        tqdm.write(f"{progress}: the manifest, models or settings changed since it was written; starting over",
                   file=sys.stderr)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"")
    write_json(progress, fresh)
    return fresh


def scores_in_workers(model: EmoCare, workers: int) -> bool:
    """Whether DataLoader workers score their batches themselves (encoders, fusion, rows), not only decode them.

    On a CPU: each worker runs its batch start to end on one thread (DataLoader workers run torch with one; the
    ONNX Runtime sessions take torch's count), so the cores stay busy with no hand-over between decoding and the
    towers and no threads waiting on each other; the main process only writes rows. On a GPU the main process
    scores, the model being on the device.
    """
    return workers > 0 and model.device.type == "cpu"


def predict_shard(model: EmoCare, manifest: Path, rows: range, part: Path, progress: Path, fingerprint: dict,
                  batch_size: int, workers: int, media_errors: str, out_dir: Path, index: tuple,
                  min_confidence: float = 0.0, media_root: Path | None = None) -> dict:
    """Score manifest rows ``rows`` into ``part``, a complete batch at a time; returns the shard's counts."""
    state = _resume_state(progress, part, fingerprint)
    todo = range(rows.start + state["rows_done"], rows.stop)
    ds = ManifestPosts(manifest, *index, model, media_root)
    score = partial(score_batch, model, media_errors=media_errors, out_dir=out_dir, min_confidence=min_confidence)
    in_workers = scores_in_workers(model, workers)
    loader = DataLoader(ds, batch_size=batch_size, sampler=todo, collate_fn=score if in_workers else list,
                        num_workers=workers, prefetch_factor=4 if workers else None, pin_memory=False,
                        worker_init_fn=die_with_parent)
    with open(part, "ab") as w, progress_bar(total=len(rows), initial=state["rows_done"], desc="predict", unit="post",
                                             smoothing=0.05, disable=rank_world()[0] != 0) as bar:
        for batch in loader:
            out = batch if in_workers else score(batch)
            w.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out).encode())
            w.flush()
            os.fsync(w.fileno())
            state["rows_done"] += len(out)
            state["bytes"] = w.tell()
            for r in out:
                state["errors" if "error" in r else "predicted"] += 1
                state["degraded"] += "degraded" in r
                state["uncertain"] += r.get("label") == UNCERTAIN
            write_json(progress, state)
            bar.update(len(out))
    return state


def _merge(parts: list[Path], out: Path, labels: list[str]) -> None:
    """Concatenate the rank parts (JSON Lines) in rank order into ``out`` (.jsonl or .parquet), atomically."""
    with atomic_path(out, suffix=out.suffix) as tmp:
        if out.suffix == ".parquet":
            _to_parquet(parts, tmp, labels)
        else:
            with open(tmp, "wb") as w:
                for part in parts:
                    with open(part, "rb") as r:
                        while chunk := r.read(1 << 20):
                            w.write(chunk)


def parquet_schema(labels: list[str]):
    """The Parquet schema of a predictions file (one column per row field; a probability per class)."""
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("line", pa.int64()), ("text", pa.string()), ("image", pa.string()),
        ("video", pa.string()), ("subreddit", pa.string()), ("created_utc", pa.float64()), ("author", pa.string()),
        ("url", pa.string()), ("flair", pa.string()), ("permalink", pa.string()), ("score", pa.int64()),
        ("true_label", pa.string()), ("label", pa.string()),
        ("probabilities", pa.struct([(c, pa.float64()) for c in labels])),
        ("modalities", pa.list_(pa.string())), ("attribution", pa.struct([(m, pa.float64()) for m in MODALITIES])),
        ("ocr_text", pa.string()), ("degraded", pa.list_(pa.string())),
        ("degraded_reason", pa.string()), ("error", pa.string()),
    ])


def _to_parquet(parts: list[Path], path: Path, labels: list[str], rows_per_group: int = 50_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(labels)
    with pq.ParquetWriter(path, schema) as writer:
        for part in parts:
            with open(part, encoding="utf-8") as f:
                buf = []
                for line in f:
                    buf.append(json.loads(line))
                    if len(buf) == rows_per_group:
                        writer.write_table(pa.Table.from_pylist(buf, schema))
                        buf = []
                if buf:
                    writer.write_table(pa.Table.from_pylist(buf, schema))


def predict_manifest(models_dir: str | Path, manifest: str | Path, out: str | Path, batch_size: int = 64,
                     workers: int | None = None, media_errors: str = "error", device: str = "auto",
                     min_confidence: float = 0.0, media_root: str | Path | None = None,
                     cpu_path: str | None = None) -> dict | None:
    """Score every post of ``manifest`` into ``out`` (resumable; sharded under torchrun); returns counts.

    Media paths follow the manifest's path rule (:mod:`emocare.data.manifest`): inside the manifest's folder
    or ``media_root`` (default: the working directory); a post that breaks it, or the text limit, is an error.

    Counts add up: records = predicted + errors; ``degraded`` (scored without some media) and
    ``uncertain`` (top probability below ``min_confidence``, labelled ``uncertain``) are part of
    ``predicted``. Under torchrun, rank 0 returns the counts and the other ranks None.
    """
    if media_errors not in MEDIA_ERRORS:
        raise ValueError(f"media_errors must be one of {MEDIA_ERRORS}, not {media_errors!r}")
    manifest, out, models_dir = Path(manifest), Path(out), Path(models_dir)
    if out.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"{out}: the predictions file must end in .jsonl or .parquet")
    if not manifest.exists():
        raise FileNotFoundError(f"manifest {manifest} not found")
    init_distributed(device)
    rank, world = rank_world()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    workers = default_workers(local_world) if workers is None else workers
    model = EmoCare.load(models_dir, device, cpu_path)  # cpu_path None: the project's (emocare.models.cpu_paths)
    for notice in model.notices if rank == 0 else ():
        tqdm.write(notice, file=sys.stderr)
    index = line_offsets(manifest)
    n = len(index[0])
    bounds = [n * r // world for r in range(world + 1)]
    parts_dir = out.with_name(out.name + ".parts")
    part = parts_dir / f"rank{rank}-of-{world}.jsonl"
    progress = parts_dir / f"rank{rank}-of-{world}.progress.json"
    fingerprint = run_fingerprint(manifest, models_dir, {"batch_size": batch_size, "media_errors": media_errors,
                                                      "min_confidence": min_confidence, "world": world, "rank": rank,
                                                      "media_root": str(Path(media_root or os.getcwd()).resolve()),
                                                      "cpu_paths": model.cpu_paths})
    if rank == 0:
        tqdm.write(f"predict: {n} posts, {world} process(es), {workers} DataLoader worker(s) each, "
                   f"batch {batch_size}, device {model.device}, encoders on {model.cpu_paths}", file=sys.stderr)
    predict_shard(model, manifest, range(bounds[rank], bounds[rank + 1]), part, progress, fingerprint, batch_size,
                  workers, media_errors, out.parent, index, min_confidence, media_root)
    barrier()
    summary = None
    if rank == 0:
        states = [read_json(parts_dir / f"rank{r}-of-{world}.progress.json") for r in range(world)]
        parts = [parts_dir / f"rank{r}-of-{world}.jsonl" for r in range(world)]
        _merge(parts, out, model.labels)
        write_json(provenance_path(out), {"models": str(models_dir), "label_set": model.label_set.to_dict(),
                                          "training_data": model.training_data, "validation": model.validation,
                                          "evaluation": model.evaluation})
        summary = {"records": sum(s["rows_done"] for s in states), "predicted": sum(s["predicted"] for s in states),
                   "errors": sum(s["errors"] for s in states), "degraded": sum(s["degraded"] for s in states),
                   "uncertain": sum(s["uncertain"] for s in states), "min_confidence": min_confidence,
                   "out": str(out), "processes": world, "workers": workers}
        assert summary["records"] == summary["predicted"] + summary["errors"] == n
        summary["uncertain_rate"] = round(summary["uncertain"] / max(summary["predicted"], 1), 4)
        for path in (*parts, *(parts_dir / f"rank{r}-of-{world}.progress.json" for r in range(world))):
            path.unlink()
        parts_dir.rmdir()
    barrier()
    return summary
