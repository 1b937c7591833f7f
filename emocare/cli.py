"""The ``emocare`` command: data import and checks, demo data, cache inspection, prediction, serving."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from emocare.bundle import MODELS_DIR, label_set, require_bundle
from emocare.io import MB
from emocare.labelling.decisions import RESOLVE
from emocare.labelling.queue import DEFAULT, STRATEGIES
from emocare.labelling.routing import LEASE_S, OVERLAP, K
from emocare.quantify import DEFAULT as QUANTIFIER
from emocare.quantify import METHODS
from emocare.reddit import cli as reddit_cli
from emocare.serving.config import ServeConfig


def _given(a: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` the user gave: the library functions own the defaults."""
    return {n: getattr(a, n) for n in names if getattr(a, n) is not None}


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_demo_data(a: argparse.Namespace) -> None:
    from emocare.data.demo import generate, summary

    _print(summary(generate(a.out_dir, **_given(a, "posts", "seed"))))


def cmd_validate(a: argparse.Namespace) -> None:
    from emocare.data.validate import Rules, validate_manifest, write_validation
    from emocare.labels import parse_label_map
    from emocare.params import project_labels

    out = Path(a.out)
    rules = Rules(labels=project_labels(a.labels), require_label=not a.allow_unlabelled,
                  label_map=parse_label_map(a.label_map),
                  **_given(a, "max_pixels", "max_text_chars", "media_root"))
    result = validate_manifest(a.manifest, rules)
    _print(write_validation(result, out / "posts.jsonl", out / "quarantine.jsonl", out / "validation.json"))


def cmd_import_csv(a: argparse.Namespace) -> None:
    from emocare.data.importers import import_csv
    from emocare.labels import parse_label_map
    from emocare.params import project_labels

    _print(import_csv(a.file, a.out, a.text_col, a.label_col, parse_label_map(a.label_map), a.id_col,
                      a.image_col, a.video_col, project_labels(a.labels)))


def cmd_cache_info(a: argparse.Namespace) -> None:
    from emocare.cache import cache_info

    print(cache_info(a.dir))


def cmd_predict(a: argparse.Namespace) -> dict | None:
    require_bundle(a.models)  # before torch loads: a wrong --models is reported at once
    if not a.manifest:
        from emocare.predict import EmoCare

        model = EmoCare.load(a.models, a.device, a.cpu_path)
        for notice in model.notices:
            print(notice, file=sys.stderr)
        return model.predict(text=a.text or "", image=a.image, video=a.video, min_confidence=a.min_confidence or 0.0)
    if not a.out:
        raise ValueError("--manifest needs -o/--out for the predictions file (.jsonl or .parquet)")
    if (a.nproc > 1 or a.torchrun_args) and "WORLD_SIZE" not in os.environ:  # re-run this command under torchrun
        from emocare import launch

        argv = launch.without_options(a.argv, "--nproc", "--torchrun-args")
        return launch.run(a.nproc, a.torchrun_args, __file__, argv)
    from emocare.bulk import predict_manifest

    return predict_manifest(a.models, a.manifest, a.out, device=a.device,
                            **_given(a, "batch_size", "workers", "media_errors", "min_confidence", "media_root",
                                    "cpu_path"))


def cmd_models_convert(a: argparse.Namespace) -> list[dict]:
    from emocare.models import convert_checkpoint

    return [convert_checkpoint(path) for path in a.checkpoints]


def cmd_trends(a: argparse.Namespace) -> dict:
    from emocare.trends import trends

    return trends(a.predictions, a.out, **_given(a, "by", "group", "min_confidence", "window", "min_posts", "top",
                                                 "examples_per_cell", "quantifier"))


def cmd_serve(a: argparse.Namespace) -> None:
    require_bundle(a.models)
    from emocare.serving.app import serve

    cfg = ServeConfig(max_upload_bytes=int(a.max_upload_mb * MB), max_text_chars=a.max_text_chars,
                      max_batch=a.max_batch, max_wait_ms=a.max_wait_ms, max_queue=a.max_queue, timeout_s=a.timeout_s,
                      access_log=a.access_log, max_pixels=a.max_pixels, body_timeout_s=a.body_timeout_s)
    serve(a.models, a.host, a.port, cfg, a.device)


