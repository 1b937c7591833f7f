"""Test-set evaluation of the fusion model and the seven-subset modality ablation."""

from __future__ import annotations

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
from emocare.metrics import confusion, report_dict
from emocare.metrics import summary as _summary
from emocare.models.checkpoint import read_checkpoint
from emocare.models.fusion import load_fusion
from emocare.pipeline.plots import ablation_png, confusion_png, reliability_png
from emocare.pipeline.report import ablation_markdown
from emocare.scoring import attribution, attribution_record, cached_fusion_logits, head_logits


def evaluate_test(cache: Cache, posts: list[Post], out_dir: str | Path, n_errors: int = 50,
                  models_dir: str | Path = MODELS_DIR, frame_store: str | Path | None = None) -> dict:
    """Score the test split with the fusion model and each specialist alone; write summary.json, the
    classification report, the confusion csv/png, the reliability csv/png (before and after calibration)
    and the most confident errors (with the text read from their media when the text specialist was
    trained with ``text.ocr``, from the OCR store beside ``frame_store``)."""
    out_dir = Path(out_dir)
    model, payload = load_fusion(fusion_path(models_dir))
    classes = LabelSet.from_payload(payload)
    classes.require_same(cache.label_names, "the embedding cache", "the fusion model")
    names = [classes.display[c] for c in classes]
    test = cache.rows("test")
    rows = cache.rows_with("test", model.modalities)
    labels = cache.labels[rows]
    raw = cached_fusion_logits(model, cache, rows, calibrated=False)
    logits = model.calibrate(raw)
    pred, probs = logits.argmax(1), softmax(logits)
    report = report_dict(labels, pred, list(classes))
    metrics = {**_summary(labels, logits), "test_posts": int(len(test)),
               "unscored_posts": int(len(test) - len(rows)), "unlabelled_set_aside": int((cache.labels < 0).sum()),
               "modalities": model.modalities,
               "per_class_f1": {c: report[c]["f1-score"] for c in classes}}
    combos = np.array([combo_name({m: bool(cache.present[m][r]) for m in MODALITIES}) for r in rows])
    metrics["by_combination"] = {c: _summary(labels[combos == c], logits[combos == c])
                                 for c in ("text", "text+image", "text+video") if (combos == c).any()}
    specialists, ocr = {}, False
    for m in MODALITIES:
        spec = read_checkpoint(specialist_path(m, models_dir))  # only its classifier head is needed
        ocr = ocr or bool(spec["spec"].get("ocr"))
        m_rows = test[cache.present[m][test]]
        if spec.get("no_data") or len(m_rows) == 0:
            specialists[m] = {"n": int(len(m_rows)), "macro_f1": None, "accuracy": None, "no_data": True}
            continue
        alone = head_logits(spec["state_dict"], cache.emb[m][m_rows])
        specialists[m] = {**_summary(cache.labels[m_rows], alone), "no_data": False}
    metrics["specialists"] = specialists
    metrics["calibration"] = _calibration_report(softmax(raw), probs, labels, model.calibration, out_dir)
    write_json(out_dir / "summary.json", metrics)
    write_json(out_dir / "classification_report.json", report)
    write_text(out_dir / "confusion.csv", "actual,predicted\n" + "".join(
        f"{names[a]},{names[p]}\n" for a, p in zip(labels, pred, strict=True)))
    confusion_png(confusion(labels, pred, len(classes)), names, out_dir / "confusion.png")
    by_id = {p.id: p for p in posts}
    wrong = np.flatnonzero(pred != labels)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:n_errors]
    errors = [_error_record(by_id[cache.ids[rows[i]]], classes, labels[i], pred[i], probs[i], combos[i])
              for i in wrong]
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
    return {"test": {**{k: test[k] for k in ("macro_f1", "weighted_f1", "accuracy")},
                     "ece": test["calibration"]["ece_after"], "ece_uncalibrated": test["calibration"]["ece_before"]},
            "by_modalities": {k: v["macro_f1"] for k, v in test["by_combination"].items()},
            "specialist_alone": {k: v["macro_f1"] for k, v in test["specialists"].items()},
            "ablation": {"text_masked": rows.get(("text", "masked")), "text_retrained": rows.get(("text", "retrained")),
                         "all_masked": rows.get(("text+image+video", "masked")),
                         "all_retrained": rows.get(("text+image+video", "retrained"))}}


def run_ablation(cache: Cache, models_dir: str | Path = MODELS_DIR) -> list[dict]:
    """Test macro-F1 of the seven modality subsets, ``masked`` and ``retrained``.

    ``masked`` hides the other modalities from the fusion model; ``retrained`` scores the subset's
    own fusion model that :func:`emocare.pipeline.fusion_training.train_fusion_models` wrote. Each row is evaluated on
    the test posts having at least one of the subset's modalities.
    """
    model, _ = load_fusion(fusion_path(models_dir))
    results = []
    for subset in SUBSETS:
        name = "+".join(subset)
        usable = [m for m in subset if m in model.modalities]
        rows = cache.rows_with("test", usable) if usable else np.array([], dtype=int)
        logits = cached_fusion_logits(model, cache, rows, shown=usable) if len(rows) else \
            np.zeros((0, len(model.labels)))
        results.append({"subset": name, "mode": "masked", **_summary(cache.labels[rows], logits)})
        path = subset_path(subset, models_dir)
        if not path.exists():
            results.append({"subset": name, "mode": "retrained", "n": 0, "macro_f1": None, "weighted_f1": None,
                            "accuracy": None, "note": "not trained: no training or validation posts with "
                                                      "these modalities"})
            continue
        sub_model, _ = load_fusion(path)
        rows = cache.rows_with("test", sub_model.modalities)
        results.append({"subset": name, "mode": "retrained",
                        **_summary(cache.labels[rows], cached_fusion_logits(sub_model, cache, rows))})
    return results


def write_ablation(rows: list[dict], out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    write_json(out_dir / "ablation.json", {"rows": rows})
    write_text(out_dir / "ablation.md", "# Modality ablation (test split)\n\n" + ablation_markdown(rows))
    write_text(out_dir / "ablation.csv", "subset,mode,n,macro_f1\n" + "".join(
        f"{r['subset']},{r['mode']},{r['n']},{'' if r['macro_f1'] is None else round(r['macro_f1'], 4)}\n"
        for r in rows))
    ablation_png(rows, out_dir / "ablation.png")
