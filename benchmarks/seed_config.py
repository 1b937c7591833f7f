"""The original study's configuration, timed end to end: `dvc repro` with configs/seed.yaml.

Copies the working tree into DEST, writes configs/seed.yaml as its params.yaml with these
changes only, then times `dvc repro` stage by stage while sampling GPU utilisation:
- the backbones' weights cannot be downloaded here, so both are RANDOMLY INITIALISED with the same
  architectures: DistilBERT (`DistilBertConfig()` defaults, the shape of distilbert-base-uncased,
  saved with the BERT-uncased tokenizer given by --tokenizer) and open_clip ViT-B-32 (`pretrained:
  null`), with `offline: true`;
- `demo.posts` (6,250 by default, as the original study's dataset);
- `num_workers: auto` for training and embedding (this project's default) instead of the fixed 4.
Prints JSON: per-stage wall time and mean GPU utilisation, the total, what was initialised randomly.
DEST is kept, so `benchmarks/embed_throughput.py` can run in it afterwards.

    python benchmarks/seed_config.py DEST --tokenizer DIR [--posts 6250]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from fusion_experiment import GIT, REPO, copy_repository  # benchmarks/, beside this script


def random_distilbert(dest: Path, tokenizer_dir: Path, **config) -> Path:
    """A save_pretrained() folder: distilbert-base-uncased's architecture (or ``config``'s changes), random
    weights."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(**config)).save_pretrained(dest)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(dest)
    return dest


class GpuSampler(threading.Thread):
    """(time, utilisation %) every 0.5 s from nvidia-smi, until stopped; no samples where there is no nvidia-smi
    (a CPU machine: every mean is then None)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu",
                                          "--format=csv,noheader,nounits", "-lms", "500"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except FileNotFoundError:
            self.proc = None

    def run(self) -> None:
        for line in self.proc.stdout if self.proc else ():
            if line.strip().isdigit():  # the first GPU's line (one GPU per run here)
                self.samples.append((time.perf_counter(), float(line)))

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def mean(self, start: float, end: float) -> float | None:
        values = [u for t, u in self.samples if start <= t <= end]
        return round(sum(values) / len(values), 1) if values else None


def run_seed(dest: Path, tokenizer: Path, posts: int = 6250, changes: dict | None = None,
             distilbert: dict | None = None, gpu: GpuSampler | None = None) -> dict:
    """configs/seed.yaml (with the changes above, then ``changes``: {section: {key: value}}) run by `dvc repro` in a
    copy of the repository at ``dest``; per-stage wall time and mean GPU utilisation (from ``gpu``, else a sampler
    of its own). ``distilbert``: DistilBertConfig changes (a smaller text backbone for a smoke run)."""
    copy_repository(dest)  # committed before params.yaml changes: the run's params differ from the copy's
    params = yaml.safe_load((REPO / "configs" / "seed.yaml").read_text())
    backbone = random_distilbert(dest / "backbones" / "distilbert-random", tokenizer, **(distilbert or {}))
    params["offline"] = True
    overrides = {"train.num_workers": "auto", "embed.num_workers": "auto"}  # this project's default: by device, cores
    params["train"]["num_workers"] = params["embed"]["num_workers"] = "auto"
    params["demo"]["posts"] = posts
    params["text"]["backbone"] = str(backbone)
    for m in ("image", "video"):
        params[m]["pretrained"] = None
    for section, values in (changes or {}).items():
        params[section].update(values)
        overrides.update({f"{section}.{k}": v for k, v in values.items()})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([*GIT, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-qm", "seed configuration"], cwd=dest, check=True)

    own_sampler = gpu is None
    if own_sampler:
        gpu = GpuSampler()
        gpu.start()
    # PYTHONPATH: the copy's stages import the copy's emocare, not this working tree's (packages carried to a
    # lent GPU, on the PYTHONPATH given, stay importable)
    path = os.pathsep.join([str(dest), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=dest, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    marks: list[tuple[str, float]] = []
    log = []
    for line in proc.stdout:
        log.append(line)
        if m := re.match(r"Running stage '([^']+)'", line):
            marks.append((m.group(1), time.perf_counter()))
            print(f"{time.perf_counter() - started:7.1f} s  {m.group(1)}", file=sys.stderr, flush=True)
    rc = proc.wait()
    ended = time.perf_counter()
    if own_sampler:
        gpu.stop()
    if rc:
        raise RuntimeError("dvc repro failed:\n" + "".join(log[-60:]))
    ends = [t for _, t in marks[1:]] + [ended]
    stages = {name: {"wall_s": round(end - start, 1), "gpu_util_mean_pct": gpu.mean(start, end)}
              for (name, start), end in zip(marks, ends, strict=True)}
    infos = {m: json.loads((dest / "reports" / m / "info.json").read_text()) for m in ("text", "image", "video")}
    return {
        "posts": posts, "total_s": round(ended - started, 1), "stages": stages,
        "gpu_util_mean_pct": gpu.mean(started, ended),
        "randomly_initialised": {"text": f"DistilBERT (DistilBertConfig defaults{', ' if distilbert else ''}"
                                         f"{distilbert or ''}), random weights",
                                 "image": f"open_clip {params['image']['backbone']}, pretrained: null",
                                 "video": f"open_clip {params['video']['backbone']}, pretrained: null"},
        "overrides": overrides,
        "specialists": {m: {k: i.get(k) for k in ("backbone", "device", "precision", "num_workers",
                                                   "epochs_run", "wall_time_s", "train_size", "best_val_macro_f1")}
                        for m, i in infos.items()},
        "test": json.loads((dest / "reports" / "metrics.json").read_text())["test"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--tokenizer", type=Path, required=True, help="a BERT-uncased tokenizer folder")
    ap.add_argument("--posts", type=int, default=6250)
    a = ap.parse_args()
    print(json.dumps(run_seed(a.dest, a.tokenizer, a.posts), indent=2))


if __name__ == "__main__":
    main()
