"""How sure every number is: bootstrap intervals, cross-validation below split.cv_below, the baselines, the
learning curve, and the bundle's evaluation reaching predict, serve and trends."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TEXT, TRAIN
from test_fusion import FUSION, synthetic_cache

from emocare.bundle import evaluation_line, evaluation_warning, fusion_path, provenance_path
from emocare.calibration import ECE_BINS, ece
from emocare.cli import main as cli
from emocare.labels import DEFAULT
from emocare.metrics import bootstrap_intervals, macro_f1_interval, paired_difference, report_dict, scores
from emocare.pipeline.baselines import frozen_features, score_baselines
from emocare.pipeline.crossval import assign_folds, evaluation_plan, fold_splits
from emocare.pipeline.evaluate import predict_split, run_ablation
from emocare.pipeline.fusion_training import cross_validate, store_evaluation, train_fusion
from emocare.pipeline.learning_curve import _subset_view, learning_curve

QUICK = {**FUSION, "kind": "concat", "epochs": 3, "patience": 3, "calibration": "bcts"}


def _predictions(n: int, k: int = 5, skill: float = 0.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities whose top label is right about ``skill`` of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    right = rng.random(n) < skill
    probs[right, labels[right]] += 1.0
    return labels, probs / probs.sum(1, keepdims=True)


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_posts():
    widths = {}
    for n in (200, 3000):
        labels, probs = _predictions(n)
        boot = bootstrap_intervals(labels, probs, ECE_BINS)
        point = scores(np.log(probs), labels)
        report = report_dict(labels, probs.argmax(1), list(DEFAULT))
        for key in ("macro_f1", "weighted_f1", "accuracy"):
            lo, hi = boot[key]
            assert lo <= point[key] <= hi, (n, key)
        lo, hi = boot["ece"]
        assert lo <= ece(probs, labels) <= hi
        for c, (lo, hi) in zip(DEFAULT, boot["per_class_f1"], strict=True):
            assert lo <= report[c]["f1-score"] <= hi
        widths[n] = boot["macro_f1"][1] - boot["macro_f1"][0]
        assert boot["macro_f1"] == macro_f1_interval(labels, probs.argmax(1), 5)  # same draws, same bounds
    assert widths[3000] < widths[200] / 2.5  # ~ 1 / sqrt(n): 3.9x narrower


def test_paired_interval_is_zero_for_identical_models_and_narrower_than_unpaired():
    labels, probs = _predictions(600, skill=0.6)
    pred = probs.argmax(1)
    same = paired_difference(labels, pred, pred, 5)
    assert same["difference"] == 0 and same["interval"] == [0.0, 0.0] and same["n"] == 600
    better = pred.copy()
    fix = np.flatnonzero(pred != labels)[::3]  # a model right on a third of the other's errors
    better[fix] = labels[fix]
    gain = paired_difference(labels, better, pred, 5)
    assert gain["interval"][0] > 0 and gain["interval"][0] <= gain["difference"] <= gain["interval"][1]
    unpaired = [macro_f1_interval(labels, p, 5) for p in (better, pred)]
    assert gain["interval"][1] - gain["interval"][0] < sum(hi - lo for lo, hi in unpaired) / 2


def test_cross_validation_below_the_threshold_only_with_frozen_specialists():
    split = {"cv_below": 1000, "folds": 5}
    frozen = {"text": {"regime": "frozen"}, "image": {"frozen": True}, "video": {"no_data": True}}
    assert evaluation_plan(999, split, frozen)["kind"] == "cv"
    assert evaluation_plan(1000, split, frozen)["kind"] == "test"
    tuned = {**frozen, "text": {"regime": "finetune", "frozen": False}}
    plan = evaluation_plan(300, split, tuned)
    assert plan["kind"] == "test" and "text specialist" in plan["why"]
    assert evaluation_plan(300, split)["kind"] == "cv" and "if every specialist is frozen" in \
        evaluation_plan(300, split)["why"]  # the split stage, before any specialist trained


def test_folds_are_stratified_and_keep_duplicates_together():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    labels[:10] = -1  # unlabelled: no fold
    groups = [f"g{i}" for i in range(200)]
    groups[20] = groups[21] = groups[22] = "same text"
    labels[20:23] = 1
    fold = assign_folds(labels, groups, 5, seed=1)
    assert (fold[:10] == -1).all() and set(fold[10:]) == set(range(5))
    assert len(set(fold[20:23])) == 1
    for c in range(3):
        counts = np.bincount(fold[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 3  # within one group of each other
    assert (fold == assign_folds(labels, groups, 5, seed=1)).all()
    splits = fold_splits(fold, 2)
    assert set(np.flatnonzero(splits == "test")) == set(np.flatnonzero(fold == 2))
    assert set(np.flatnonzero(splits == "val")) == set(np.flatnonzero(fold == 3))
    assert (splits[:10] == "").all()


def test_cross_validation_scores_every_label_once_and_calibrates_the_bundle_out_of_fold(tmp_path: Path,
                                                                                         monkeypatch):
    from emocare.models.checkpoint import read_checkpoint
    from emocare.pipeline import fusion_training

    # calibration auto: each fold's ~50 training posts below the threshold, the final model's 145 above it
    monkeypatch.setattr(fusion_training, "BIASES_FROM", 120)
    cache = synthetic_cache(150)
    cache.labels[:5] = -1  # unlabelled posts are never scored
    fold = assign_folds(cache.labels, cache.ids, 3, seed=0)
    preds = cross_validate(cache, fold, {**QUICK, "calibration": "auto"}, {**TRAIN, "seed": 1}, tmp_path / "r",
                           DEFAULT, tmp_path / "w", tmp_path / "models")
    assert list(preds.rows) == list(np.flatnonzero(cache.labels >= 0))  # each labelled post, out of fold, once
    info = json.loads((tmp_path / "r" / "info.json").read_text())
    assert info["cross_validation"]["folds"] == 3 and info["calibration"]["fitted_on"] == "out-of-fold predictions"
    assert info["train_size"] == 145  # the bundle's model learnt from every label
    payload = read_checkpoint(fusion_path(tmp_path / "models"))
    # the folds' temperature scaling, not bcts as auto would pick for 145 posts: the bundle keeps the folds' decisions
    assert payload["validation"]["posts"] == 145 and payload["spec"]["calibration"]["kind"] == "temperature"
    assert "em_prior" in payload["validation"]  # the trends' em re-weights from the mix it is calibrated for
    rows = {(r["subset"], r["mode"]): r for r in run_ablation(cache, preds=preds)}
    everything = rows[("text+image+video", "retrained")]
    assert everything["fusion_gain"]["interval"] == [0.0, 0.0]  # the fusion model against itself
    lo, hi = rows[("text", "retrained")]["macro_f1_interval"]
    assert lo <= rows[("text", "retrained")]["macro_f1"] <= hi
    assert rows[("text", "retrained")]["fusion_gain"]["difference"] > 0  # text alone tells only the pair


def test_learning_curve_points_are_nested_and_carry_intervals(tmp_path: Path):
    cache = synthetic_cache(300)
    small, n_small = _subset_view(cache, cache.splits, 0.25, 0)
    large, n_large = _subset_view(cache, cache.splits, 0.5, 0)
    assert set(small.rows("train")) < set(large.rows("train")) and (n_small, n_large) == (52, 105)
    assert (small.splits[cache.splits != "train"] == cache.splits[cache.splits != "train"]).all()
    train_fusion(cache, QUICK, {**TRAIN, "seed": 1}, fusion_path(tmp_path), DEFAULT)
    full = predict_split(cache, tmp_path, specialists=False)
    curve = learning_curve(cache, full, QUICK, {**TRAIN, "seed": 1}, DEFAULT, tmp_path / "w")
    points = curve["points"]
    assert [p["labels"] for p in points] == [52, 105, 210] and [p["share"] for p in points] == [0.25, 0.5, 1.0]
    for p in points:
        assert p["n"] == 60 and p["interval"][0] <= p["macro_f1"] <= p["interval"][1]
    nxt = curve["next"]
    assert (nxt["from_labels"], nxt["to_labels"]) == (105, 210)
    assert nxt["interval"][0] <= nxt["difference"] <= nxt["interval"][1]
    assert nxt["per_100_labels"] == pytest.approx(nxt["difference"] * 100 / 105, abs=1e-4)


def test_baselines_score_the_same_split_with_intervals():
    rng = np.random.default_rng(0)
    words = ["happy glad", "calm fine", "angry mad", "wow shock", "sad low"]
    labels = rng.integers(0, 5, 300)
    texts = [f"{words[y].split()[rng.integers(2)]} post {i}" if rng.random() < 0.8 else f"post {i}"
             for i, y in enumerate(labels)]
    emb = np.eye(5)[labels] + rng.normal(0, 0.8, (300, 5))
    splits = np.array(["train"] * 240 + ["val"] * 30 + ["test"] * 30)
    out = score_baselines(texts, emb, labels, [splits], 5)
    assert set(out) == {"majority", "tfidf_lr", "frozen_lr"} and all(v["n"] == 30 for v in out.values())
    for v in out.values():
        assert v["macro_f1_interval"][0] <= v["macro_f1"] <= v["macro_f1_interval"][1]
    assert out["tfidf_lr"]["macro_f1"] > out["majority"]["macro_f1"] + 0.3
    assert out["frozen_lr"]["C"][0] in (0.1, 0.3, 1.0, 3.0, 10.0)
    folds = assign_folds(labels, [str(i) for i in range(300)], 3, 0)  # per fold: one tests, the next validates
    pooled = score_baselines(texts, emb, labels, [fold_splits(folds, f) for f in range(3)], 5)
    assert pooled["tfidf_lr"]["n"] == 300 and len(pooled["tfidf_lr"]["C"]) == 3  # every post, out of fold


def test_frozen_features_come_from_the_untrained_backbone(demo_dir: Path, tiny_distilbert: Path):
    from emocare.data.manifest import load_posts

    posts = load_posts(demo_dir / "manifest.jsonl")[:6]
    cfg = {"backbone": str(tiny_distilbert), **TEXT}
    first = frozen_features(posts, cfg, DEFAULT, True, "cpu")
    assert first.shape == (6, 32) and np.allclose(first, frozen_features(posts, cfg, DEFAULT, True, "cpu"))


RECORD = {"kind": "cv", "macro_f1": 0.31, "interval": [0.22, 0.40], "posts": 150, "labels": 150, "classes": 5,
          "chance": 0.2}


def test_the_evaluation_line_and_the_near_chance_warning():
    line = evaluation_line(RECORD)
    assert "0.310 (95% interval 0.220 to 0.400)" in line and "cross-validation" in line and "150 labelled" in line
    assert "near chance" in evaluation_warning(RECORD)
    assert evaluation_warning({**RECORD, "interval": [0.30, 0.5]}) is None
    assert evaluation_line(None) is None and evaluation_warning(None) is None


@pytest.fixture()
def measured_bundle(trained_bundle: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(trained_bundle, models)
    store_evaluation(fusion_path(models), RECORD)
    return models


def test_predict_serve_and_bulk_state_the_bundles_evaluation(measured_bundle: Path, tmp_path: Path, capsys):
    from fastapi.testclient import TestClient

    from emocare.predict import EmoCare
    from emocare.serving.app import create_app

    assert cli(["predict", "--models", str(measured_bundle), "--device", "cpu", "--text", "so happy"]) == 0
    err = capsys.readouterr().err
    assert "macro-F1 is 0.310 (95% interval 0.220 to 0.400)" in err and "near chance" in err
    labels = TestClient(create_app(EmoCare.load(measured_bundle, "cpu"))).get("/labels").json()
    assert labels["evaluation"]["interval"] == [0.22, 0.40] and "near chance" in labels["evaluation"]["warning"]
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "text": "so happy"}) + "\n")
    out = tmp_path / "pred.jsonl"
    assert cli(["predict", "--models", str(measured_bundle), "--device", "cpu", "--manifest", str(tmp_path / "m.jsonl"),
                "-o", str(out), "--workers", "0"]) == 0
    assert "near chance" in capsys.readouterr().err
    assert json.loads(provenance_path(out).read_text())["evaluation"] == RECORD


def test_trends_page_states_what_its_intervals_cover_and_the_classifiers_evaluation(tmp_path: Path, capsys):
    from test_trends import _weekly

    preds = _weekly(tmp_path, list(range(4)), per_week=10)
    provenance_path(preds).write_text(json.dumps({"evaluation": RECORD}))
    assert cli(["trends", str(preds), "-o", str(tmp_path / "out")]) == 0
    assert "near chance" in capsys.readouterr().err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "it counts only the posts that fell in the period" in page and 'id="estimator"' in page
    assert "0.310 (95% interval 0.220 to 0.400)" in page and 'id="warning"' in page