def cmd_label(a: argparse.Namespace) -> None:
    from emocare.labelling.server import Session, serve
    from emocare.params import load_params

    params = load_params() if Path("params.yaml").is_file() else {}  # the live model's encoders: the project's
    vision = {m: {k: params[m][k] for k in ("backbone", "pretrained", "frames") if k in params[m]}
              for m in ("image", "video") if m in params}
    team = [n.strip() for n in (a.annotators or "").split(",") if n.strip()]
    session = Session.open(a.posts, a.labels, label_set(a.models), team[0] if team else a.annotator, a.strategy,
                           a.random_share, a.target, a.models, a.seed, a.overlap, a.k, a.lease,
                           ocr=bool(params.get("text", {}).get("ocr")), vision=vision)
    serve(session, a.host, a.port, team or None, a.admin, a.name or [])


def cmd_label_stats(a: argparse.Namespace) -> dict:
    from emocare.labelling.agreement import stats
    from emocare.labelling.store import open_labels

    return stats(open_labels(_existing(a.labels_file)).read(), list(label_set(a.models).names))


def cmd_label_import(a: argparse.Namespace) -> dict:
    from emocare.labelling.store import DB_SUFFIXES, LabelStore

    if Path(a.labels).suffix not in DB_SUFFIXES:
        raise ValueError(f"--labels {a.labels}: a labels database ends with one of {', '.join(DB_SUFFIXES)}")
    store = LabelStore(a.labels)
    return {"imported": store.import_log(_existing(a.labels_file)), "decisions": store.count(), "labels": a.labels}


def cmd_label_export(a: argparse.Namespace) -> dict:
    from emocare.labelling.export import export

    return export(_existing(a.labels_file), a.posts, a.out, label_set(a.models), a.resolve)


def cmd_label_to_ls(a: argparse.Namespace) -> dict:
    from emocare.labelling.labelstudio import to_label_studio

    return to_label_studio(a.posts, a.out, label_set(a.models), a.labels, a.media_url)


def cmd_label_from_ls(a: argparse.Namespace) -> dict:
    from emocare.labelling.labelstudio import from_label_studio

    return from_label_studio(_existing(a.tasks), a.posts_out, a.labels, label_set(a.models), a.media_url)


def _existing(path: str) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(f"labels file {path} not found")
    return path


