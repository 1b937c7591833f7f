"""Test-set evaluation of the fusion model and the seven-subset modality ablation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emocare.bundle import MODELS_DIR, fusion_path, specialist_path, subset_path
from emocare.cache import Cache
from emocare.calibration import ECE_BINS, ece, ece_floor, nll, reliability, softmax
from emocare.data.manifest import Post
from emocare.gallery import error_gallery
from emocare.io import write_json, write_jsonl, write_text
from emocare.labels import MODALITIES, SUBSETS, LabelSet, combo_name
from emocare.media.ocr import posts_ocr
from emocare.metrics import bootstrap_intervals, confusion, macro_f1_interval, paired_difference, report_dict
from emocare.metrics import summary as _summary
from emocare.models.checkpoint import read_checkpoint
from emocare.models.fusion import load_fusion
from emocare.pipeline.plots import ablation_png, confusion_png, reliability_png
from emocare.pipeline.report import ablation_markdown
from emocare.scoring import attribution, attribution_record, cached_fusion_logits, head_logits


@dataclass
class Predictions:
    """What the bundle predicts for the evaluated posts (cache rows, ascending): the fusion model's logits before
    and after calibration, each specialist alone on its posts, and the ablation's subset models on theirs
    (``(rows, calibrated logits)``; ``None`` for a specialist without data or a subset that was not trained)."""

    rows: np.ndarray
    raw: np.ndarray
    logits: np.ndarray
    specialists: dict[str, tuple[np.ndarray, np.ndarray] | None]
    ablation: dict[tuple[str, str], tuple[np.ndarray, np.ndarray] | None]
    calibration: dict | None = None  # the fitted map behind ``logits`` (emocare.calibration)

    @staticmethod
    def pool(parts: list[Predictions]) -> Predictions:
        """The folds' out-of-fold predictions as one set (each row in exactly one part)."""
        def cat(pairs):
            pairs = [p for p in pairs if p is not None]
            if not pairs:
                return None
            rows = np.concatenate([r for r, _ in pairs])
            order = np.argsort(rows, kind="stable")
            return rows[order], np.concatenate([x for _, x in pairs])[order]

        rows, raw = cat([(p.rows, p.raw) for p in parts])
        _, logits = cat([(p.rows, p.logits) for p in parts])
        return Predictions(rows, raw, logits,
                           {m: cat([p.specialists.get(m) for p in parts]) for m in parts[0].specialists},
                           {k: cat([p.ablation.get(k) for p in parts]) for k in parts[0].ablation},
                           parts[0].calibration)


def predict_split(cache: Cache, models_dir: str | Path = MODELS_DIR, split: str = "test",
                  specialists: bool = True) -> Predictions:
    """The bundle in ``models_dir`` on the cache's ``split``: the fusion model on the posts with any of its
    modalities; with ``specialists``, each specialist's classifier head alone on the posts with its modality;
    the ablation's seven subsets, ``masked`` (the fusion model shown only the subset) and ``retrained`` (the
    subset's own fusion model), each on the posts having at least one of the subset's modalities."""
    model, _ = load_fusion(fusion_path(models_dir))
    rows = cache.rows_with(split, model.modalities)
    raw = cached_fusion_logits(model, cache, rows, calibrated=False)
    alone: dict = {}
    for m in MODALITIES if specialists else ():
        spec = read_checkpoint(specialist_path(m, models_dir))  # only its classifier head is needed
        m_rows = cache.rows(split)[cache.present[m][cache.rows(split)]]
        alone[m] = None if spec.get("no_data") or len(m_rows) == 0 else \
            (m_rows, head_logits(spec["state_dict"], cache.emb[m][m_rows]))
    ablation: dict = {}
    for subset in SUBSETS:
        name = "+".join(subset)
        usable = [m for m in subset if m in model.modalities]
        s_rows = cache.rows_with(split, usable) if usable else np.array([], dtype=int)
        ablation[(name, "masked")] = (s_rows, cached_fusion_logits(model, cache, s_rows, shown=usable)
                                      if len(s_rows) else np.zeros((0, len(model.labels)), np.float32))
        path = subset_path(subset, models_dir)
        if not path.exists():
            ablation[(name, "retrained")] = None
            continue
        sub_model, _ = load_fusion(path)
        s_rows = cache.rows_with(split, sub_model.modalities)
        ablation[(name, "retrained")] = (s_rows, cached_fusion_logits(sub_model, cache, s_rows))
    return Predictions(rows, raw, model.calibrate(raw), alone, ablation, model.calibration)


