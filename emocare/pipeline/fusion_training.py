"""Pipeline step ``fusion`` (training half): the fusion model and the ablation's one model per modality subset,
trained on the cached embeddings."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from emocare.bundle import MODELS_DIR, fusion_path, subset_path, subsets_dir
from emocare.cache import Cache, CachedDataset
from emocare.calibration import KEEPS_DECISIONS, KINDS, apply, ece, fit_calibration, nll, softmax
from emocare.data.split import class_weights
from emocare.io import read_json
from emocare.labels import MODALITIES, SUBSETS, LabelSet
from emocare.metrics import report_dict, scores
from emocare.models.checkpoint import save_checkpoint, save_payload
from emocare.models.fusion import FusionModel, load_fusion
from emocare.params import TrainConfig
from emocare.pipeline.crossval import fold_splits
from emocare.pipeline.curves import Curves
from emocare.pipeline.evaluate import Predictions, predict_split
from emocare.pipeline.regimes import FINETUNE_FROM
from emocare.pipeline.training import fit, write_reports
from emocare.progress import progress_bar
from emocare.quantify import validation_stats
from emocare.runtime import count_parameters, die_with_parent, resolve_device, seed_everything
from emocare.scoring import cached_fusion_logits

CALIBRATION = "auto"  # fusion.calibration's default (calibration_kind); the kinds: emocare.calibration
# fusion.kind auto: the linear kind for posts of one modality, or below this many training posts; else the attention
# kind, the study's cross-modal model with modality dropout. On the text of three real sets the linear kind scored
# as well as or better than the attention kind at every size measured, 240 to 8,000 training posts, on frozen and
# on fine-tuned features (MELD, 1,000 labels, fine-tuned text: 0.327 against 0.307 with the same calibration): with
# one modality there is nothing to attend across. With images too the evidence is split (memes with their images,
# 800 training posts: linear +0.03; the demo's synthetic posts, some without an image or a video: attention
# +0.015); benchmarks/small_data.py, docs/small-data.md.
LINEAR_BELOW = FINETUNE_FROM
# fusion.calibration auto: temperature scaling below this many training posts, which keeps every prediction, and
# bcts from there (bcts, vector and matrix fit a bias per class, which moves decisions). Measured on three real
# text sets (benchmarks/small_data.py, benchmarks/quantification.py --labels; docs/small-data.md): bcts's biases
# cost macro-F1 at every size up to 3,000 labels (MELD, 1,000 labels, fine-tuned text: 0.298 against 0.327), while
# the trends' em, re-weighting from the mix temperature-scaled probabilities are calibrated for, estimated shares
# as well as on bcts (400-post periods: 0.067 against 0.071 at 1,000 labels, 0.047 against 0.047 at 3,000). From
# here (3,000 labels under the default split) bcts, as the trends were measured with on large splits.
BIASES_FROM = 3_000


def calibration_kind(kind: str, train_posts: int) -> str:
    """``fusion.calibration`` with ``auto`` resolved by the number of training posts; any other kind as asked."""
    if kind != "auto":
        if kind not in KINDS:
            raise ValueError(f"fusion.calibration must be auto or one of {', '.join(KINDS)}, got {kind!r}")
        return kind
    return "bcts" if train_posts >= BIASES_FROM else "temperature"


def fusion_kind(kind: str, train_posts: int, modalities: int) -> str:
    """``fusion.kind`` with ``auto`` resolved by the number of training posts and of modalities."""
    if kind != "auto":
        return kind
    return "linear" if train_posts < LINEAR_BELOW or modalities == 1 else "attention"


def fit_linear(model: FusionModel, train_ds: CachedDataset, val_ds: CachedDataset, class_weights: list[float],
               checkpoint: str | Path, live_dir: str | Path | None = None,
               checkpoint_extra: dict | None = None) -> dict:
    """Fit a ``linear`` fusion model as a multinomial logistic regression (scikit-learn's, its default strength
    C = 1 on the unit embeddings), classes weighted as the trainer weights them; write the checkpoint and its one
    step of curves in ``live_dir``, and return the same summary as :func:`~emocare.pipeline.training.fit`.
    Choosing C by cross-validation on the training posts instead scored no better on real sets at 100 and 300
    labels (README)."""
    from sklearn.linear_model import LogisticRegression

    started = time.time()
    model.eval()
    with torch.no_grad():
        train = CachedDataset.collate(train_ds.__getitems__(list(range(len(train_ds)))))
        val = CachedDataset.collate(val_ds.__getitems__(list(range(len(val_ds)))))
        x = model.fuse(train).numpy()
    y = train["label"].numpy()
    present = np.unique(y)
    lr = LogisticRegression(C=1.0, class_weight={int(c): class_weights[c] for c in present}, max_iter=3000)
    lr.fit(x, y)
    coef, bias = lr.coef_, lr.intercept_
    if len(present) == 2:  # scikit-learn keeps one row for two classes: the logit of the second
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    weight = np.zeros((len(model.labels), x.shape[1]), np.float32)
    offset = np.full(len(model.labels), -30.0, np.float32)  # a class with no training post is never predicted
    weight[present], offset[present] = coef, bias
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(offset))
        val_logits, train_logits = model(val).numpy(), model(train).numpy()
    result = scores(val_logits, val["label"].numpy(), torch.tensor(class_weights))
    if live_dir is not None:
        Curves(live_dir).log({"train_loss": scores(train_logits, y, torch.tensor(class_weights))["loss"],
                              "val_loss": result["loss"], "val_macro_f1": result["macro_f1"]})
    save_checkpoint(checkpoint, model, epoch=1, val_macro_f1=result["macro_f1"], **(checkpoint_extra or {}))
    return {"best_val_macro_f1": result["macro_f1"], "best_val_loss": result["loss"],
            "best_val_accuracy": result["accuracy"], "best_val_weighted_f1": result["weighted_f1"], "best_epoch": 1,
            "epochs_run": 1, "wall_time_s": round(time.time() - started, 2), "device": "cpu", "precision": "fp32",
            "num_workers": 0, "train_size": len(train_ds), "val_size": len(val_ds), "world_size": 1,
            "history": [], "classification_report": report_dict(val["label"].numpy(), val_logits.argmax(1),
                                                                model.labels)}


def train_fusion(cache: Cache, fusion_cfg: dict, train_cfg: dict, model_path: str | Path, classes: LabelSet,
                 modalities: list[str] | None = None, report_dir: str | Path | None = None,
                 desc: str = "fusion", training_data: dict | None = None, val_split: str = "val") -> dict:
    """Train a fusion model on cached embeddings (``modalities`` defaults to all available) for ``classes``,
    which must be the classes the cache's specialists were trained on.

    With ``report_dir``, the training curves, ``metrics.json`` and ``classification_report.json`` go there.
    The checkpoint stores ``classes`` (display names and colours included), ``training_data``
    (:func:`~emocare.bundle.training_record`) and what :func:`calibrate` fits on the validation split.
    ``val_split`` names the split that picks the best epoch and fits the calibration (``train`` for a final model
    trained on every label for a fixed number of epochs, whose calibration is then refitted out of fold).
    """
    classes.require_same(cache.label_names, "the embedding cache (its specialists)", "params.yaml's labels")
    mods = cache.trained_modalities(modalities)
    if not mods:
        raise ValueError(f"{desc}: none of {modalities or MODALITIES} has embeddings for training posts")
    tcfg = TrainConfig.from_params(train_cfg, fusion_cfg, {"num_workers": 0})  # cached tensors: no decoding
    seed_everything(tcfg.seed)  # initial weights from the seeded RNG
    train_rows, val_rows = cache.rows_with("train", mods), cache.rows_with(val_split, mods)
    requested, calibration = fusion_cfg["kind"], fusion_cfg.get("calibration", CALIBRATION)
    kind = fusion_kind(requested, len(train_rows), len(mods))
    calibration_used = calibration_kind(calibration, len(train_rows))  # a bad setting stops before training
    fusion_cfg = {**fusion_cfg, "kind": kind}
    model = FusionModel.from_params({m: cache.emb[m].shape[1] for m in mods}, fusion_cfg, list(classes))
    weights = class_weights([classes.names[i] for i in cache.labels[train_rows]], classes)
    extra = {"modalities": mods, "backbones": {m: cache.attrs[m]["backbone"] for m in mods},
             "label_set": classes.to_dict(), "training_data": training_data}
    if kind == "linear":
        if not len(train_rows) or not len(val_rows):
            raise ValueError(f"{desc}: training needs posts in both train ({len(train_rows)}) and val "
                             f"({len(val_rows)})")
        summary = fit_linear(model, cache.dataset(mods, train_rows), cache.dataset(mods, val_rows), weights,
                             model_path, Path(report_dir) / "live" if report_dir else None, extra)
    else:
        summary = fit(model, cache.dataset(mods, train_rows), cache.dataset(mods, val_rows), tcfg,
                      weights, model_path, collate=CachedDataset.collate,
                      live_dir=Path(report_dir) / "live" if report_dir else None, desc=desc, checkpoint_extra=extra)
    report = summary.pop("classification_report")
    summary.pop("history")
    summary["calibration"] = calibrate(model_path, cache, val_rows, calibration_used)
    summary["calibration_requested"] = calibration
    metrics = {"modalities": mods, **{k: fusion_cfg[k] for k in ("kind", "d_model", "heads", "hidden")},
               "kind_requested": requested,
               "modality_dropout": model.modality_dropout, "parameters": count_parameters(model),
               "unlabelled_set_aside": int((cache.labels < 0).sum()), **summary,
               "class_weights": dict(zip(classes, weights, strict=True)), "config": asdict(tcfg)}
    if report_dir is not None:
        write_reports(Path(report_dir), metrics, report)
    return metrics


def calibrate(model_path: str | Path, cache: Cache, rows, kind: str) -> dict:
    """Fit the ``kind`` calibration (:mod:`emocare.calibration`) of the checkpoint at ``model_path`` on the cache's
    ``rows`` (the validation split) and store it, with the calibrated :func:`~emocare.quantify.validation_stats`,
    in the checkpoint; returns the validation ECE and NLL before and after."""
    model, _ = load_fusion(model_path)
    return store_calibration(model_path, cached_fusion_logits(model, cache, rows, calibrated=False),
                             cache.labels[rows], kind)


def store_calibration(model_path: str | Path, raw: np.ndarray, labels: np.ndarray, kind: str) -> dict:
    """Fit the ``kind`` calibration on uncalibrated logits ``raw`` of ``labels`` (the validation split's, or
    under cross-validation the pooled out-of-fold ones) and store it in the checkpoint at ``model_path``."""
    _, payload = load_fusion(model_path)
    fitted = fit_calibration(raw, labels, kind)
    before, after = softmax(raw), softmax(apply(raw, fitted))
    payload["spec"]["calibration"] = fitted
    payload["validation"] = validation_stats(after, labels, keeps_prior_shift=kind in KEEPS_DECISIONS)
    save_payload(payload, model_path)
    return {**fitted, "val_ece_before": ece(before, labels), "val_ece_after": ece(after, labels),
            "val_nll_before": nll(before, labels), "val_nll_after": nll(after, labels)}


def store_evaluation(model_path: str | Path, record: dict) -> None:
    """Keep the bundle's evaluation (:func:`emocare.bundle.evaluation_record`) in the fusion checkpoint, so that
    prediction, the service and the trends state it."""
    _, payload = load_fusion(model_path)
    payload["evaluation"] = record
    save_payload(payload, model_path)


_FUSION_JOBS: dict = {}  # what every fusion job shares: the cache and the configs (inherited by forked workers)


def _share(cache: Cache, fusion_cfg: dict, train_cfg: dict, classes: LabelSet, training_data: dict | None,
           val_split: str, single_thread: bool) -> None:
    _FUSION_JOBS.update(cache=cache, fusion_cfg=fusion_cfg, train_cfg=train_cfg, classes=classes,
                        training_data=training_data, val_split=val_split)
    if single_thread:  # side by side with other jobs, one core each, each in a forked worker
        die_with_parent()
        torch.set_num_threads(1)
        os.environ["TQDM_DISABLE"] = "1"  # the parent shows one bar over the jobs


def _fusion_job(path: Path, subset: list[str] | None, report_dir: str | Path | None) -> dict:
    try:
        return train_fusion(_FUSION_JOBS["cache"], _FUSION_JOBS["fusion_cfg"], _FUSION_JOBS["train_cfg"], path,
                            _FUSION_JOBS["classes"], modalities=subset, report_dir=report_dir,
                            desc=f"ablation {'+'.join(subset)}" if subset else "fusion",
                            training_data=None if subset else _FUSION_JOBS["training_data"],
                            val_split=_FUSION_JOBS["val_split"])
    except ValueError as e:  # this subset's modalities have no training or validation posts
        return {"skipped": str(e)}


def train_fusion_models(cache: Cache, fusion_cfg: dict, train_cfg: dict, report_dir: str | Path | None,
                        classes: LabelSet,
                        models_dir: str | Path = MODELS_DIR, subsets: list[list[str]] = SUBSETS,
                        training_data: dict | None = None, val_split: str = "val") -> dict[str, dict]:
    """Train the fusion model and the ablation's one-per-subset models; returns each one's summary.

    The fusion model (all available modalities) goes to :func:`~emocare.bundle.fusion_path` with its
    reports in ``report_dir``; each subset's model to :func:`~emocare.bundle.subset_path`
    (``{"skipped": reason}`` where the subset has no training data). They are independent, so on a
    CPU they train side by side in forked single-threaded processes, one per core (the model is too
    small to use two cores well); on a GPU one after another. Keys: ``fusion`` and the subset names.
    """
    for stale in subsets_dir(models_dir).glob("*.pt"):
        stale.unlink()
    device = resolve_device(train_cfg["device"])
    jobs = {"fusion": (fusion_path(models_dir), None, report_dir)}
    for s in sorted(subsets, key=len, reverse=True):  # the longest first: the cores finish together
        path = subset_path(s, models_dir)
        if path != jobs["fusion"][0]:  # all modalities: the fusion model itself
            jobs["+".join(s)] = (path, s, None)
    workers = 1 if device.type == "cuda" else min(len(jobs), len(os.sched_getaffinity(0)))
    shared = (cache, fusion_cfg, train_cfg, classes, training_data, val_split, workers > 1)
    if workers == 1:
        _share(*shared)
        results = [_fusion_job(*job) for job in jobs.values()]
    else:  # forked workers inherit the loaded cache and imports
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), initializer=_share,
                                 initargs=shared) as pool:
            futures = [pool.submit(_fusion_job, *job) for job in jobs.values()]
            results = [f.result() for f in progress_bar(futures, desc="fusion models", unit="model")]
    results = dict(zip(jobs, results, strict=True))
    if "skipped" in results["fusion"]:
        raise ValueError(results["fusion"]["skipped"])
    return results


def fold_view(cache: Cache, fold: np.ndarray, f: int, fold_features: dict[str, np.ndarray] | None = None) -> Cache:
    """The cache as fold ``f`` sees it: its splits, and its own features where a specialist was cross-fitted."""
    emb = {**cache.emb, **{m: torch.from_numpy(a[f]) for m, a in (fold_features or {}).items()}}
    return replace(cache, splits=fold_splits(fold, f), emb=emb)


def cross_validate(cache: Cache, fold: np.ndarray, fusion_cfg: dict, train_cfg: dict, report_dir: str | Path,
                   classes: LabelSet, work_dir: str | Path, models_dir: str | Path = MODELS_DIR,
                   training_data: dict | None = None, fold_features: dict[str, np.ndarray] | None = None
                   ) -> Predictions:
    """k-fold cross-validation of the fusion model and the ablation's subset models on the cached embeddings,
    then the final models trained on every labelled post; returns the pooled out-of-fold predictions.

    Fold ``f`` (:func:`emocare.pipeline.crossval.fold_splits`) tests on its posts, picks the best epoch and fits
    its calibration on the next fold, and trains on the rest (models in ``work_dir``). The final models train on
    all labelled posts for the folds' median best epoch (no posts left to stop early on); the fusion model's
    calibration is then fitted on the pooled out-of-fold logits, so the bundle's probabilities are calibrated on
    posts no model saw. ``reports/fusion/info.json`` records the folds. ``fold_features`` (modality ->
    [folds, rows, dim], :func:`emocare.pipeline.crossval.load_fold_features`): a label-tuned specialist's
    features for each fold, from an encoder tuned without that fold's posts, in place of the cached ones.
    """
    folds = int(fold.max()) + 1
    parts, best, val_f1, calibrations = [], [], [], []
    for f in range(folds):
        view = fold_view(cache, fold, f, fold_features)
        results = train_fusion_models(view, fusion_cfg, train_cfg, None, classes, Path(work_dir) / f"fold{f}")
        best.append(results["fusion"]["best_epoch"])
        calibrations.append(results["fusion"]["calibration"]["kind"])
        val_f1.append(results["fusion"]["best_val_macro_f1"])
        parts.append(predict_split(view, Path(work_dir) / f"fold{f}", "test", specialists=False))
    pooled = Predictions.pool(parts)
    epochs = max(1, int(np.median(best)))
    everything = replace(cache, splits=np.where(cache.labels >= 0, "train", ""))
    train_fusion_models(everything, {**fusion_cfg, "epochs": epochs, "patience": epochs}, train_cfg, report_dir,
                        classes, models_dir, training_data=training_data, val_split="train")
    labels = cache.labels[pooled.rows]
    # the folds' calibration kind, not auto's for every label: one that moved the final model's decisions otherwise
    # would ship another classifier than the one the folds measured
    calibration = store_calibration(fusion_path(models_dir), pooled.raw, labels,
                                    Counter(calibrations).most_common(1)[0][0])
    info = read_json(Path(report_dir) / "info.json")
    # the final model has no validation posts: its decision metrics are the folds' (mean validation macro-F1)
    info.update(calibration={**calibration, "fitted_on": "out-of-fold predictions"},
                best_val_macro_f1=float(np.mean(val_f1)), best_epoch=epochs,
                cross_validation={"folds": folds, "fold_best_epochs": best, "fold_val_macro_f1": val_f1,
                                  "final_epochs": epochs, "posts": int(len(labels))})
    write_reports(Path(report_dir), info, read_json(Path(report_dir) / "classification_report.json"))
    return pooled
