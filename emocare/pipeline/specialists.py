"""Pipeline step ``train_<modality>``: fine-tune one specialist on the posts that have its modality."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from emocare.data import specialist_dataset
from emocare.data.manifest import load_posts
from emocare.data.split import class_weights, read_split
from emocare.distributed import init_distributed, is_main, rank_world
from emocare.io import write_json
from emocare.labels import LabelSet, label_index
from emocare.models import build_specialist, pretrained_source
from emocare.models.checkpoint import save_checkpoint
from emocare.models.cpu_paths import use_cpu_path
from emocare.params import TrainConfig
from emocare.pipeline.crossval import evaluation_plan, fold_splits, post_folds, save_fold_features
from emocare.pipeline.regimes import choose_regime, finetune_schedule, setfit_tune
from emocare.pipeline.training import fit, write_reports
from emocare.progress import progress_bar
from emocare.runtime import count_parameters, resolve_device, seed_everything


def backbone_info(modality: str, cfg: dict, model) -> dict:
    """Which backbone a specialist runs and whether, and from where, it was pretrained: the run's metrics say so."""
    pretrained = pretrained_source(modality, cfg)
    return {"modality": modality, "backbone": cfg["backbone"], "pretrained": pretrained is not None,
            "pretrained_source": pretrained, "frozen": bool(getattr(model, "frozen", False)),
            **({"ocr": model.ocr} if modality == "text" else {}),
            "parameters": count_parameters(model), "embedding_dim": model.dim}


def _setfit(model, posts: list, tcfg: TrainConfig, frame_store: str | None) -> dict:
    """:func:`setfit_tune` on the text the specialist reads (OCR included), then the backbone frozen."""
    texts = specialist_dataset(model, posts, frame_store=frame_store)  # the text it reads, OCR included
    out = setfit_tune(model, [texts[i][0] for i in range(len(texts))], [texts[i][1] for i in range(len(texts))],
                      tcfg)
    model.freeze()
    return out


def learning_regime(model, requested: str, train_posts: list, val_posts: list, tcfg: TrainConfig,
                    frame_store: str | None = None, every_label: list | None = None) -> dict:
    """Set the text specialist up for the regime ``train.regime`` picks for this many training labels
    (:mod:`emocare.pipeline.regimes`): freeze its backbone, or tune it with setfit (on ``every_label`` when the
    run is cross-validated, else on ``train_posts``) and then freeze it. Returns the regime and why."""
    regime, reason = choose_regime(requested, len(train_posts))
    out = {"regime": regime, "regime_requested": requested, "regime_reason": reason,
           "train_labels": len(train_posts)}
    if regime == "setfit" and train_posts and val_posts:
        tuned_on = every_label if every_label is not None else train_posts
        out.update(_setfit(model, tuned_on, tcfg, frame_store), setfit_labels=len(tuned_on))
        if every_label is not None:  # the validation posts' labels shaped the encoder too
            out["validation_note"] = ("setfit tuned the encoder on every label (cross-validated run): this "
                                      "specialist's own validation figures are optimistic; the fusion stage's "
                                      "out-of-fold figures are the evaluation")
    if regime in ("frozen", "setfit"):
        model.freeze()
    return out


def cross_fit_folds(params: dict, posts: list) -> np.ndarray | None:
    """The folds of ``posts`` (every post, data/posts.jsonl's order) the fusion stage will cross-validate over
    (:mod:`emocare.pipeline.crossval`), or None when it will not: it will with fewer than ``split.cv_below``
    labels and the image and video towers frozen (their embeddings then label-free). A setfit text specialist
    then tunes on every label, and each fold's posts get features from an encoder tuned without them
    (:func:`cross_fitted_features`), so that cross-validation stays honest."""
    vision_frozen = all(params.get(m, {}).get("freeze", False) for m in ("image", "video"))
    if "split" not in params or not vision_frozen:
        return None
    names = LabelSet.from_params(params).names
    labels = np.array([label_index(p.label, names) for p in posts])
    if evaluation_plan(int((labels >= 0).sum()), params["split"])["kind"] != "cv":
        return None
    return post_folds(posts, labels, params["split"])


