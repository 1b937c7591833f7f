"""``reports/RESULTS.md``: the results document, generated only from files the stages wrote."""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path

from emocare.bundle import MODELS_DIR, fusion_path, specialist_path
from emocare.calibration import describe
from emocare.io import read_json
from emocare.labels import SUBSETS, LabelSet

TITLES = {"text": "Text Specialist", "image": "Image Specialist", "video": "Video Specialist"}


def _f(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(v, bounds, digits: int = 4) -> str:
    """A figure with its 95% interval: ``0.8123 [0.7710, 0.8490]``."""
    if v is None:
        return "n/a"
    return _f(v, digits) + (f" [{_f(bounds[0], digits)}, {_f(bounds[1], digits)}]" if bounds else "")


def _gain(g: dict | None) -> str:
    """A paired difference with its interval, signed: ``+0.0512 [+0.0101, +0.0930]``."""
    if not g:
        return "n/a"
    lo, hi = g["interval"]
    return f"{g['difference']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _pretrained_note(m: dict) -> str:
    return "" if m.get("pretrained") else " (backbone NOT pretrained: trained from scratch)"


def _weights_lines(m: dict) -> list[str]:
    """Where the backbone's weights came from, whether training changed them, and whether OCR text was read."""
    lines = [f"- Weights: {m['pretrained_source']}"] if m.get("pretrained_source") else []
    if "frozen" in m:
        lines.append("- Backbone frozen: only the classifier head was trained, on the backbone's stored features"
                     if m["frozen"] else "- Backbone fine-tuned with the head")
    if m.get("ocr"):
        lines.append("- Text read from the post's image or video (OCR) follows the post's text")
    return lines


def _per_class_table(report: dict, classes: LabelSet) -> list[str]:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name in [*classes, "macro avg", "weighted avg"]:
        r = report.get(name)
        if r:
            lines.append(f"| {classes.display.get(name, name)} | {r['precision']:.2f} | {r['recall']:.2f} | "
                         f"{r['f1-score']:.2f} | {int(r['support'])} |")
    if "accuracy" in report:
        lines.append(f"| accuracy | | | {report['accuracy']:.2f} | |")
    return lines


def ablation_markdown(rows: list[dict]) -> str:
    """The ablation table: each subset's macro-F1 [95% interval] and n, masked and retrained, and the fusion
    model's gain over the retrained subset model on the same posts [paired 95% interval]."""
    lines = ["| subset | masked macro-F1 | masked n | retrained macro-F1 | retrained n | fusion gain over retrained |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in ("+".join(s) for s in SUBSETS):
        m = next(r for r in rows if r["subset"] == name and r["mode"] == "masked")
        r = next(r for r in rows if r["subset"] == name and r["mode"] == "retrained")
        lines.append(f"| {name} | {_ci(m['macro_f1'], m.get('macro_f1_interval'))} | {m['n']} | "
                     f"{_ci(r['macro_f1'], r.get('macro_f1_interval'))} | {r['n']} | {_gain(r.get('fusion_gain'))} |")
    return "\n".join(lines) + "\n"



def _specialist_section(n: int, modality: str, reports: Path, classes: LabelSet) -> list[str]:
    m = read_json(reports / modality / "info.json")
    out = [f"## {n}. {TITLES[modality]} ({m['backbone']})", ""]
    out += ["**Model architecture:**", f"- Backbone: `{m['backbone']}`, pretrained: {m['pretrained']}"
            f"{_pretrained_note(m)}", *_weights_lines(m), f"- Embedding dimension: {m['embedding_dim']}",
            f"- Parameters: {m['parameters']:,}", f"- Classifier: Linear({m['embedding_dim']} → {len(classes)})", ""]
    if m.get("no_data"):
        return out + [f"**No data:** the dataset has no {modality} posts in train ({m['train_posts']}) or val "
                      f"({m['val_posts']}); this specialist was not trained and {modality} is absent downstream.", ""]
    c = m["config"]
    out += ["**Training configuration:**", f"- Epochs: {c['epochs']} (ran {m['epochs_run']}, best {m['best_epoch']})",
            f"- Batch size: {c['batch_size']}", f"- Learning rate: {c['lr']}", f"- Weight decay: {c['weight_decay']}",
            f"- Warmup steps: {c['warmup_steps']}", "- Optimizer: AdamW", f"- Early stopping patience: {c['patience']}",
            f"- Training posts: {m['train_size']}, validation posts: {m['val_size']}", "",
            f"**Hardware:** device {m['device']}, training time {m['wall_time_s']:.1f} s", "",
            "**Class weights:**", "```"]
    out += [f"{classes.display[k]}: {v:.4f}" for k, v in m["class_weights"].items()] + ["```", ""]
    out += ["**Final results:**", f"- **Best validation macro-F1: {_f(m['best_val_macro_f1'])}**{_pretrained_note(m)}",
            f"- Validation loss: {_f(m['best_val_loss'])}", f"- Validation accuracy: {_f(m['best_val_accuracy'])}",
            f"- Best model saved: `{specialist_path(modality).as_posix()}`", "",
            "**Per-class performance (best epoch, validation):**", ""]
    return out + _per_class_table(read_json(reports / modality / "classification_report.json"), classes) + [""]


def _calibration_lines(fitted: dict | None, test: dict | None, cv: bool = False) -> list[str]:
    """How the probabilities were calibrated, and the ECE before and after on validation and test (or, under
    cross-validation, on the pooled out-of-fold predictions, each fold calibrated on its own validation fold)."""
    if not fitted or not test:
        return []
    where = ("the pooled out-of-fold predictions (the bundle's model); the out-of-fold row below is each fold's "
             "model calibrated on its own validation fold" if cv else "the validation split")
    return ["**Calibration of the probabilities:** " + describe(fitted) + f", fitted on {where}.", "",
            "| split | ECE before | ECE after [95% interval] | NLL before | NLL after |", "|---|---:|---:|---:|---:|",
            f"| {'out of fold (fitted)' if cv else 'validation'} | {_f(fitted['val_ece_before'])} | "
            f"{_f(fitted['val_ece_after'])} | {_f(fitted['val_nll_before'])} | {_f(fitted['val_nll_after'])} |",
            f"| {'out of fold' if cv else 'test'} | {_f(test['ece_before'])} | "
            f"{_ci(test['ece_after'], test.get('ece_after_interval'))} | {_f(test['nll_before'])} | "
            f"{_f(test['nll_after'])} |", "",
            f"ECE: top-label expected calibration error, {test['bins']} equal-width confidence bins. Perfectly "
            f"calibrated probabilities with the calibrated model's confidences would read {_f(test['ece_floor'])} "
            f"on these {test['posts']} test posts (each top label drawn right with its confidence): an ECE near that "
            "is as calibrated as this test set can show.", "",
            "![reliability diagram](test/reliability.png)", ""]


def _evaluation_lines(test: dict) -> list[str]:
    """How the figures below were measured: the held-out test split or cross-validation, and why."""
    plan = test.get("evaluation") or {}
    if plan.get("kind") == "cv":
        return [f"**Evaluation: {plan['folds']}-fold cross-validation** over all {plan['labelled']} labelled posts: "
                "each post is scored by the fusion model of the fold that did not train on it, and the figures pool "
                "those out-of-fold predictions. The bundle's fusion model was then trained on every label. Why: "
                f"{plan['why']}.", ""]
    if plan.get("why"):
        return [f"**Evaluation: the held-out test split.** Why: {plan['why']}.", ""]
    return []


def _baseline_lines(test: dict, baselines: dict) -> list[str]:
    """EmoCare beside the majority class, TF-IDF + LR and frozen-backbone LR on the same split or folds."""
    rows = baselines["baselines"]
    names = {"majority": "majority class (the training posts' most frequent)",
             "tfidf_lr": "TF-IDF word 1-2-grams + logistic regression (balanced, C on validation)",
             "frozen_lr": "frozen-backbone logistic regression (balanced, C on validation) on "
                          + baselines["frozen_features"]}
    lines = ["**Against baselines** (trained and scored on the same " + (
        "folds" if baselines["evaluation"]["kind"] == "cv" else "split") + "):", "",
             "| model | n | macro-F1 [95% interval] |", "|---|---:|---:|",
             f"| **EmoCare** | {test['n']} | **{_ci(test['macro_f1'], test.get('intervals', {}).get('macro_f1'))}** |"]
    lines += [f"| {names[k]} | {v['n']} | {_ci(v['macro_f1'], v['macro_f1_interval'])} |" for k, v in rows.items()]
    return lines


def _learning_curve_lines(curve: dict, cv: bool) -> list[str]:
    """The learning curve's table and picture, and what the next labels are likely to add."""
    lines = ["Macro-F1 of the fusion model retrained on nested shares of the training posts (each smaller set inside "
             "the larger), scored on the same " + ("out-of-fold posts (labels: per fold)" if cv else "test posts")
             + ". Where a specialist was fine-tuned or tuned by setfit, its embeddings came from every training "
             "label (of the fold) at each point: the curve then varies the fusion model's labels only, and "
             "understates what more labels add.", "",
             "| training labels | share | macro-F1 [95% interval] | n scored |", "|---:|---:|---:|---:|"]
    lines += [f"| {p['labels']} | {p['share']:.0%} | {_ci(p['macro_f1'], p['interval'])} | {p['n']} |"
              for p in curve["points"]]
    nxt = curve.get("next")
    if nxt:
        lo, hi = nxt["per_100_labels_interval"]
        lines += ["", f"**What more labels are likely to add:** from {nxt['from_labels']} to {nxt['to_labels']} "
                  f"training labels macro-F1 moved {_gain(nxt)} (paired, same posts), {nxt['per_100_labels']:+.4f} "
                  f"per 100 labels [{lo:+.4f}, {hi:+.4f}]. Returns diminish with labels, so the next few hundred "
                  "are likely to add no more than this rate each hundred; an interval spanning 0 means the curve "
                  "cannot tell."]
    return lines + ["", "![learning curve](learning_curve.png)", ""]


def build_results(classes: LabelSet, reports: str | Path = "reports") -> str:
    """Assemble RESULTS.md in the structure of the original training-results document (classes shown by
    ``classes``' display names)."""
    reports = Path(reports)
    stats = read_json(reports / "data" / "stats.json")
    validation = read_json(reports / "data" / "validation.json")
    fusion = read_json(reports / "fusion" / "info.json")
    test = read_json(reports / "test" / "summary.json")
    ablation = read_json(reports / "ablation.json")["rows"]
    specialists = {m: read_json(reports / m / "info.json") for m in TITLES}
    baselines = read_json(reports / "baselines.json")
    curve = read_json(reports / "learning_curve.json")
    iv = test.get("intervals", {})
    cv = test.get("evaluation", {}).get("kind") == "cv"
    what = "Out-of-fold" if cv else "Test"
    out = ["# EmoCare Multimodal Emotion Classification - Training Results", "",
           "Generated by the `report` stage from the files the pipeline wrote; do not edit by hand.", "",
           "## Overview", "", "**Dataset statistics:**",
           f"- Manifest records read: {validation['read']}, kept: {validation['kept']}, "
           f"quarantined: {validation['quarantined']}",
           f"- Total samples: {stats['total']:,}"]
    out += [f"- {s.capitalize()}: {v['count']:,} ({v['share']:.1%})" for s, v in stats["splits"].items()]
    out += ["", "**Class distribution:**"]
    out += [f"- {classes.display[c]}: {v['count']:,} samples ({v['share']:.1%})" for c, v in stats["classes"].items()]
    out += ["", "**Modality distribution:**"]
    out += [f"- {k}: {v['count']:,} ({v['share']:.1%})" for k, v in stats["modalities"].items()]
    out += ["", "---", ""]
    for n, m in enumerate(TITLES, start=1):
        out += _specialist_section(n, m, reports, classes) + ["---", ""]
    c = fusion["config"]
    out += ["## 4. Fusion Model (cross-modal " + ("attention" if fusion["kind"] == "attention" else fusion["kind"])
            + ")", "", "**Model architecture:**",
            "- Input: cached embeddings of " + ", ".join(
                f"{m} ({specialists[m]['embedding_dim']}-d, `{specialists[m]['backbone']}`)"
                for m in fusion["modalities"]),
            f"- Fusion kind: {fusion['kind']}, d_model {fusion['d_model']}, heads {fusion['heads']}, "
            f"MLP hidden {fusion['hidden']}",
            f"- Modality dropout: {fusion['modality_dropout']} (training only, never all of a post's modalities)",
            f"- Parameters: {fusion['parameters']:,}", "", "**Training configuration:**",
            f"- Epochs: {c['epochs']} (ran {fusion['epochs_run']}, best {fusion['best_epoch']}), batch size "
            f"{c['batch_size']}, learning rate {c['lr']}, weight decay {c['weight_decay']}, warmup {c['warmup_steps']}",
            f"- Trained on frozen specialist embeddings; device {fusion['device']}, time {fusion['wall_time_s']:.1f} s",
            "", "**Final results:**",
            (f"- **Best validation macro-F1 (mean over the folds): {_f(fusion['best_val_macro_f1'])}**; the bundle's "
             f"model trained on every label for {fusion['cross_validation']['final_epochs']} epochs (the folds' "
             "median best)" if cv else f"- **Best validation macro-F1: {_f(fusion['best_val_macro_f1'])}**"),
            f"- Validation loss: {_f(fusion['best_val_loss'])}", f"- Best model saved: `{fusion_path().as_posix()}`",
            "", "---", "", f"## 5. {'Cross-Validated' if cv else 'Test Set'} Evaluation", "",
            *_evaluation_lines(test), "**Final system performance** (95% bootstrap intervals over the scored posts in "
            "brackets):", f"- **{what} macro-F1: {_ci(test['macro_f1'], iv.get('macro_f1'))}**",
            f"- {what} weighted-F1: {_ci(test['weighted_f1'], iv.get('weighted_f1'))}",
            f"- {what} accuracy: {_ci(test['accuracy'], iv.get('accuracy'))}",
            f"- {what} posts: {test['test_posts']} (scored {test['n']}, unscored {test['unscored_posts']})", "",
            "**Per-class F1:**"]
    out += [f"- {classes.display[k]}: {_ci(v, iv.get('per_class_f1', {}).get(k))}"
            for k, v in test["per_class_f1"].items()]
    if test.get("fusion_minus_text"):
        g = test["fusion_minus_text"]
        out += ["", f"**Fusion against text alone** ({g['text_model']}, the same {g['n']} posts, paired bootstrap): "
                f"macro-F1 difference {_gain(g)}."]
    out += ["", *_baseline_lines(test, baselines)]
    out += ["", "**By modality combination:**", "", "| posts | n | macro-F1 [95% interval] | accuracy |",
            "|---|---:|---:|---:|"]
    out += [f"| {k} | {v['n']} | {_ci(v['macro_f1'], v.get('macro_f1_interval'))} | {_f(v['accuracy'])} |"
            for k, v in test["by_combination"].items()]
    if test["specialists"]:
        out += ["", "**Each specialist alone (test posts with its modality):**", "",
                "| specialist | n | macro-F1 [95% interval] | accuracy |", "|---|---:|---:|---:|"]
        out += [f"| {k}{_pretrained_note(specialists[k])} | {v['n']} | "
                f"{_ci(v['macro_f1'], v.get('macro_f1_interval'))} | {_f(v['accuracy'])} |"
                for k, v in test["specialists"].items()]
    out += ["", *_calibration_lines(fusion.get("calibration"), test.get("calibration"), cv),
            "**Confusion matrix:**", "", "![confusion matrix](test/confusion.png)", "",
            "**Misclassified posts:** [the error gallery](test/errors.html) (thumbnails, probabilities, filters; "
            "opens offline), also as [JSON Lines](test/errors.jsonl).", "", "---", "",
            "## 6. Ablation Study", "",
            f"{what} macro-F1 per modality subset; `masked` hides the other modalities from the trained fusion model, "
            f"`retrained` trains a fusion model on that subset only. n = {what.lower()} posts with at least one of the "
            "subset's modalities. Brackets: 95% bootstrap intervals; the gain is the fusion model's macro-F1 minus "
            "the retrained subset model's on the same posts, with a paired interval.", "",
            ablation_markdown(ablation).rstrip(), "", "![ablation](ablation.png)", "",
            "---", "", "## 7. Learning Curve", "", *_learning_curve_lines(curve, cv), "---", "",
            "## 8. Computational Resources", ""]
    total = sum(specialists[m].get("wall_time_s", 0.0) for m in TITLES) + fusion["wall_time_s"]
    out += [f"- Torch {version('torch')}, Python {platform.python_version()}, {platform.machine()}"]
    out += [f"- {TITLES[m]}: " + ("no data" if s.get("no_data") else f"{s['wall_time_s']:.1f} s on {s['device']}")
            for m, s in specialists.items()]
    out += [f"- Fusion model: {fusion['wall_time_s']:.1f} s on {fusion['device']}",
            f"- **Total training time: {total:.1f} s**", "", "---", "", "## 9. Model Checkpoints", "", "```",
            f"{MODELS_DIR}/"]
    out += [f"├── {specialist_path(m, '').as_posix()} ("
            + ("no data" if s.get("no_data") else f"val macro-F1 {_f(s['best_val_macro_f1'])}") + ")"
            for m, s in specialists.items()]
    out += [f"└── {fusion_path('').as_posix()} (val macro-F1 {_f(fusion['best_val_macro_f1'])})", "```", ""]
    return "\n".join(out)