def _with_interval(labels: np.ndarray, logits: np.ndarray) -> dict:
    """:func:`emocare.metrics.summary` with the macro-F1's 95% bootstrap interval."""
    return {**_summary(labels, logits), "macro_f1_interval": macro_f1_interval(labels, logits.argmax(1),
                                                                                logits.shape[1])}


def _paired_against(cache: Cache, preds: Predictions, other: tuple[np.ndarray, np.ndarray]) -> dict | None:
    """Fusion macro-F1 minus ``other``'s (rows, logits) on the posts both scored, with its paired interval."""
    rows, logits = other
    common = np.isin(rows, preds.rows)
    rows, logits = rows[common], logits[common]
    fused = preds.logits[np.searchsorted(preds.rows, rows)]
    return paired_difference(cache.labels[rows], fused.argmax(1), logits.argmax(1), logits.shape[1])


def evaluate_test(cache: Cache, posts: list[Post], out_dir: str | Path, n_errors: int = 50,
                  models_dir: str | Path = MODELS_DIR, frame_store: str | Path | None = None,
                  preds: Predictions | None = None, evaluation: dict | None = None) -> dict:
    """Score the fusion model and each specialist alone on the evaluated posts; write summary.json (every figure
    with its 95% bootstrap interval, fusion against text alone with a paired one), the classification report,
    the confusion csv/png, the reliability csv/png (before and after calibration) and the most confident errors
    (with the text read from their media when the text specialist was trained with ``text.ocr``, from the OCR
    store beside ``frame_store``).

    ``preds`` defaults to :func:`predict_split` of the test split; cross-validation passes the pooled
    out-of-fold predictions (``evaluation`` describes which, :func:`emocare.pipeline.crossval.evaluation_plan`).
    """
    out_dir = Path(out_dir)
    model, payload = load_fusion(fusion_path(models_dir))
    classes = LabelSet.from_payload(payload)
    classes.require_same(cache.label_names, "the embedding cache", "the fusion model")
    names = [classes.display[c] for c in classes]
    cv = (evaluation or {}).get("kind") == "cv"
    preds = preds or predict_split(cache, models_dir)
    test = preds.rows if cv else cache.rows("test")
    rows, raw, logits = preds.rows, preds.raw, preds.logits
    labels = cache.labels[rows]
    pred, probs = logits.argmax(1), softmax(logits)
    report = report_dict(labels, pred, list(classes))
    boot = bootstrap_intervals(labels, probs, ECE_BINS)
    metrics = {**_summary(labels, logits), "test_posts": int(len(test)),
               "unscored_posts": int(len(test) - len(rows)), "unlabelled_set_aside": int((cache.labels < 0).sum()),
               "modalities": model.modalities, "evaluation": evaluation or {"kind": "test"},
               "per_class_f1": {c: report[c]["f1-score"] for c in classes},
               "intervals": {**{k: boot.get(k) for k in ("macro_f1", "weighted_f1", "accuracy")},
                             "per_class_f1": dict(zip(classes, boot.get("per_class_f1", []), strict=False)),
                             "resamples": boot.get("resamples"), "level": boot.get("level"),
                             "unit": "posts (percentile bootstrap)"}}
    combos = np.array([combo_name({m: bool(cache.present[m][r]) for m in MODALITIES}) for r in rows])
    metrics["by_combination"] = {c: _with_interval(labels[combos == c], logits[combos == c])
                                 for c in ("text", "text+image", "text+video") if (combos == c).any()}
    specialists, ocr = {}, False
    for m in MODALITIES:
        ocr = ocr or bool(read_checkpoint(specialist_path(m, models_dir))["spec"].get("ocr"))
        if m not in preds.specialists:  # cross-validation: the heads trained on some of these posts
            continue
        got = preds.specialists[m]
        specialists[m] = {"n": 0, "macro_f1": None, "accuracy": None, "no_data": True} if got is None else \
            {**_with_interval(cache.labels[got[0]], got[1]), "no_data": False}
    metrics["specialists"] = specialists
    text_alone = preds.specialists.get("text") if not cv else preds.ablation.get(("text", "retrained"))
    metrics["fusion_minus_text"] = None if text_alone is None else {
        **_paired_against(cache, preds, text_alone),
        "text_model": "the text subset's own fusion model, out of fold" if cv else "the text specialist alone"}
    metrics["calibration"] = _calibration_report(softmax(raw), probs, labels, preds.calibration, out_dir)
    metrics["calibration"]["ece_after_interval"] = boot.get("ece")
    write_json(out_dir / "summary.json", metrics)
    write_json(out_dir / "classification_report.json", report)
    write_text(out_dir / "confusion.csv", "actual,predicted\n" + "".join(
        f"{names[a]},{names[p]}\n" for a, p in zip(labels, pred, strict=True)))
    confusion_png(confusion(labels, pred, len(classes)), names, out_dir / "confusion.png",
                  "Out of fold" if cv else "Test set")
    by_id = {p.id: p for p in posts}
    wrong = np.flatnonzero(pred != labels)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:n_errors]
    errors = [_error_record(by_id[cache.ids[rows[i]]], classes, labels[i], pred[i], probs[i], combos[i])
              for i in wrong]
    if not cv:  # out of fold, each post's prediction came from its fold's model, not this one
        shown = torch.as_tensor(rows[wrong], dtype=torch.long)
        _, attr = attribution(model, {m: cache.emb[m][shown] for m in model.modalities},
                              cache.present_matrix(model.modalities)[shown], torch.device("cpu"))
        for err, a in zip(errors, attr, strict=True):
            err["attribution"] = attribution_record(model.modalities, a)
    if ocr:
        for err, text in zip(errors, posts_ocr([by_id[e["id"]] for e in errors], frame_store), strict=True):
            err["ocr_text"] = text
    write_jsonl(out_dir / "errors.jsonl", errors)
    write_text(out_dir / "errors.html", error_gallery(errors, len(rows), classes))
    return metrics


