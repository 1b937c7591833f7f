"""Pipeline step ``train_<modality>``: fine-tune one specialist on the posts that have its modality."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from emocare.data import specialist_dataset
from emocare.data.manifest import load_posts
from emocare.data.split import class_weights, read_split
from emocare.distributed import init_distributed, is_main, rank_world
from emocare.io import write_json
from emocare.labels import LabelSet
from emocare.models import build_specialist, pretrained_source
from emocare.models.checkpoint import save_checkpoint
from emocare.models.cpu_paths import use_cpu_path
from emocare.params import TrainConfig
from emocare.pipeline.regimes import choose_regime, finetune_schedule, setfit_tune
from emocare.pipeline.training import fit, write_reports
from emocare.runtime import count_parameters, resolve_device, seed_everything


def backbone_info(modality: str, cfg: dict, model) -> dict:
    """Which backbone a specialist runs and whether, and from where, it was pretrained: the run's metrics say so."""
    pretrained = pretrained_source(modality, cfg)
    return {"modality": modality, "backbone": cfg["backbone"], "pretrained": pretrained is not None,
            "pretrained_source": pretrained, "frozen": bool(getattr(model, "frozen", False)),
            **({"ocr": model.ocr} if modality == "text" else {}),
            "parameters": count_parameters(model), "embedding_dim": model.dim}


def learning_regime(model, requested: str, train_posts: list, val_posts: list, tcfg: TrainConfig,
                    frame_store: str | None = None) -> dict:
    """Set the text specialist up for the regime ``train.regime`` picks for this many training labels
    (:mod:`emocare.pipeline.regimes`): freeze its backbone, or tune it with setfit and then freeze it. Returns
    the regime and why, for info.json."""
    regime, reason = choose_regime(requested, len(train_posts))
    out = {"regime": regime, "regime_requested": requested, "regime_reason": reason,
           "train_labels": len(train_posts)}
    if regime == "setfit" and train_posts and val_posts:
        texts = specialist_dataset(model, train_posts, frame_store=frame_store)  # the text it reads, OCR included
        out.update(setfit_tune(model, [texts[i][0] for i in range(len(texts))],
                               [texts[i][1] for i in range(len(texts))], tcfg))
    if regime in ("frozen", "setfit"):
        model.freeze()
    return out


def train_specialist(modality: str, params: dict, posts_path: str | Path, split_path: str | Path,
                     model_path: str | Path, report_dir: str | Path) -> dict:
    """Fine-tune one specialist on the posts that have its modality; write checkpoint and reports.

    With no training or validation posts for the modality, the (untrained) model is saved with
    ``no_data: true`` and the metrics say so; later stages then treat the modality as absent.
    """
    cfg, report_dir = params[modality], Path(report_dir)
    init_distributed(params["train"]["device"])
    split = read_split(split_path)
    posts = [p for p in load_posts(posts_path) if modality in p.modalities]
    train_posts = [p for p in posts if split.get(p.id) == "train"]
    val_posts = [p for p in posts if split.get(p.id) == "val"]
    unlabelled = sum(p.label is None for p in posts)  # never in the split: set aside
    tcfg = TrainConfig.from_params(params["train"], cfg)
    classes = LabelSet.from_params(params)
    seed_everything(tcfg.seed)  # the new classifier head's initial weights come from the seeded RNG
    model = build_specialist(modality, cfg, classes, params.get("offline", True))  # fails here if weights are absent
    regime = {}
    if modality == "text":  # image and video towers learn as their section's freeze says
        regime = learning_regime(model, params["train"].get("regime", "auto"), train_posts, val_posts, tcfg,
                                 params.get("frame_store"))
        if regime["regime"] == "finetune":
            tcfg = finetune_schedule(tcfg, len(train_posts), rank_world()[1])
    model.to(resolve_device(tcfg.device))  # a frozen tower computes its features where it will train
    if getattr(model, "frozen", False):  # fixed weights: their features come through the CPU's fast path
        use_cpu_path(model, params.get("cpu_path", "auto"), resolve_device(tcfg.device))
    info = {**backbone_info(modality, cfg, model), **regime, "unlabelled_set_aside": unlabelled}
    if not train_posts or not val_posts:
        if is_main():
            save_checkpoint(model_path, model, no_data=True, **info)
            write_json(report_dir / "live" / "metrics.json", {"no_data": True})
        metrics = {**info, "no_data": True, "train_posts": len(train_posts), "val_posts": len(val_posts)}
        write_reports(report_dir, metrics, {})
        return metrics
    weights = class_weights([p.label for p in train_posts], classes)
    store = params.get("frame_store")  # decoded pixels kept across epochs (and for the embed stage)
    summary = fit(model, specialist_dataset(model, train_posts, train=True, augment=cfg.get("augment", True),
                                            frame_store=store),
                  specialist_dataset(model, val_posts, frame_store=store), tcfg, weights, model_path,
                  collate=model.collate, live_dir=report_dir / "live", checkpoint_extra=info, desc=modality)
    report = summary.pop("classification_report")
    summary.pop("history")
    metrics = {**info, "no_data": False, **summary, "class_weights": dict(zip(classes, weights, strict=True)),
               "config": asdict(tcfg)}
    write_reports(report_dir, metrics, report)
    return metrics
