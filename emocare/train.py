"""The one trainer, shared by the three specialists and the fusion model.

AdamW, linear warmup then linear decay, class-weighted cross-entropy, gradient clipping,
early stopping on validation macro-F1 with ``patience``, the best epoch's checkpoint written
atomically, fixed seeds, mixed precision that suits the GPU (bf16 where native, fp16 with a
gradient scaler on older GPUs, float32 on the CPU), training curves in DVCLive's layout.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from emocare.cache import Cache, CachedDataset
from emocare.curves import Curves
from emocare.data.manifest import load_posts
from emocare.data.split import class_weights, read_split
from emocare.distributed import all_gather, all_sum, barrier, init_distributed, is_main, rank_world
from emocare.io import write_json
from emocare.labels import DISPLAY, LABELS, MODALITIES, SUBSETS
from emocare.models import FusionModel, build_specialist, save_checkpoint


@dataclass
class TrainConfig:
    """Training hyper-parameters: the trainer's keys of ``params.yaml`` sections (their other keys configure the
    model; :mod:`emocare.params` refuses keys that nothing reads)."""

    epochs: int = 4
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    patience: int = 3
    grad_clip: float = 1.0
    seed: int = 42
    device: str = "auto"
    num_workers: int | str = "auto"

    @classmethod
    def from_params(cls, *sections: dict) -> TrainConfig:
        """Merge sections left to right (later wins) and keep the trainer's keys."""
        merged: dict = {}
        for s in sections:
            merged.update(s or {})
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in merged.items() if k in names})


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA GPU is available; use auto or cpu")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())  # torchrun: the local rank's GPU
    return torch.device("cpu" if name == "auto" else name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_precision(device: torch.device) -> str:
    """``bf16`` on GPUs with native bfloat16 (compute capability >= 8.0), ``fp16`` on older GPUs, ``fp32`` on CPU."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device):
    """Autocast in the precision :func:`choose_precision` picks for ``device`` (none in fp32)."""
    precision = choose_precision(device)
    return torch.autocast("cuda", dtype=AUTOCAST_DTYPES[precision]) if precision != "fp32" else nullcontext()


def resolve_workers(value: int | str, device: torch.device) -> int:
    """DataLoader workers for ``num_workers`` (a number, or ``auto``).

    ``auto``: on CUDA, the cores this process may use (shared by the local ranks) less one for
    the main process, at most 8; on a CPU, 0 up to 4 cores, where decoding in the main process
    measured fastest (the model takes every core), else a quarter of the cores.
    """
    if value != "auto":
        return int(value)
    cores = len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else cores // 4


def to_device(batch, device: torch.device):
    """Move a (nested) batch of tensors to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def make_loader(ds: Dataset, cfg: TrainConfig, collate: Callable | None, shuffle: bool,
                device: torch.device, sampler: DistributedSampler | None = None) -> DataLoader:
    generator = torch.Generator().manual_seed(cfg.seed)
    workers = resolve_workers(cfg.num_workers, device)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda",
                      generator=generator, persistent_workers=workers > 0,
                      prefetch_factor=(4 if device.type == "cuda" else 2) if workers else None)


