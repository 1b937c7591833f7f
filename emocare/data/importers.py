"""Converter from CSV/TSV files into the post manifest (Reddit post objects: :mod:`emocare.reddit`)."""

from __future__ import annotations

import csv
import itertools
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from emocare.data.manifest import CORE_FIELDS, resolve_media
from emocare.io import MAX_LINE_BYTES, jsonl_writer
from emocare.labels import DEFAULT, LabelSet


def _lines(f, path: Path) -> Iterator[str]:
    """The file's lines as text for the csv reader, each at most ``MAX_LINE_BYTES`` (never held longer) and
    UTF-8 (a byte-order mark at the start is dropped); either problem is an error naming the line."""
    for n, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
        if len(raw.removesuffix(b"\n")) > MAX_LINE_BYTES:
            raise ValueError(f"{path}: line {n} is over {MAX_LINE_BYTES} bytes")
        try:
            yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: line {n} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def import_csv(path: str | Path, out: str | Path, text_col: str, label_col: str | None,
               label_map: dict[str, str] | None = None, id_col: str | None = None,
               image_col: str | None = None, video_col: str | None = None, labels: LabelSet = DEFAULT) -> dict:
    """Convert a CSV or TSV file into a manifest; returns a summary with counts per label.

    Rows whose label is not one of ``labels`` (after ``label_map``) keep their raw label, so that
    validation checks it against the pipeline's classes (quarantined with a reason, never lost here).
    Media paths follow the manifest's path rule (:func:`emocare.data.manifest.resolve_media`: relative to the CSV's
    folder, inside it or the working directory) and are written relative to the output manifest's folder.
    Any other column is kept as metadata; one named like a manifest field (``id``, ``label``...) that is not the
    chosen column is kept as ``csv_<name>``, never over the chosen one. The reader is strict: a quote left open
    (which would swallow the rows after it), a row with the wrong number of fields, or a field over the csv
    module's size limit is an error naming its line; rows that span several lines (quoted line breaks) are
    counted in the summary with their first lines, so that rows merged by a stray quote can be seen.
    """
    path, out = Path(path), Path(out)
    chosen = {"text": text_col, "label": label_col, "id": id_col, "image": image_col, "video": video_col}
    line_no = 0  # the last line of the last row read
    with ExitStack() as stack, open(path, "rb") as f:  # the manifest is renamed into place only if all went well
        lines = _lines(f, path)
        header = next(lines, "")
        delimiter = "\t" if header.count("\t") > header.count(",") else ","
        reader = csv.reader(itertools.chain([header], lines), delimiter=delimiter, strict=True)
        try:
            columns = next(reader, [])
            missing = [c for c in chosen.values() if c and c not in columns]
            if missing:
                raise ValueError(f"{path}: column(s) {missing} not found; columns are {columns}")
            twice = sorted(c for c, k in Counter(columns).items() if k > 1)
            if twice:
                raise ValueError(f"{path}: column(s) {twice} appear more than once in the header")
            renamed = {c: f"csv_{c}" for c in columns if c in CORE_FIELDS and c != chosen[c]}
            clash = sorted(set(renamed.values()) & set(columns))
            if clash:
                raise ValueError(f"{path}: column(s) {sorted(renamed)} are named like manifest fields and would be "
                                 f"kept as {clash}, which are columns too: rename them")
            meta = [(i, renamed.get(c, c)) for i, c in enumerate(columns) if c not in chosen.values()]
            write = jsonl_writer(stack, out)
            rows, counts, multiline, line_no = 0, Counter(), [], reader.line_num
            for values in reader:
                first, line_no = line_no + 1, reader.line_num
                if not values:  # a blank line
                    continue
                rows += 1
                if line_no > first:
                    multiline.append(first)
                if len(values) != len(columns):
                    raise ValueError(f"{path}: line {first}: {len(values)} field(s) where the header has "
                                     f"{len(columns)} (a stray quote or delimiter?)")
                row = dict(zip(columns, values, strict=True))
                rec: dict = {"id": row[id_col] if id_col else f"{path.stem}-{rows}", "text": row[text_col]}
                if label_col:
                    rec["label"] = labels.normalise(row[label_col], label_map) or row[label_col]
                    counts[rec["label"]] += 1
                for key in ("image", "video"):
                    if chosen[key] and row[chosen[key]]:
                        try:
                            media = resolve_media(path.parent, row[chosen[key]])
                        except ValueError as e:
                            raise ValueError(f"{path}: line {first}: {key}: {e}") from None
                        rec[key] = os.path.relpath(media, out.parent.resolve())
                rec.update((name, values[i]) for i, name in meta)
                write(rec)
        except csv.Error as e:
            why = (f"a field over the csv module's limit of {csv.field_size_limit():,} characters"
                   if "field larger" in str(e) else "a quote opened there is never closed: it would swallow every "
                   "row after it" if "end of data" in str(e) else "a stray quote?")
            raise ValueError(f"{path}: the row starting at line {line_no + 1}: {e} ({why})") from None
    return {"rows": rows, "labels": dict(counts.most_common()),
            "renamed_columns": renamed, "rows_spanning_lines": {"count": len(multiline), "first_lines": multiline[:10]}}
