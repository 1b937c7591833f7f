"""Training speed of one specialist with the pipeline's own trainer, on the demo posts.

Run after the `split` stage. Trains MODALITY from params.yaml's settings (optionally overriding
epochs and device) and prints JSON: wall time, training posts per second, best val macro-F1,
device, precision (bf16, fp16 or fp32, as the trainer chose it), DataLoader workers and the
decoding path (a frame store that the first epoch fills, or decoding every epoch).

    python benchmarks/train_speed.py image [--epochs 3] [--device cuda] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from emocare.data import specialist_dataset
from emocare.data.manifest import load_posts
from emocare.data.split import class_weights, read_split
from emocare.labels import LabelSet
from emocare.models import build_specialist
from emocare.params import TrainConfig, load_params
from emocare.pipeline.training import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modality", choices=["text", "image", "video"])
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--device")
    ap.add_argument("--num-workers", help="a number, or auto (default: params.yaml's train.num_workers)")
    ap.add_argument("--backbone", help="override the backbone (vision: an open_clip architecture, from scratch)")
    ap.add_argument("--frame-store", choices=["on", "off"], default="on",
                    help="on: decoded pixels kept in a new, empty store (epoch 1 fills it); off: decode every epoch")
    a = ap.parse_args()
    params = load_params()
    cfg = dict(params[a.modality])
    if a.backbone:
        cfg.update(backbone=a.backbone, pretrained=None)
    overrides = {"epochs": a.epochs, "batch_size": a.batch_size, "device": a.device, "num_workers": a.num_workers}
    tcfg = TrainConfig.from_params(params["train"], cfg, {k: v for k, v in overrides.items() if v is not None})
    tcfg.patience = tcfg.epochs  # time every epoch
    split = read_split("data/split.json")
    posts = [p for p in load_posts("data/posts.jsonl") if a.modality in p.modalities]
    train = [p for p in posts if split.get(p.id) == "train"]
    val = [p for p in posts if split.get(p.id) == "val"]
    classes = LabelSet.from_params(params)
    model = build_specialist(a.modality, cfg, classes, params.get("offline", True))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "frames" if a.frame_store == "on" else None
        training = specialist_dataset(model, train, train=True, augment=cfg.get("augment", True), frame_store=store)
        s = fit(model, training, specialist_dataset(model, val, frame_store=store), tcfg,
                class_weights([p.label for p in train], classes), Path(tmp) / "best.pt", collate=model.collate,
                desc=a.modality)
    print(json.dumps({"modality": a.modality, "backbone": cfg["backbone"], "device": s["device"],
                      "decoding": "frame store" if a.frame_store == "on" else "decode every epoch",
                      "precision": s["precision"], "num_workers": s["num_workers"], "epochs": s["epochs_run"],
                      "batch_size": tcfg.batch_size, "train_posts": len(train), "wall_time_s": s["wall_time_s"],
                      "train_posts_per_s": round(len(train) * s["epochs_run"] / s["wall_time_s"], 1),
                      "best_val_macro_f1": round(s["best_val_macro_f1"], 4),
                      "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}, indent=2))


if __name__ == "__main__":
    main()
