"""Real memes through the pipeline as a user runs it (`emocare import csv --image-col`, then `dvc repro`), for the
vision towers and the OCR switch, against TF-IDF + logistic regression on the same split. Prints JSON.

LABELS.csv has a row per meme: an image path (relative to the CSV), its text and its label (e.g. the
CM-Off-Meme set's sentiment: negative, neutral, positive). The variants, each a fresh copy of this repository
with its own `dvc repro`:

- ``scratch``: the offline default before EfficientNet, ``EmoCare-ViT-Tiny-64`` trained from scratch;
- ``pretrained``: this repository's params (EfficientNet-Lite0, ImageNet weights, frozen);
- ``ocr``: the same with ``text.ocr: true``;
- ``title``, ``title+ocr``: every post's text replaced by an uninformative title ("meme"), as on a Reddit
  image post whose title says nothing; without and with OCR.

All variants share one decoded-frames store (so EfficientNet's features and the OCR text are computed once)
and, for each of ``--split-seeds``, one split (the same labels, seed and fractions); ``summary`` gives each
variant's mean over the seeds and the mean and range of fusion minus text alone. OCR's word recall and
precision against the CSV's text (lower-cased words) and its seconds per image (one process, the store off)
are measured on ``--ocr-sample`` images.

    python benchmarks/real_memes.py LABELS.csv [--variants scratch,pretrained,ocr,title,title+ocr]
                                              [--split-seeds 42,1,2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml
from fusion_experiment import copy_repository, sh
from own_labels import tfidf_baseline

SCRATCH_TOWER = {"backbone": "EmoCare-ViT-Tiny-64", "pretrained": None, "freeze": False, "epochs": 12, "lr": 5.0e-4,
                 "patience": 4}  # the offline default before EfficientNet-Lite0 (its warmup: 30 image, 15 video)
TITLE = "meme"
VARIANTS = {"scratch": ({"image": {**SCRATCH_TOWER, "warmup_steps": 30}}, False),
            "pretrained": ({}, False), "ocr": ({"text": {"ocr": True}}, False),
            "title": ({}, True), "title+ocr": ({"text": {"ocr": True}}, True)}


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ocr_quality(rows: list[dict], folder: Path, sample: int, store: Path) -> dict:
    """Word recall and precision of the OCR engine against the CSV's text, and seconds per image (each image read
    for the first time, and kept in ``store`` for the variants)."""
    from emocare.media.ocr import ENGINE, media_text

    hit = ref = found = right = 0
    started = time.perf_counter()
    for r in rows[:sample]:
        truth, read = Counter(words(r["text"])), Counter(words(media_text(folder / r["image"], "image", store)))
        hit += sum((truth & read).values())
        ref += sum(truth.values())
        found += sum(read.values())
        right += sum((read & truth).values())
    seconds = time.perf_counter() - started
    return {"engine": ENGINE, "images": min(sample, len(rows)), "word_recall": round(hit / max(ref, 1), 4),
            "word_precision": round(right / max(found, 1), 4), "s_per_image": round(seconds / max(sample, 1), 3)}


def run_variant(name: str, data: Path, frames: Path, labels: list[str], split_seed: int) -> dict:
    overrides, title_only = VARIANTS[name]
    manifest = data / f"{name}.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        copy_repository(repo)
        _, imported = sh(repo, sys.executable, "-m", "emocare.cli", "import", "csv",
                         str(data / ("titles.csv" if title_only else "labels.csv")), "--text-col", "text",
                         "--label-col", "label", "--image-col", "image", "--labels", ",".join(labels),
                         "-o", str(manifest))
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["labels"] = labels
        params["data"].update(manifest=str(manifest), root=str(data))
        params["frame_store"] = str(frames)
        params["split"]["seed"] = split_seed
        for section, values in overrides.items():
            params[section].update(values)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        wall, _ = sh(repo, sys.executable, "-m", "dvc", "repro")
        metrics = json.loads((repo / "reports" / "metrics.json").read_text())
        image = json.loads((repo / "reports" / "image" / "info.json").read_text())
        return {"split_seed": split_seed, "dvc_repro_s": round(wall, 1), "image_backbone": image.get("backbone"),
                "image_pretrained_source": image.get("pretrained_source"), "image_frozen": image.get("frozen"),
                "text_ocr": bool(params["text"].get("ocr")),
                "validation": json.loads((repo / "reports" / "data" / "validation.json").read_text()),
                "test_macro_f1": {"fusion": metrics["test"]["macro_f1"], **{
                    f"{m}_alone": v for m, v in metrics["specialist_alone"].items() if v is not None}},
                "tfidf_logreg": tfidf_baseline(repo, labels),
                "import": json.loads(imported[imported.index("{"):])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels_csv", type=Path)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--ocr-sample", type=int, default=100, help="images for OCR word accuracy and speed")
    ap.add_argument("--split-seeds", default="42", help="split.seed values, comma-separated: one split each")
    ap.add_argument("--workdir", type=Path, help="keep the copied memes (data/) and the frame store (frames/: "
                    "decoded frames, EfficientNet features, OCR text) here, for a later run to reuse")
    a = ap.parse_args()
    with open(a.labels_csv, encoding="utf-8", newline="") as f:
        rows = [{"image": r["image"], "text": r["text"], "label": r["label"].strip().lower()}
                for r in csv.DictReader(f)]
    labels = sorted({r["label"] for r in rows})
    out: dict = {"memes": len(rows), "labels": dict(Counter(r["label"] for r in rows).most_common())}
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        data, frames = work / "data", work / "frames"
        for r in rows:  # a copy inside the data root the manifests declare
            (data / r["image"]).parent.mkdir(parents=True, exist_ok=True)
            if not (data / r["image"]).is_file():  # the stores key a file by its path, size and time
                shutil.copy2(a.labels_csv.parent / r["image"], data / r["image"])
        for name, text in (("labels.csv", None), ("titles.csv", TITLE)):
            with open(data / name, "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, ["image", "text", "label"])
                writer.writeheader()
                writer.writerows({**r, "text": text or r["text"]} for r in rows)
        out["ocr"] = ocr_quality(rows, data, a.ocr_sample, frames)
        print(json.dumps({"ocr": out["ocr"]}), file=sys.stderr, flush=True)
        runs: dict[str, list[dict]] = {}
        for seed in (int(x) for x in a.split_seeds.split(",")):
            for name in a.variants.split(","):
                runs.setdefault(name, []).append(run_variant(name, data, frames, labels, seed))
                print(json.dumps({name: runs[name][-1]}), file=sys.stderr, flush=True)
    out["runs"] = runs
    out["summary"] = {name: summary(r) for name, r in runs.items()}
    print(json.dumps(out, indent=2))


def summary(runs: list[dict]) -> dict:
    """A variant's test macro-F1 averaged over its split seeds, and fusion minus text alone (mean, min, max)."""
    score = {k: [r["test_macro_f1"][k] for r in runs] for k in runs[0]["test_macro_f1"]}
    score["tfidf_logreg"] = [r["tfidf_logreg"]["test_macro_f1"] for r in runs]
    gain = [r["test_macro_f1"]["fusion"] - r["test_macro_f1"]["text_alone"] for r in runs]
    return {"seeds": len(runs), **{k: round(statistics.fmean(v), 4) for k, v in score.items()},
            "fusion_minus_text": {"mean": round(statistics.fmean(gain), 4), "min": round(min(gain), 4),
                                  "max": round(max(gain), 4)}}


if __name__ == "__main__":
    main()