def build_parser() -> argparse.ArgumentParser:
    """The ``emocare`` command line: one function below per command group, in the order ``--help`` lists them."""
    p = argparse.ArgumentParser(prog="emocare", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_file_tools(sub)
    _add_predict(sub)
    _add_trends(sub)
    _add_serve(sub)
    lab = sub.add_parser("label", help="label posts in the browser (`label POSTS --labels L`), `label stats`, "
                         "`label export`").add_subparsers(dest="label_command", required=True)
    _add_label_serve(lab)
    _add_label_files(lab)
    return p


def _add_data_commands(sub) -> None:
    """``demo-data``, ``validate``, ``import csv`` and the Reddit commands (:mod:`emocare.reddit.cli`)."""
    s = sub.add_parser("demo-data", help="write the synthetic demo set (manifest + PNG/MP4 media)")
    s.add_argument("out_dir")
    s.add_argument("--posts", type=int, help="how many posts")
    s.add_argument("--seed", type=int)
    s.set_defaults(func=cmd_demo_data)

    s = sub.add_parser("validate", help="validate a manifest: writes posts.jsonl, quarantine.jsonl, validation.json")
    s.add_argument("manifest")
    s.add_argument("-o", "--out", required=True, help="output folder")
    s.add_argument("--label-map", help="e.g. disgust=neutral,fear=neutral")
    s.add_argument("--labels", help="the classes, e.g. neutral,joy,fear (default: params.yaml's labels, else the five)")
    s.add_argument("--allow-unlabelled", action="store_true", help="accept posts without a label (prediction input)")
    s.add_argument("--max-pixels", type=int, help="larger images are quarantined (decompression bombs)")
    s.add_argument("--max-text-chars", type=int, help="longer texts are quarantined")
    s.add_argument("--media-root", type=Path,
                   help="media may lie inside the manifest's folder or this one (default: the working directory)")
    s.set_defaults(func=cmd_validate)

    imp = sub.add_parser("import", help="convert third-party data into a manifest").add_subparsers(
        dest="source", required=True)
    s = imp.add_parser("csv", help="a CSV or TSV file")
    s.add_argument("file")
    s.add_argument("--text-col", required=True)
    s.add_argument("--label-col")
    s.add_argument("--label-map", help="e.g. disgust=neutral,fear=neutral")
    s.add_argument("--labels", help="the classes, e.g. neutral,joy,fear (default: params.yaml's labels, else the five)")
    s.add_argument("--id-col")
    s.add_argument("--image-col")
    s.add_argument("--video-col")
    s.add_argument("-o", "--out", required=True)
    s.set_defaults(func=cmd_import_csv)
    reddit_cli.register(sub, imp)


def _add_file_tools(sub) -> None:
    """``cache info`` and ``models convert``."""
    cache = sub.add_parser("cache", help="embedding cache tools").add_subparsers(dest="action", required=True)
    s = cache.add_parser("info", help="shapes, attributes, per-split counts; checks the files line up")
    s.add_argument("dir", nargs="?", default="cache/embeddings")
    s.set_defaults(func=cmd_cache_info)
    models = sub.add_parser("models", help="model file tools").add_subparsers(dest="action", required=True)
    s = models.add_parser("convert", help="rewrite checkpoints you trust in the safe form (tensors and plain values)")
    s.add_argument("checkpoints", nargs="+", help="best_model.pt files; they are fully unpickled: trusted files only")
    s.set_defaults(func=cmd_models_convert)


def _add_predict(sub) -> None:
    s = sub.add_parser("predict", help="predict one post (--text/--image/--video) or a whole manifest")
    s.add_argument("--text")
    s.add_argument("--image")
    s.add_argument("--video")
    s.add_argument("--manifest", help="score every post of this manifest")
    s.add_argument("-o", "--out", help="predictions file with --manifest: .jsonl or .parquet")
    s.add_argument("--models", default=MODELS_DIR)
    s.add_argument("--batch-size", type=int, help="posts scored together")
    s.add_argument("--device", default="auto")
    s.add_argument("--cpu-path", choices=["auto", "fp32", "onnx", "bf16"],
                   help="how the encoders run on a CPU (default: params.yaml's cpu_path, else auto)")
    s.add_argument("--workers", type=int, help="DataLoader workers decoding media (default: the cores available)")
    s.add_argument("--media-errors", choices=["error", "text-only"],
                   help="a post whose media cannot be decoded: an error row, or scored on what it still has")
    s.add_argument("--min-confidence", type=float,
                   help="label a post 'uncertain' when its calibrated top probability is below this")
    s.add_argument("--media-root", type=Path,
                   help="media may lie inside the manifest's folder or this one (default: the working directory)")
    s.add_argument("--nproc", type=int, default=1, help="processes (GPUs) under torchrun, each a block of posts")
    s.add_argument("--torchrun-args", default="", help="extra torchrun arguments (several machines)")
    s.set_defaults(func=cmd_predict)


def _add_trends(sub) -> None:
    s = sub.add_parser("trends", help="emotion shares over time from predictions: trends.csv, trends.png, report.html")
    s.add_argument("predictions", help="the output of `emocare predict --manifest` (.jsonl or .parquet)")
    s.add_argument("-o", "--out", required=True, help="output folder")
    s.add_argument("--by", choices=["day", "week", "month"], help="the period of each point")
    s.add_argument("--group", help="a column to chart separately, e.g. subreddit")
    s.add_argument("--min-confidence", type=float,
                   help="leave out predictions whose calibrated top probability is below this (biases the shares)")
    s.add_argument("--window", type=int, help="periods in the trailing average that moves compare with")
    s.add_argument("--min-posts", type=int, help="periods with fewer posts are not ranked as moves")
    s.add_argument("--top", type=int, help="rows in the biggest-moves table")
    s.add_argument("--examples", type=int, dest="examples_per_cell", help="example posts per emotion and period")
    s.add_argument("--quantifier", choices=METHODS,
                   help=f"how a period's shares are estimated (default {QUANTIFIER}; README: Trends that measure "
                   "the community)")
    s.set_defaults(func=cmd_trends)


def _add_serve(sub) -> None:
    s = sub.add_parser("serve", help="HTTP service: POST /predict, GET /health /ready /metrics /labels, docs at /docs")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--models", default=MODELS_DIR)
    d = ServeConfig()  # the defaults' one owner
    s.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / MB, help="requests larger get 413")
    s.add_argument("--max-text-chars", type=int, default=d.max_text_chars,
                   help="longer texts get 413, as JSON or as a multipart field (validation's limit)")
    s.add_argument("--max-batch", type=int, default=d.max_batch, help="posts scored together in one model call")
    s.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="how long a batch may wait for posts still being read or decoded")
    s.add_argument("--max-queue", type=int, default=d.max_queue, help="requests in the service at once; then 503")
    s.add_argument("--timeout-s", type=float, default=d.timeout_s, help="a request not answered by then gets 504")
    s.add_argument("--max-pixels", type=int, default=d.max_pixels,
                   help="images with more pixels get 413, judged from their header (validation's limit)")
    s.add_argument("--body-timeout-s", type=float, default=d.body_timeout_s,
                   help="a request body not arrived by then gets 408 (read before the request is queued)")
    s.add_argument("--access-log", action="store_true", help="log every request (/metrics counts them anyway)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_serve)


def _add_label_serve(lab) -> None:
    """``label serve``: the labelling page, alone or for a team."""
    s = lab.add_parser("serve", help="the labelling page (the default: `emocare label POSTS ...`)")
    s.add_argument("posts", help="the posts to label (a manifest, e.g. validate's posts.jsonl)")
    s.add_argument("--labels", required=True, help="where decisions go: a database (.db; a team's) or a labels file "
                   "(.jsonl, appended to)")
    s.add_argument("--models", default=MODELS_DIR, help="the bundle that ranks posts, and whose classes are asked")
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface; put it "
                   "behind a TLS proxy, the links carry tokens)")
    s.add_argument("--name", action="append", help="a host name (or name:port) the team's browsers use for this "
                   "server, e.g. the TLS proxy's (repeatable)")
    s.add_argument("--port", type=int, default=8010)
    s.add_argument("--annotator", default=os.environ.get("USER") or "anonymous", help="a team of one")
    s.add_argument("--annotators", help="the team, e.g. ana,ben,chloe: a link each (more from the admin page)")
    s.add_argument("--admin", default="admin", help="the admin's name (the admin link: progress, agreement, review)")
    s.add_argument("--overlap", type=float, default=OVERLAP, help="the share of posts labelled by several annotators")
    s.add_argument("--k", type=int, default=K, help="annotators per overlap post")
    s.add_argument("--lease", type=float, default=LEASE_S, help="seconds a post handed out is held for its annotator")
    s.add_argument("--strategy", default=DEFAULT, choices=STRATEGIES,
                   help="balanced, margin, entropy, balanced-margin, random: the live model's order; mixed, "
                   "uncertainty: ranked up front by --models")
    s.add_argument("--random-share", type=float, default=0.2, help="the share of random picks (the evaluation sample)")
    s.add_argument("--target", type=int, help="labels wanted (default: every post)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_label)


def _add_label_files(lab) -> None:
    """``label stats``, ``import``, ``export`` and the Label Studio conversions: the decisions as files."""
    s = lab.add_parser("stats", help="counts, per-annotator figures, kappa, confusion, disagreements")
    s.add_argument("labels_file")
    s.add_argument("--models", default=MODELS_DIR)
    s.set_defaults(func=cmd_label_stats)
    s = lab.add_parser("import", help="a labels file's decisions into a labels database (.db)")
    s.add_argument("labels_file")
    s.add_argument("--labels", required=True, help="the database, e.g. labels.db (created if new)")
    s.set_defaults(func=cmd_label_import)
    s = lab.add_parser("export", help="the labelled posts as a manifest that validate and dvc repro take")
    s.add_argument("labels_file")
    s.add_argument("--posts", required=True, help="the posts file that was labelled")
    s.add_argument("-o", "--out", required=True, help="the manifest to write, e.g. labelled/manifest.jsonl")
    s.add_argument("--resolve", default="majority", choices=RESOLVE,
                   help="a post labelled by several annotators (and no reviewer's adjudication): the most frequent "
                   "label, or the latest")
    s.add_argument("--models", default=MODELS_DIR)
    s.set_defaults(func=cmd_label_export)
    s = lab.add_parser("to-label-studio", help="posts (and decisions) as Label Studio tasks JSON, with its config")
    s.add_argument("posts")
    s.add_argument("-o", "--out", required=True, help="the tasks file (.json); the labeling config goes beside (.xml)")
    s.add_argument("--labels", help="a labels file whose decisions become the tasks' annotations")
    s.add_argument("--media-url", default="", help="prefix of media paths, e.g. /data/local-files/?d=brawl/")
    s.add_argument("--models", default=MODELS_DIR)
    s.set_defaults(func=cmd_label_to_ls)
    s = lab.add_parser("from-label-studio", help="a Label Studio JSON export as posts and decisions")
    s.add_argument("tasks", help="Label Studio's JSON export")
    s.add_argument("--posts-out", required=True, help="the posts manifest to write (in the media paths' folder)")
    s.add_argument("--labels", required=True, help="the labels file the decisions are appended to")
    s.add_argument("--media-url", default="", help="the prefix to strip from media paths")
    s.add_argument("--models", default=MODELS_DIR)
    s.set_defaults(func=cmd_label_from_ls)


LABEL_COMMANDS = ("serve", "stats", "import", "export", "to-label-studio", "from-label-studio", "-h", "--help")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["label"] and argv[1:2] and argv[1] not in LABEL_COMMANDS:
        argv = ["label", "serve", *argv[1:]]  # `emocare label POSTS ...` is the page
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        result = args.func(args)
        if result is not None:
            _print(result)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"emocare: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