def _calibration_report(before: np.ndarray, after: np.ndarray, labels: np.ndarray, fitted: dict | None,
                        out_dir: Path) -> dict:
    """Test ECE and NLL before and after calibration; the reliability diagram (PNG) and its DVC plot (CSV)."""
    curves = {"before": reliability(before, labels), "after": reliability(after, labels)}
    eces = {k: ece(p, labels) for k, p in (("before", before), ("after", after))}
    reliability_png({f"{k} calibration": v for k, v in curves.items()},
                    {f"{k} calibration": v for k, v in eces.items()}, out_dir / "reliability.png")
    by_bin = {k: {b["bin"]: b for b in v} for k, v in curves.items()}
    rows = "".join(f"{(b + 0.5) / ECE_BINS:.4f},{(b + 0.5) / ECE_BINS:.4f}," + ",".join(
        f"{by_bin[k][b]['accuracy']:.4f}" if b in by_bin[k] else "" for k in curves) + "\n" for b in range(ECE_BINS))
    write_text(out_dir / "reliability.csv", "confidence,ideal,before,after\n" + rows)
    return {"kind": (fitted or {}).get("kind", "none"), "ece_before": eces["before"], "ece_after": eces["after"],
            "ece_floor": ece_floor(after), "nll_before": nll(before, labels), "nll_after": nll(after, labels),
            "bins": ECE_BINS, "posts": len(labels)}


