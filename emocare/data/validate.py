"""Record-by-record validation of a manifest: every record read is kept or quarantined with reasons."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from emocare.data.manifest import (
    MAX_TEXT_CHARS,
    Post,
    iter_manifest,
    post_from_record,
    resolve_media,
    text_too_long,
    unix_time,
)
from emocare.io import write_json, write_jsonl
from emocare.labels import DEFAULT, LabelSet
from emocare.media.image import DEFAULT_MAX_PIXELS, check_image
from emocare.media.video import check_video
from emocare.progress import progress_bar


@dataclass
class ValidationResult:
    """Kept posts, quarantined records (with reasons) and counts per reason."""

    kept: list[Post] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    read: int = 0

    @property
    def counts(self) -> dict:
        """read = kept + quarantined; ``unlabelled``: the kept posts without a label (``--allow-unlabelled``)."""
        reasons = Counter(r.split(":")[0] for q in self.quarantined for r in q["reasons"])
        return {"read": self.read, "kept": len(self.kept), "unlabelled": sum(p.label is None for p in self.kept),
                "quarantined": len(self.quarantined), "reasons": dict(sorted(reasons.items()))}


@dataclass
class Rules:
    """What a record must satisfy beyond the schema (the defaults are ``emocare validate``'s)."""

    labels: LabelSet = DEFAULT
    require_label: bool = True
    label_map: dict[str, str] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_text_chars: int = MAX_TEXT_CHARS
    media_root: Path | None = None  # see emocare.data.manifest: None is the working directory


def _check_record(rec: dict, root: Path, seen: set[str], rules: Rules) -> tuple[list[str], dict]:
    """Return (reasons, cleaned record) for one manifest record."""
    reasons: list[str] = []
    clean = dict(rec)
    post_id = rec.get("id")
    if not isinstance(post_id, str | int) or isinstance(post_id, bool) or str(post_id).strip() == "":
        reasons.append("invalid_schema: 'id' must be a non-empty string")
    else:
        clean["id"] = post_id = str(post_id)
        if post_id in seen:
            reasons.append(f"duplicate_id: {post_id!r} appears earlier in the manifest")
        seen.add(post_id)
    text = rec.get("text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        reasons.append("invalid_schema: 'text' must be a string")
        text = ""
    too_long = text_too_long(text, rules.max_text_chars)
    if too_long:
        reasons.append(too_long)
    clean["text"] = text
    if rec.get("created_utc") is not None:
        try:
            clean["created_utc"] = unix_time(rec["created_utc"])
        except ValueError as e:
            reasons.append(f"invalid_date: 'created_utc' {e}")
    if "label" in rec and rec["label"] is not None:
        label = rules.labels.normalise(rec["label"], rules.label_map)
        if label is None:
            reasons.append(f"unknown_label: {rec['label']!r} is not one of the labels {list(rules.labels)}")
        clean["label"] = label
    elif rules.require_label:
        reasons.append("missing_label: a label is required for training data")
    for key, check in (("image", lambda p: check_image(p, rules.max_pixels)), ("video", check_video)):
        value = rec.get(key)
        if value in (None, ""):
            clean.pop(key, None)
            continue
        if not isinstance(value, str):
            reasons.append(f"invalid_schema: '{key}' must be a path string")
            continue
        try:
            path = resolve_media(root, value, rules.media_root)
        except ValueError as e:
            reasons.append(("absolute_path: " if "absolute" in str(e) else "path_escapes: ") + str(e))
            continue
        if not path.is_file():
            reasons.append(f"missing_file: {key} {value} not found")
            continue
        problem = check(path)
        if problem:  # "code" or "code: detail"; the code alone is the summary's key, the file goes in the detail
            code, _, detail = problem.partition(": ")
            reasons.append(f"{code}: {key} {value}" + (f" ({detail})" if detail else ""))
            continue
    if not text.strip() and not any(rec.get(k) for k in ("image", "video")):
        reasons.append("empty_post: no text and no media")
    return reasons, clean


def validate_manifest(manifest: str | Path, rules: Rules | None = None) -> ValidationResult:
    """Check every record of ``manifest`` (schema, ids, labels, text length, dates, paths, media, emptiness)."""
    manifest, rules = Path(manifest), rules or Rules()
    root = manifest.parent
    result = ValidationResult()
    seen: set[str] = set()
    for line in progress_bar(iter_manifest(manifest), desc="validate", unit="post", leave=False):
        result.read += 1
        if line.record is None:
            result.quarantined.append({"line": line.line_no, "raw": line.raw, "reasons": [line.error]})
            continue
        reasons, clean = _check_record(line.record, root, seen, rules)
        if reasons:
            result.quarantined.append({"line": line.line_no, "record": line.record, "reasons": reasons})
        else:
            result.kept.append(post_from_record(clean, root))
    assert len(result.kept) + len(result.quarantined) == result.read
    return result


def write_validation(result: ValidationResult, posts_path: str | Path, quarantine_path: str | Path,
                     report_path: str | Path) -> dict:
    """Write kept posts (media paths relative to the posts file), quarantine and counts."""
    posts_path = Path(posts_path)
    write_jsonl(posts_path, (p.to_record(posts_path.parent.resolve()) for p in result.kept))
    write_jsonl(quarantine_path, result.quarantined)
    write_json(report_path, result.counts)
    return result.counts