def _gathered_predictions(model: nn.Module, val_ds: Dataset, cfg: TrainConfig, collate: Callable | None,
                          device: torch.device, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Validation logits on the whole split: each rank scores rows rank::world, then all ranks gather."""
    rank, world = rank_world()
    rows = list(range(rank, len(val_ds), world))
    logits, labels = predict_logits(model, make_loader(Subset(val_ds, rows), cfg, collate, False, device), device,
                                    desc=desc)
    parts = all_gather((rows, logits, labels))
    order = np.argsort(np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts]), kind="stable")
    return (np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order])


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device,
                   desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``loader``; returns (float32 logits [N, C], labels [N])."""
    model.eval()
    logits, labels = [], []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
        batch = to_device(batch, device)
        with autocast(device):
            out = model(batch)
        logits.append(out.float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


# Classification metrics from one confusion matrix, with scikit-learn's conventions (zero_division=0);
# tests check them against scikit-learn, whose import alone (2.4 s here) would slow every stage's start.

def confusion(labels: np.ndarray, pred: np.ndarray, k: int = len(LABELS)) -> np.ndarray:
    """[k, k] counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(labels) * k + np.asarray(pred), minlength=k * k).reshape(k, k)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    tp, support, predicted = np.diag(cm).astype(float), cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=support + predicted > 0)
    return precision, recall, f1, support


def scores(logits: np.ndarray, labels: np.ndarray, weights: torch.Tensor | None = None) -> dict:
    """Weighted cross-entropy loss, macro-F1, weighted-F1 and accuracy of predictions.

    F1 averages run over the classes that occur in ``labels`` or in the predictions, so a class
    absent from a small split does not count as a zero.
    """
    pred = logits.argmax(1)
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long(), weight=weights)
    cm = confusion(labels, pred)
    _, _, f1, support = _per_class(cm)
    seen = (support > 0) | (cm.sum(0) > 0)
    n = int(cm.sum())
    return {"loss": float(loss), "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
            "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
            "accuracy": float(np.trace(cm) / n) if n else 0.0}


def report_dict(labels: np.ndarray, pred: np.ndarray) -> dict:
    """The classification report (per-class P/R/F1/support, accuracy, macro and weighted averages) as a dict,
    in scikit-learn's ``classification_report(output_dict=True)`` layout, over all five classes."""
    cm = confusion(labels, pred)
    precision, recall, f1, support = _per_class(cm)
    n = int(support.sum())
    out: dict = {DISPLAY[c]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]),
                              "support": int(support[i])} for i, c in enumerate(LABELS)}
    out["accuracy"] = float(np.trace(cm) / n) if n else 0.0
    for name, w in (("macro avg", np.full(len(LABELS), 1 / len(LABELS))), ("weighted avg", support / max(n, 1))):
        out[name] = {"precision": float(precision @ w), "recall": float(recall @ w), "f1-score": float(f1 @ w),
                     "support": n}
    return out


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
    alone writes the checkpoint and the curves (:class:`~emocare.curves.Curves`).
    """
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ValueError(f"{desc}: training needs posts in both train ({len(train_ds)}) and val ({len(val_ds)})")
    init_distributed(cfg.device)
    rank, world = rank_world()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.seed) if world > 1 else None
    train_loader = make_loader(train_ds, cfg, collate, True, device, sampler)
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
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
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
        "classification_report": report_dict(best["labels"], best["pred"]),
    }


# --- the trainer's two uses: specialists on posts, fusion on cached embeddings ---------------

def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


DECISION_METRICS = ("best_val_macro_f1", "best_epoch")


def _write_reports(report_dir: Path, info: dict, report: dict) -> None:
    """``metrics.json``: only the numbers a user decides on (DVC compares them); ``info.json``: everything."""
    if not is_main():
        return
    write_json(report_dir / "metrics.json", {k: info.get(k) for k in DECISION_METRICS})
    write_json(report_dir / "info.json", info)
    write_json(report_dir / "classification_report.json", report)


def train_specialist(modality: str, params: dict, posts_path: str | Path, split_path: str | Path,
                     model_path: str | Path, report_dir: str | Path) -> dict:
    """Fine-tune one specialist on the posts that have its modality; write checkpoint and reports.

    With no training or validation posts for the modality, the (untrained) model is saved with
    ``no_data: true`` and the metrics say so; later stages then treat the modality as absent.
    """
    from emocare.data.datasets import specialist_dataset  # decoders and transforms: specialists only
    from emocare.models.text import text_backbone_source

    cfg, report_dir = params[modality], Path(report_dir)
    init_distributed(params.get("train", {}).get("device", "auto"))
    split = read_split(split_path)
    posts = [p for p in load_posts(posts_path) if modality in p.modalities]
    train_posts = [p for p in posts if split.get(p.id) == "train"]
    val_posts = [p for p in posts if split.get(p.id) == "val"]
    unlabelled = sum(p.label is None for p in posts)  # never in the split: set aside
    tcfg = TrainConfig.from_params(params.get("train", {}), cfg)
    seed_everything(tcfg.seed)  # the new classifier head's initial weights come from the seeded RNG
    model = build_specialist(modality, cfg, params.get("offline", True))  # fails here if weights are absent
    info = {"modality": modality, "backbone": cfg["backbone"],
            "pretrained": True if modality == "text" else cfg.get("pretrained") is not None,
            "pretrained_source": text_backbone_source(cfg["backbone"]) if modality == "text" else cfg.get("pretrained"),
            "parameters": count_parameters(model), "embedding_dim": model.dim, "unlabelled_set_aside": unlabelled}
    if not train_posts or not val_posts:
        if is_main():
            save_checkpoint(model_path, model, no_data=True, **info)
            write_json(report_dir / "live" / "metrics.json", {"no_data": True})
        metrics = {**info, "no_data": True, "train_posts": len(train_posts), "val_posts": len(val_posts)}
        _write_reports(report_dir, metrics, {})
        return metrics
    weights = class_weights([p.label for p in train_posts])
    store = params.get("frame_store")  # decoded pixels kept across epochs (and for the embed stage)
    summary = fit(model, specialist_dataset(model, train_posts, train=True, augment=cfg.get("augment", True),
                                            frame_store=store),
                  specialist_dataset(model, val_posts, frame_store=store), tcfg, weights, model_path,
                  collate=model.collate,
                  live_dir=report_dir / "live", checkpoint_extra=info, desc=modality)
    report = summary.pop("classification_report")
    summary.pop("history")
    metrics = {**info, "no_data": False, **summary, "class_weights": dict(zip(LABELS, weights, strict=True)),
               "config": asdict(tcfg)}
    _write_reports(report_dir, metrics, report)
    return metrics


def fusion_rows(cache: Cache, split: str, modalities: list[str]) -> np.ndarray:
    """Rows of ``split`` that have at least one of ``modalities``."""
    has_any = np.stack([cache.present[m] for m in modalities], 1).any(1)
    return np.flatnonzero((cache.splits == split) & has_any)


def fusion_dataset(cache: Cache, modalities: list[str], rows: np.ndarray) -> CachedDataset:
    return CachedDataset({m: cache.emb[m] for m in modalities}, cache.present_matrix(modalities),
                         torch.from_numpy(cache.labels.astype(np.int64)), rows)


def available_modalities(cache: Cache, wanted: list[str] | None = None) -> list[str]:
    """Modalities (of ``wanted``) that have embeddings for some training post."""
    train = cache.splits == "train"
    return [m for m in (wanted or MODALITIES) if cache.present[m][train].any()]


def train_fusion(cache: Cache, fusion_cfg: dict, train_cfg: dict, model_path: str | Path,
                 modalities: list[str] | None = None, report_dir: str | Path | None = None,
                 desc: str = "fusion") -> dict:
    """Train a fusion model on cached embeddings (``modalities`` defaults to all available).

    With ``report_dir``, the training curves, ``metrics.json`` and ``classification_report.json`` go there.
    """
    mods = available_modalities(cache, modalities)
    if not mods:
        raise ValueError(f"{desc}: none of {modalities or MODALITIES} has embeddings for training posts")
    tcfg = TrainConfig.from_params(train_cfg, fusion_cfg, {"num_workers": 0})  # cached tensors: no decoding
    seed_everything(tcfg.seed)  # initial weights from the seeded RNG
    model = FusionModel({m: cache.emb[m].shape[1] for m in mods}, kind=fusion_cfg["kind"],
                        d_model=fusion_cfg["d_model"], heads=fusion_cfg["heads"], hidden=fusion_cfg["hidden"],
                        dropout=fusion_cfg["hidden_dropout"], modality_dropout=fusion_cfg["dropout"])
    train_rows, val_rows = fusion_rows(cache, "train", mods), fusion_rows(cache, "val", mods)
    weights = class_weights([LABELS[i] for i in cache.labels[train_rows]])
    summary = fit(model, fusion_dataset(cache, mods, train_rows), fusion_dataset(cache, mods, val_rows), tcfg,
                  weights, model_path, collate=CachedDataset.collate,
                  live_dir=Path(report_dir) / "live" if report_dir else None, desc=desc,
                  checkpoint_extra={"modalities": mods, "backbones": {m: cache.attrs[m]["backbone"] for m in mods}})
    report = summary.pop("classification_report")
    summary.pop("history")
    metrics = {"modalities": mods, **{k: fusion_cfg[k] for k in ("kind", "d_model", "heads", "hidden")},
               "modality_dropout": model.p_drop, "parameters": count_parameters(model),
               "unlabelled_set_aside": int((cache.labels < 0).sum()), **summary,
               "class_weights": dict(zip(LABELS, weights, strict=True)), "config": asdict(tcfg)}
    if report_dir is not None:
        _write_reports(Path(report_dir), metrics, report)
    return metrics


def subset_path(model_dir: str | Path, subset: list[str]) -> Path:
    """The ablation's fusion model for ``subset``; the all-modalities one is the fusion model itself."""
    model_dir = Path(model_dir)
    if sorted(subset) == sorted(MODALITIES):
        return model_dir / "best_model.pt"
    return model_dir / "subsets" / f"{'+'.join(subset)}.pt"