def _error_record(post: Post, classes: LabelSet, true: int, pred: int, probs: np.ndarray, combo: str) -> dict:
    names = classes.names
    return {"id": post.id, "true": names[true], "predicted": names[pred], "probability": round(float(probs[pred]), 4),
            "probabilities": {c: round(float(p), 4) for c, p in zip(names, probs, strict=True)},
            "modalities": combo, "text": post.text[:200], "image": _portable(post.image),
            "video": _portable(post.video)}


def _portable(path: str | None) -> str | None:
    """A media path relative to the working directory (the repository) when it lies inside it, so that the
    report reads the same in every checkout."""
    if path is None or not Path(path).is_relative_to(Path.cwd()):
        return path
    return Path(path).relative_to(Path.cwd()).as_posix()


def headline_metrics(test: dict, ablation: list[dict]) -> dict:
    """``reports/metrics.json``: the few numbers experiments are compared on (``dvc exp show``, ``metrics diff``)."""
    rows = {(r["subset"], r["mode"]): r["macro_f1"] for r in ablation}
    low, high = test["intervals"]["macro_f1"]
    return {"test": {**{k: test[k] for k in ("macro_f1", "weighted_f1", "accuracy")},
                     "macro_f1_low": low, "macro_f1_high": high,
                     "ece": test["calibration"]["ece_after"], "ece_uncalibrated": test["calibration"]["ece_before"]},
            "by_modalities": {k: v["macro_f1"] for k, v in test["by_combination"].items()},
            "specialist_alone": {k: v["macro_f1"] for k, v in test["specialists"].items()},
            "ablation": {"text_masked": rows.get(("text", "masked")), "text_retrained": rows.get(("text", "retrained")),
                         "all_masked": rows.get(("text+image+video", "masked")),
                         "all_retrained": rows.get(("text+image+video", "retrained"))}}


def run_ablation(cache: Cache, models_dir: str | Path = MODELS_DIR, preds: Predictions | None = None) -> list[dict]:
    """Macro-F1 of the seven modality subsets, ``masked`` and ``retrained`` (:func:`predict_split`), each with its
    95% bootstrap interval and the fusion model's gain over it on the same posts with a paired interval.

    ``masked`` hides the other modalities from the fusion model; ``retrained`` scores the subset's own fusion
    model that :func:`emocare.pipeline.fusion_training.train_fusion_models` wrote. Each row is evaluated on the
    posts having at least one of the subset's modalities: the test split's, or under cross-validation the
    pooled out-of-fold ``preds``.
    """
    preds = preds or predict_split(cache, models_dir, specialists=False)
    results = []
    for (name, mode), got in preds.ablation.items():
        if got is None:
            results.append({"subset": name, "mode": mode, "n": 0, "macro_f1": None, "weighted_f1": None,
                            "accuracy": None, "note": "not trained: no training or validation posts with "
                                                      "these modalities"})
            continue
        rows, logits = got
        gain = _paired_against(cache, preds, got) if len(rows) else None
        results.append({"subset": name, "mode": mode, **_with_interval(cache.labels[rows], logits),
                        "fusion_gain": gain})
    return results


def write_ablation(rows: list[dict], out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    write_json(out_dir / "ablation.json", {"rows": rows})
    write_text(out_dir / "ablation.md", "# Modality ablation (test split)\n\n" + ablation_markdown(rows))
    write_text(out_dir / "ablation.csv", "subset,mode,n,macro_f1\n" + "".join(
        f"{r['subset']},{r['mode']},{r['n']},{'' if r['macro_f1'] is None else round(r['macro_f1'], 4)}\n"
        for r in rows))
    ablation_png(rows, out_dir / "ablation.png")
