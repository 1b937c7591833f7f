"""The one trainer, shared by the three specialists and the fusion model.

AdamW, linear warmup then linear decay, class-weighted cross-entropy, gradient clipping,
early stopping on validation macro-F1 with ``patience``, the best epoch's checkpoint written
atomically, fixed seeds, mixed precision that suits the GPU (bf16 where native, fp16 with a
gradient scaler on older GPUs, float32 on the CPU), training curves in DVCLive's layout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Dataset, DistributedSampler, Subset
from tqdm import tqdm

from emocare.distributed import all_gather, all_sum, barrier, init_distributed, is_main, rank_world
from emocare.io import write_json
from emocare.metrics import report_dict, scores
from emocare.models.checkpoint import save_checkpoint
from emocare.params import TrainConfig
from emocare.pipeline.curves import Curves
from emocare.progress import progress_bar
from emocare.runtime import (
    autocast,
    choose_precision,
    make_loader,
    resolve_device,
    resolve_workers,
    seed_everything,
    to_device,
)
from emocare.scoring import predict_logits

DECISION_METRICS = ("best_val_macro_f1", "best_epoch")


def write_reports(report_dir: Path, info: dict, report: dict) -> None:
    """``metrics.json``: only the numbers a user decides on (DVC compares them); ``info.json``: everything."""
    if not is_main():
        return
    write_json(report_dir / "metrics.json", {k: info.get(k) for k in DECISION_METRICS})
    write_json(report_dir / "info.json", info)
    write_json(report_dir / "classification_report.json", report)


def _gathered_predictions(model: nn.Module, val_ds: Dataset, cfg: TrainConfig, collate: Callable | None,
                          device: torch.device, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Validation logits on the whole split: each rank scores rows rank::world, then all ranks gather."""
    rank, world = rank_world()
    rows = list(range(rank, len(val_ds), world))
    loader = make_loader(Subset(val_ds, rows), cfg.batch_size, collate, device, cfg.num_workers, seed=cfg.seed)
    logits, labels = predict_logits(model, loader, device, desc=desc)
    parts = all_gather((rows, logits, labels))
    order = np.argsort(np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts]), kind="stable")
    return (np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order])


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset, cfg: TrainConfig, class_weights: list[float],
        checkpoint: str | Path, collate: Callable | None = None, live_dir: str | Path | None = None,
        checkpoint_extra: dict | None = None, desc: str = "train") -> dict:
    """Train with early stopping on val macro-F1; keep the best epoch's checkpoint. Returns a summary.

    Under torchrun the model is wrapped in DistributedDataParallel, the training split is sharded
    by a DistributedSampler (reshuffled each epoch), validation is scored on the whole split
    (gathered across ranks) so that every rank takes the same early-stopping decision, and rank 0
    alone writes the checkpoint and the curves (:class:`~emocare.pipeline.curves.Curves`).
    """
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ValueError(f"{desc}: training needs posts in both train ({len(train_ds)}) and val ({len(val_ds)})")
    init_distributed(cfg.device)
    rank, world = rank_world()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.seed) if world > 1 else None
    train_loader = make_loader(train_ds, cfg.batch_size, collate, device, cfg.num_workers, shuffle=True,
                               seed=cfg.seed, sampler=sampler)
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
              find_unused_parameters=True) if world > 1 else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)  # CPU too
    total_steps = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.warmup_steps, total_steps))
    weights = torch.tensor(class_weights, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
    precision = choose_precision(device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")  # fp16 gradients underflow unscaled
    workers = resolve_workers(cfg.num_workers, device)
    if rank == 0:
        tqdm.write(f"{desc}: device {device}, precision {precision}, {workers} DataLoader worker(s) "
                   f"(num_workers: {cfg.num_workers})")
    curves = Curves(live_dir) if live_dir is not None and rank == 0 else None
    best = {"macro_f1": -1.0}
    history, bad_epochs, started = [], 0, time.time()
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = progress_bar(train_loader, desc=f"{desc} epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
                   disable=rank != 0 or None)
        for batch in bar:
            batch = to_device(batch, device)
            with autocast(device):
                logits = net(batch)
            loss = loss_fn(logits.float(), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += loss.item() * len(batch["label"])
            count += len(batch["label"])
            bar.set_postfix(loss=f"{total / count:.4f}")
        total, count = all_sum(total, count)
        val_logits, val_labels = _gathered_predictions(model, val_ds, cfg, collate, device, f"{desc} val")
        val = scores(val_logits, val_labels, weights)
        row = {"epoch": epoch, "train_loss": total / count, "val_loss": val["loss"], "val_macro_f1": val["macro_f1"],
               "val_accuracy": val["accuracy"]}
        history.append(row)
        if rank == 0:
            tqdm.write(f"{desc} epoch {epoch}: train_loss {row['train_loss']:.4f} val_loss {val['loss']:.4f} "
                       f"val_macro_f1 {val['macro_f1']:.4f}")
        if curves is not None:
            curves.log({key: row[key] for key in ("train_loss", "val_loss", "val_macro_f1")})
        if val["macro_f1"] > best["macro_f1"]:
            best = {**val, "epoch": epoch, "labels": val_labels, "pred": val_logits.argmax(1)}
            if rank == 0:
                save_checkpoint(checkpoint, model, epoch=epoch, val_macro_f1=val["macro_f1"],
                                **(checkpoint_extra or {}))
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
    barrier()  # the checkpoint is complete before any rank moves on
    return {
        "best_val_macro_f1": best["macro_f1"], "best_val_loss": best["loss"], "best_val_accuracy": best["accuracy"],
        "best_val_weighted_f1": best["weighted_f1"], "best_epoch": best["epoch"], "epochs_run": len(history),
        "wall_time_s": round(time.time() - started, 2), "device": str(device), "precision": precision,
        "num_workers": workers,
        "train_size": len(train_ds), "val_size": len(val_ds), "world_size": world, "history": history,
        "classification_report": report_dict(best["labels"], best["pred"], model.labels),
    }