def cross_fitted_features(params: dict, classes: LabelSet, posts: list, fold: np.ndarray, tcfg: TrainConfig,
                          out: str | Path) -> dict:
    """For each fold ``f``, a fresh text specialist tuned by setfit on fold ``f``'s training posts
    (:func:`~emocare.pipeline.crossval.fold_splits`), its features of every labelled text post: written to
    ``out`` (``ids`` [n], ``features`` [folds, n, dim]) for the fusion stage's cross-validation."""
    rows = [i for i, p in enumerate(posts) if fold[i] >= 0 and "text" in p.modalities]
    folds, features = int(fold.max()) + 1, []
    for f in progress_bar(range(folds), desc="setfit folds", unit="fold"):
        splits = fold_splits(fold, f)
        seed_everything(tcfg.seed)
        model = build_specialist("text", params["text"], classes, params.get("offline", True))
        _setfit(model, [posts[i] for i in rows if splits[i] == "train"], tcfg, params.get("frame_store"))
        features.append(specialist_dataset(model, [posts[i] for i in rows],
                                           frame_store=params.get("frame_store")).tensors[0])
    save_fold_features(out, [posts[i].id for i in rows], torch.stack(features).numpy())
    return {"cross_fitted": {"folds": folds, "posts": len(rows), "path": str(out)}}


def train_specialist(modality: str, params: dict, posts_path: str | Path, split_path: str | Path,
                     model_path: str | Path, report_dir: str | Path, folds_path: str | Path | None = None) -> dict:
    """Fine-tune one specialist on the posts that have its modality; write checkpoint and reports.

    ``folds_path`` (text): where a setfit specialist's cross-fitted features go when the run is cross-validated
    (:func:`cross_fit_folds`); otherwise an empty file is written there.

    With no training or validation posts for the modality, the (untrained) model is saved with
    ``no_data: true`` and the metrics say so; later stages then treat the modality as absent.
    """
    cfg, report_dir = params[modality], Path(report_dir)
    init_distributed(params["train"]["device"])
    split = read_split(split_path)
    every_post = load_posts(posts_path)
    posts = [p for p in every_post if modality in p.modalities]
    train_posts = [p for p in posts if split.get(p.id) == "train"]
    val_posts = [p for p in posts if split.get(p.id) == "val"]
    unlabelled = sum(p.label is None for p in posts)  # never in the split: set aside
    tcfg = TrainConfig.from_params(params["train"], cfg)
    classes = LabelSet.from_params(params)
    seed_everything(tcfg.seed)  # the new classifier head's initial weights come from the seeded RNG
    model = build_specialist(modality, cfg, classes, params.get("offline", True))  # fails here if weights are absent
    regime = {}
    if modality == "text":  # image and video towers learn as their section's freeze says
        requested = params["train"].get("regime", "auto")
        setfit = choose_regime(requested, len(train_posts))[0] == "setfit"
        fold = cross_fit_folds(params, every_post) if setfit else None
        every_label = [p for p in posts if p.label is not None] if fold is not None else None
        regime = learning_regime(model, requested, train_posts, val_posts, tcfg, params.get("frame_store"),
                                 every_label)
        if regime["regime"] == "finetune":
            tcfg = finetune_schedule(tcfg, len(train_posts), rank_world()[1])
        if folds_path is not None and is_main():
            if fold is not None and train_posts and val_posts:
                regime.update(cross_fitted_features(params, classes, every_post, fold, tcfg, folds_path))
            else:  # the stage's output exists either way; empty: the fusion stage uses the cached embeddings
                save_fold_features(folds_path, [], np.zeros((0, 0, 0)))
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