_FUSION_JOBS: dict = {}  # what every fusion job shares: the cache and the configs (inherited by forked workers)


def _share(cache: Cache, fusion_cfg: dict, train_cfg: dict, single_thread: bool) -> None:
    _FUSION_JOBS.update(cache=cache, fusion_cfg=fusion_cfg, train_cfg=train_cfg)
    if single_thread:  # side by side with other jobs, one core each
        torch.set_num_threads(1)
        os.environ["TQDM_DISABLE"] = "1"  # the parent shows one bar over the jobs


def _fusion_job(path: Path, subset: list[str] | None, report_dir: str | Path | None) -> dict:
    try:
        return train_fusion(_FUSION_JOBS["cache"], _FUSION_JOBS["fusion_cfg"], _FUSION_JOBS["train_cfg"], path,
                            modalities=subset, report_dir=report_dir,
                            desc=f"ablation {'+'.join(subset)}" if subset else "fusion")
    except ValueError as e:  # this subset's modalities have no training or validation posts
        return {"skipped": str(e)}


def train_fusion_models(cache: Cache, fusion_cfg: dict, train_cfg: dict, model_dir: str | Path,
                        report_dir: str | Path, subsets: list[list[str]] = SUBSETS) -> dict[str, dict]:
    """Train the fusion model and the ablation's one-per-subset models; returns each one's summary.

    The fusion model (all available modalities) goes to ``model_dir/best_model.pt`` with its reports
    in ``report_dir``; each subset's model to :func:`subset_path` (``{"skipped": reason}`` where the
    subset has no training data). They are independent, so on a CPU they train side by side in
    forked single-threaded processes, one per core (the model is too small to use two cores
    well); on a GPU one after another. Keys: ``fusion`` and the subset names.
    """
    for stale in (Path(model_dir) / "subsets").glob("*.pt"):
        stale.unlink()
    device = resolve_device(train_cfg.get("device", "auto"))
    jobs = {"fusion": (subset_path(model_dir, MODALITIES), None, report_dir)}
    for s in sorted(subsets, key=len, reverse=True):  # the longest first: the cores finish together
        path = subset_path(model_dir, s)
        if path != jobs["fusion"][0]:  # all modalities: the fusion model itself
            jobs["+".join(s)] = (path, s, None)
    workers = 1 if device.type == "cuda" else min(len(jobs), len(os.sched_getaffinity(0)))
    shared = (cache, fusion_cfg, train_cfg, workers > 1)
    if workers == 1:
        _share(*shared)
        results = [_fusion_job(*job) for job in jobs.values()]
    else:  # forked workers inherit the loaded cache and imports
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), initializer=_share,
                                 initargs=shared) as pool:
            futures = [pool.submit(_fusion_job, *job) for job in jobs.values()]
            results = [f.result() for f in tqdm(futures, desc="fusion models", unit="model")]
    results = dict(zip(jobs, results, strict=True))
    if "skipped" in results["fusion"]:
        raise ValueError(results["fusion"]["skipped"])
    return results
