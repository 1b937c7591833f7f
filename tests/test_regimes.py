"""Learning from few labels: the split stage's guard, the text specialist's regimes, the linear fusion kind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, TRAIN, validated_split
from test_train import _cfg

from emocare.cache import Cache
from emocare.data.manifest import Post
from emocare.data.split import TooFewLabels, check_label_counts
from emocare.io import read_json, write_jsonl
from emocare.labels import DEFAULT, LabelSet
from emocare.models import load_checkpoint
from emocare.models.fusion import load_fusion
from emocare.params import load_params
from emocare.pipeline import specialists
from emocare.pipeline.crossval import evaluation_plan, fold_splits, load_fold_features, post_folds
from emocare.pipeline.fusion_training import BIASES_FROM, LINEAR_BELOW, calibration_kind, fusion_kind, train_fusion
from emocare.pipeline.regimes import FINETUNE_FROM, MIN_STEPS, choose_regime, finetune_schedule, setfit_tune
from emocare.pipeline.specialists import train_specialist
from emocare.scoring import cached_fusion_logits

REPO = Path(__file__).resolve().parents[1]
SPLIT = load_params(REPO / "params.yaml")["split"]
MIN_TOTAL, MIN_PER_CLASS = SPLIT["min_labels"], SPLIT["min_per_class"]


def _posts(counts: dict[str, int]) -> list[Post]:
    return [Post(id=f"{c}{i}", text=f"{c} post {i}", label=c) for c, n in counts.items() for i in range(n)]


def test_guard_passes_enough_labels_and_names_the_short_class():
    classes = LabelSet.of(["neutral", "joy", "anger"])
    enough = {"neutral": 30, "joy": 20, "anger": MIN_PER_CLASS}
    assert check_label_counts(_posts(enough), classes, MIN_TOTAL, MIN_PER_CLASS)["anger"] == MIN_PER_CLASS
    with pytest.raises(TooFewLabels) as e:
        check_label_counts(_posts({"neutral": 30, "joy": 20, "anger": 3}), classes, MIN_TOTAL, MIN_PER_CLASS)
    message = str(e.value)
    assert "neutral: 30" in message and "joy: 20" in message and f"anger: 3  <- below {MIN_PER_CLASS}" in message
    assert f"{MIN_PER_CLASS - 3} more of anger" in message and "params.yaml `labels`" in message
    with pytest.raises(TooFewLabels, match=f"12 labelled posts .*minimum is {MIN_TOTAL} in all"):
        check_label_counts(_posts({"neutral": 6, "joy": 6}), LabelSet.of(["neutral", "joy"]), MIN_TOTAL, 1)


def test_split_stage_stops_before_anything_is_written(tmp_path: Path):
    """15 labels (the issue's run): the stage exits non-zero with the counts; split.json, the input of every
    training stage, is not written."""
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "posts.jsonl", [p.to_record() for p in _posts({"neutral": 8, "anger": 7})])
    (tmp_path / "params.yaml").write_text("labels: [neutral, anger]\nsplit: {train: 0.8, val: 0.1, test: 0.1, "
                                          f"seed: 42, min_labels: {MIN_TOTAL}, min_per_class: {MIN_PER_CLASS}}}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "split.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "15 labelled posts" in proc.stderr and "neutral: 8" in proc.stderr and "anger: 7" in proc.stderr
    assert not (tmp_path / "data" / "split.json").exists()


@pytest.mark.parametrize(("labels", "regime"), [(0, "setfit"), (FINETUNE_FROM - 1, "setfit"),
                                                 (FINETUNE_FROM, "finetune"), (10_000, "finetune")])
def test_auto_regime_by_label_count(labels: int, regime: str, monkeypatch):
    pytest.importorskip("setfit")
    chosen, why = choose_regime("auto", labels)
    assert chosen == regime and str(labels) in why and str(FINETUNE_FROM) in why
    if regime == "setfit":  # without the package: frozen, and said so
        monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "setfit" else "found")
        chosen, why = choose_regime("auto", labels)
        assert chosen == "frozen" and "pip install setfit" in why
    assert choose_regime("setfit", labels)[0] == "setfit"
    with pytest.raises(ValueError, match="train.regime"):
        choose_regime("fine-tune", labels)


def test_finetune_schedule_scales_with_the_data():
    cfg = _cfg(epochs=4, batch_size=16, warmup_steps=25)
    demo = finetune_schedule(cfg, 1000)  # the demo: 63 steps an epoch, as before
    assert (demo.epochs, demo.warmup_steps) == (4, 25)
    small = finetune_schedule(cfg, 160)  # 10 steps an epoch: more epochs, at least MIN_STEPS steps
    assert small.epochs == MIN_STEPS // 10 and small.warmup_steps == MIN_STEPS // 10


@pytest.mark.parametrize("regime", ["frozen", "finetune", "setfit"])
def test_each_regime_trains_through_train_specialist(regime: str, demo_dir: Path, tiny_distilbert: Path,
                                                     tmp_path: Path):
    """The regime decides what moves: frozen keeps the backbone's weights (its embeddings label-free), the others
    change them; info.json says which regime ran and why."""
    posts, split = validated_split(demo_dir, tmp_path)
    params = {"offline": True, "train": {**TRAIN, "regime": regime},
              "text": {"backbone": str(tiny_distilbert), "pooling": "mean", "dropout": 0.1, "max_length": 24,
                       **TINY_TRAIN, "epochs": 1}}
    if regime == "setfit":
        pytest.importorskip("setfit")
    ckpt = tmp_path / "text.pt"
    metrics = train_specialist("text", params, tmp_path / "posts.jsonl", tmp_path / "split.json", ckpt,
                               tmp_path / "reports")
    info = read_json(tmp_path / "reports" / "info.json")
    assert info["regime"] == regime == metrics["regime"] and info["regime_requested"] == regime
    assert info["train_labels"] == sum(s == "train" for s in split.values())
    assert info["frozen"] is (regime != "finetune")
    from transformers import AutoModel

    before = AutoModel.from_pretrained(tiny_distilbert).state_dict()
    model, _ = load_checkpoint(ckpt)
    after = model.backbone.state_dict()
    same = all(torch.equal(before[k], after[k]) for k in before if k in after)
    assert same is (regime == "frozen")
    assert model.head.weight.abs().sum() > 0


def test_setfit_is_cross_fitted_when_the_run_is_cross_validated(demo_dir: Path, tiny_distilbert: Path,
                                                                  tmp_path: Path, monkeypatch):
    """Fewer labels than split.cv_below and the vision towers frozen: the setfit specialist tunes on every label,
    and each fold's features come from an encoder tuned on that fold's training posts alone, so the fusion
    stage may cross-validate over them."""
    pytest.importorskip("setfit")
    posts, _ = validated_split(demo_dir, tmp_path)
    tuned_on = []

    def spy(model, texts, labels, cfg):
        tuned_on.append(list(texts))
        return setfit_tune(model, texts, labels, cfg)

    monkeypatch.setattr(specialists, "setfit_tune", spy)
    params = {"offline": True, "labels": list(DEFAULT.names), "train": {**TRAIN, "regime": "setfit"},
              "split": {**SPLIT, "cv_below": 10_000, "folds": 3}, "image": {"freeze": True}, "video": {"freeze": True},
              "text": {"backbone": str(tiny_distilbert), "pooling": "mean", "dropout": 0.1, "max_length": 24,
                       **TINY_TRAIN, "epochs": 1}}
    folds_path = tmp_path / "folds.npz"
    train_specialist("text", params, tmp_path / "posts.jsonl", tmp_path / "split.json", tmp_path / "text.pt",
                     tmp_path / "reports", folds_path)
    info = read_json(tmp_path / "reports" / "info.json")
    labelled = [p for p in posts if p.label is not None and "text" in p.modalities]
    assert info["regime"] == "setfit" and info["setfit_labels"] == len(labelled)
    assert "optimistic" in info["validation_note"]
    assert info["cross_fitted"] == {"folds": 3, "posts": len(labelled), "path": str(folds_path)}
    assert sorted(tuned_on[0]) == sorted(p.text for p in labelled)  # the final encoder: every label
    labels = np.array([DEFAULT.names.index(p.label) if p.label is not None else -1 for p in posts])
    fold = post_folds(posts, labels, params["split"])
    for f in range(3):  # fold f's encoder: its training posts only (not its test or validation fold)
        train = fold_splits(fold, f) == "train"
        assert sorted(tuned_on[1 + f]) == sorted(p.text for p, t in zip(posts, train, strict=True) if t)
    with np.load(folds_path) as saved:
        ids, features = list(saved["ids"]), saved["features"]
    assert ids == [p.id for p in labelled] and features.shape[:2] == (3, len(labelled))
    assert not np.allclose(features[0], features[1])  # each fold's own encoder
    infos = {"text": info, "image": {"frozen": True}, "video": {"no_data": True}}
    assert evaluation_plan(len(labelled), params["split"], infos)["kind"] == "cv"
    assert evaluation_plan(len(labelled), params["split"], {**infos, "text": {"regime": "setfit"}})["kind"] == "test"
    rows = ["unlabelled", *reversed(ids)]  # the fusion stage's cache order; a row without fold features
    cached = np.arange(len(rows) * features.shape[2], dtype=np.float32).reshape(len(rows), -1)
    aligned = load_fold_features(folds_path, rows, cached)
    assert np.array_equal(aligned[:, 0], np.repeat(cached[None, 0], 3, axis=0))
    assert np.array_equal(aligned[:, 1:], features[:, ::-1])


def test_auto_regime_recorded_for_the_tiny_demo(demo_dir: Path, tiny_distilbert: Path, tmp_path: Path):
    pytest.importorskip("setfit")
    validated_split(demo_dir, tmp_path)
    params = {"offline": True, "train": {**TRAIN},  # no regime key: auto
              "text": {"backbone": str(tiny_distilbert), "pooling": "mean", "dropout": 0.1, "max_length": 24,
                       **TINY_TRAIN, "epochs": 1}}
    train_specialist("text", params, tmp_path / "posts.jsonl", tmp_path / "split.json", tmp_path / "text.pt",
                     tmp_path / "reports")
    info = read_json(tmp_path / "reports" / "info.json")
    assert info["regime"] == "setfit" and info["regime_requested"] == "auto" and "cross_fitted" not in info
    assert f"{info['train_labels']} training labels, below {FINETUNE_FROM}" in info["regime_reason"]
    assert info["setfit_labels"] == info["train_labels"]  # no split section: not cross-validated, train posts only


def _blob_cache(n: int, seed: int = 0) -> Cache:
    """Five separable classes as cached text embeddings; rows split 70/15/15."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 5
    centres = np.random.default_rng(99).normal(size=(5, 16)) * 2
    emb = (centres[y] + rng.normal(size=(n, 16))).astype(np.float32)
    splits = np.array(["train"] * int(n * 0.7) + ["val"] * int(n * 0.15) + ["test"] * (n - int(n * 0.7)
                                                                                         - int(n * 0.15)))
    splits = splits[rng.permutation(n)]
    absent = {m: torch.zeros((n, 1)) for m in ("image", "video")}
    return Cache(ids=[str(i) for i in range(n)], labels=y, splits=splits, emb={"text": torch.from_numpy(emb), **absent},
                 present={"text": np.ones(n, bool), "image": np.zeros(n, bool), "video": np.zeros(n, bool)},
                 attrs={m: {"backbone": "blobs"} for m in ("text", "image", "video")}, label_names=list(DEFAULT))


def test_linear_fusion_learns_and_auto_picks_it_for_few_labels(tmp_path: Path):
    """The linear kind below LINEAR_BELOW training posts or with one modality; calibration auto: temperature
    scaling below BIASES_FROM, bcts from there; a calibration named in params.yaml as asked."""
    assert fusion_kind("auto", LINEAR_BELOW - 1, 3) == "linear" and fusion_kind("auto", LINEAR_BELOW, 3) == "attention"
    assert fusion_kind("auto", 100_000, 1) == "linear" and fusion_kind("auto", LINEAR_BELOW, 2) == "attention"
    assert fusion_kind("gated", 10, 1) == "gated"
    assert calibration_kind("auto", BIASES_FROM - 1) == "temperature"
    assert calibration_kind("auto", BIASES_FROM) == "bcts"
    assert calibration_kind("matrix", 10) == "matrix" and calibration_kind("none", 10) == "none"
    with pytest.raises(ValueError, match="fusion.calibration must be auto or one of"):
        calibration_kind("platt", 10)
    cache = _blob_cache(300)
    cfg = {"kind": "auto", "modality_dropout": 0.3, "dropout": 0.1, "d_model": 16, "heads": 2, "hidden": 16,
           **TINY_TRAIN, "calibration": "auto"}
    metrics = train_fusion(cache, cfg, TRAIN, tmp_path / "fusion.pt", DEFAULT, report_dir=tmp_path / "reports")
    assert metrics["kind"] == "linear" and metrics["kind_requested"] == "auto"
    assert metrics["calibration"]["kind"] == "temperature" and metrics["calibration_requested"] == "auto"
    model, payload = load_fusion(tmp_path / "fusion.pt")
    test = cache.rows("test")
    pred = cached_fusion_logits(model, cache, test).argmax(1)
    assert (pred == cache.labels[test]).mean() > 0.9
    assert payload["spec"]["calibration"]["kind"] == "temperature"
    assert (tmp_path / "reports" / "live" / "metrics.json").exists()  # the stage's DVC output: one step
