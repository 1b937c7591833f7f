"""Label Studio's JSON, for teams who already label there: posts out as tasks (with the decisions as
annotations), and a Label Studio export back in as posts and decisions.

A task is ``{"id", "data": {"post_id", "text", "image", "video", ...metadata}, "annotations": [...]}`` (every
task has ``image`` and ``video``, empty when the post has none: Label Studio refuses a task without a field its
config names); an annotation holds one ``choices`` result from the control ``from_name`` (default ``emotion``).
The annotator's name goes in the annotation's ``meta`` (Label Studio's ``completed_by`` must be one of the
project's members); an export's ``completed_by`` comes back as the annotator. Media go out as ``--media-url`` +
the path relative to the posts file, percent-encoded (Label Studio's local-files storage serves
``/data/local-files/?d=<path>``), and come back decoded with the prefix removed. :func:`labeling_config` writes
the matching project config.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote
from xml.sax.saxutils import quoteattr

from emocare.data.manifest import iter_manifest
from emocare.io import read_json, write_json, write_jsonl, write_text
from emocare.labelling.decisions import current
from emocare.labelling.store import open_labels
from emocare.labels import LabelSet

FROM_NAME = "emotion"
STRATEGY = "label-studio"  # the strategy recorded for a decision imported from Label Studio


def labeling_config(classes: LabelSet, from_name: str = FROM_NAME) -> str:
    """The Label Studio project config that shows a post (text, image, video) with one choice per class."""
    choices = "\n".join(f"    <Choice value={quoteattr(classes.display[c])} alias={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Text name="text" value="$text"/>\n  <Image name="image" value="$image"/>\n'
            f'  <Video name="video" value="$video"/>\n  <Choices name={quoteattr(from_name)} toName="text" '
            f'choice="single" showInline="true">\n{choices}\n  </Choices>\n</View>\n')


def to_label_studio(posts_path: str | Path, out: str | Path, classes: LabelSet, labels_path: str | Path | None = None,
                    media_url: str = "", from_name: str = FROM_NAME) -> dict:
    """Write ``out`` (tasks JSON) and ``out``'s ``.xml`` labeling config; returns counts."""
    posts_path, out = Path(posts_path), Path(out)
    standing = current(open_labels(labels_path).read()) if labels_path else {}
    by_post: dict[str, list[dict]] = {}
    for (_, pid), r in sorted(standing.items(), key=lambda kv: kv[1]["time"]):
        by_post.setdefault(pid, []).append(r)
    tasks = []
    for n, line in enumerate(iter_manifest(posts_path), 1):
        if line.record is None:
            raise ValueError(f"{posts_path}: {line.error}")
        rec = dict(line.record)
        pid = str(rec.pop("id"))
        rec.pop("label", None)
        data = {"post_id": pid, "text": rec.pop("text", "") or "", **rec}
        for key in ("image", "video"):
            data[key] = media_url + quote(str(data[key])) if data.get(key) else ""
        annotations = [{"result": [{"from_name": from_name, "to_name": "text", "type": "choices",
                                    "value": {"choices": [r["label"]]}}],
                        "meta": {"annotator": r["annotator"]}, "was_cancelled": False, "ground_truth": False,
                        "created_at": datetime.fromtimestamp(r["time"], UTC).isoformat()}
                       for r in by_post.get(pid, [])]
        tasks.append({"id": n, "data": data, "annotations": annotations})
    write_json(out, tasks)
    write_text(out.with_suffix(".xml"), labeling_config(classes, from_name))
    return {"tasks": len(tasks), "annotations": sum(len(t["annotations"]) for t in tasks), "out": str(out),
            "config": str(out.with_suffix(".xml"))}


def _annotator(annotation: dict) -> str:
    if isinstance(annotation.get("meta"), dict) and annotation["meta"].get("annotator"):
        return str(annotation["meta"]["annotator"])
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("username") or who.get("id") or "label-studio")
    return f"label-studio-user-{who}" if who is not None else "label-studio"


def from_label_studio(tasks_path: str | Path, posts_out: str | Path, labels_path: str | Path, classes: LabelSet,
                      media_url: str = "", from_name: str = FROM_NAME) -> dict:
    """Read a Label Studio JSON export: its tasks become ``posts_out`` (a manifest; its media paths are as the
    tasks give them, so write it in the folder they are relative to) and each choice annotation a decision
    appended to ``labels_path``; returns counts."""
    tasks_path = Path(tasks_path)
    try:
        tasks = read_json(tasks_path)
    except (ValueError, RecursionError) as e:  # RecursionError: nested past the parser's depth
        raise ValueError(f"{tasks_path}: not valid JSON ({str(e) or 'nested too deeply'})") from None
    if not isinstance(tasks, list):
        raise ValueError(f"{tasks_path}: expected Label Studio's JSON export, a list of tasks")
    by_name = {c: c for c in classes} | {classes.display[c].lower(): c for c in classes}
    posts, decisions, cancelled, first_task = [], [], 0, {}
    for n, task in enumerate(tasks, 1):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise ValueError(f"{tasks_path}: task {n} has no data object")
        pid = data.get("post_id") or task.get("id") or n
        if isinstance(pid, bool) or not isinstance(pid, str | int):
            raise ValueError(f"{tasks_path}: task {n}: the post id must be a string or a number, not {pid!r:.80}")
        pid = str(pid)
        if pid in first_task:  # merging them would keep one post and lose the other's decisions' meaning
            raise ValueError(f"{tasks_path}: tasks {first_task[pid]} and {n} have the same post id {pid!r}: "
                             "each post must be one task")
        first_task[pid] = n
        post = {**{k: v for k, v in data.items() if k != "post_id"}, "id": pid}
        for key in ("image", "video"):
            value = post.get(key)
            if not value:
                post.pop(key, None)
            elif isinstance(value, str) and value.startswith(media_url):
                post[key] = unquote(value[len(media_url):])
        posts.append(post)
        where = f"{tasks_path}: task {n} (post {pid!r})"
        for annotation in _objects(task.get("annotations"), f"{where}: 'annotations'"):
            if annotation.get("was_cancelled"):
                cancelled += 1
                continue
            for result in _objects(annotation.get("result"), f"{where}: an annotation's 'result'"):
                if result.get("type") != "choices" or result.get("from_name") != from_name:
                    continue
                value = result.get("value")
                choices = value.get("choices") if isinstance(value, dict) else None
                if not isinstance(choices, list):
                    raise ValueError(f"{where}: a choices result without a list of 'choices': {value!r:.80}")
                for choice in choices:
                    label = by_name.get(str(choice)) or by_name.get(str(choice).lower())
                    if label is None:
                        raise ValueError(f"{where}: choice {choice!r:.80} is not one of the classes "
                                         f"{list(classes.names)}")
                    decisions.append(({"id": pid, "label": label, "annotator": _annotator(annotation),
                                       "strategy": STRATEGY, "score": None}, _time(annotation.get("created_at"))))
    write_jsonl(posts_out, posts)
    log = open_labels(labels_path)
    kept = log.read()
    timed = {(r["id"], r.get("label"), r.get("annotator"), r.get("time")) for r in kept}
    untimed = {key[:3] for key in timed}
    new = []
    for d, at in decisions:  # importing the same export again adds nothing
        key = (d["id"], d["label"], d["annotator"])
        if (key + (at,) if at is not None else key) not in (timed if at is not None else untimed):
            new.append((d, at))
    log.append_all(new)  # one fsync: durable together, as the export was read together
    return {"tasks": len(tasks), "posts": len(posts), "decisions": len(decisions), "added": len(new),
            "cancelled": cancelled, "posts_out": str(posts_out), "labels": str(labels_path)}


def _objects(value, what: str) -> list[dict]:
    """``value`` as a list of JSON objects (none when absent), else an error naming ``what``."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{what} must be a list of objects, not {value!r:.80}")
    return value


def _time(created_at) -> float | None:
    """Label Studio's ``created_at`` (ISO 8601) as a Unix time, rounded as the labels file keeps it."""
    try:
        dt = datetime.fromisoformat(str(created_at).replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp(), 3)
