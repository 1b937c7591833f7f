"""Modality dropout and the three fusion kinds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TRAIN

from emocare.bundle import fusion_path, subset_path
from emocare.cache import Cache
from emocare.labels import DEFAULT, SUBSETS
from emocare.metrics import scores
from emocare.models import load_checkpoint
from emocare.models.fusion import KINDS, FusionModel, drop_modalities
from emocare.pipeline.evaluate import run_ablation
from emocare.pipeline.fusion_training import train_fusion, train_fusion_models
from emocare.scoring import cached_fusion_logits


def test_dropout_never_drops_everything_and_keeps_the_rate():
    torch.manual_seed(0)
    present = torch.ones(20000, 3, dtype=torch.bool)
    present[:5000, 2] = False  # a quarter with two modalities
    present[5000:6000, 1:] = False  # some with one
    kept = drop_modalities(present, 0.3)
    assert kept.any(1).all()
    assert not (kept & ~present).any()
    assert kept[5000:6000, 0].all()  # a single modality is never dropped
    three = 1 - kept[6000:].float().sum(1).mean() / 3
    two = 1 - kept[:5000].float().sum(1).mean() / 2
    assert abs(float(three) - (0.3 - 0.3**3 / 3)) < 0.01
    assert abs(float(two) - (0.3 - 0.3**2 / 2)) < 0.015


def test_dropout_is_off_at_evaluation():
    torch.manual_seed(0)
    model = FusionModel({"text": 4, "image": 4}, kind="attention", d_model=16, heads=4, hidden=16, dropout=0.1,
                        modality_dropout=0.9, labels=list(DEFAULT))
    batch = {"emb": {"text": torch.randn(64, 4), "image": torch.randn(64, 4)},
             "present": torch.ones(64, 2, dtype=torch.bool)}
    model.eval()
    assert torch.equal(model(batch), model(batch))
    model.train()
    assert not torch.allclose(model.fuse(batch), model.fuse(batch))


def synthetic_cache(n: int = 900, seed: int = 0) -> Cache:
    """Each modality carries part of the label: text tells the class pair, image/video the member."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    group, member = labels // 2, labels % 2
    def noisy(values, d):
        centres = rng.normal(size=(2, d)) * 3
        return torch.from_numpy((centres[values] + rng.normal(size=(n, d))).astype(np.float32))
    emb = {"text": noisy(group, 6), "image": noisy(member, 5), "video": noisy(member, 5)}
    has_image = rng.random(n) < 0.7
    present = {"text": np.ones(n, bool), "image": has_image, "video": ~has_image}
    for m in ("image", "video"):
        emb[m][~torch.from_numpy(present[m])] = 0
    splits = np.array(["train"] * (n * 7 // 10) + ["val"] * (n // 10) + ["test"] * (n - n * 8 // 10))
    return Cache([f"p{i}" for i in range(n)], labels, splits, emb, present,
                 {m: {"backbone": "synthetic"} for m in emb}, list(DEFAULT))


FUSION = {"d_model": 32, "heads": 4, "hidden": 32, "dropout": 0.1, "modality_dropout": 0.3, "epochs": 25,
          "batch_size": 64, "lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 10, "patience": 25}


@pytest.mark.parametrize("kind", KINDS)
def test_fusion_beats_every_single_modality(kind: str, tmp_path: Path):
    cache = synthetic_cache()
    cfg = {**FUSION, "kind": kind}
    train_fusion(cache, cfg, {**TRAIN, "seed": 1}, tmp_path / "all.pt", DEFAULT, report_dir=tmp_path / "r")
    model, payload = load_checkpoint(tmp_path / "all.pt")
    assert payload["modalities"] == ["text", "image", "video"]
    rows = cache.rows_with("test", model.modalities)
    fused = scores(cached_fusion_logits(model, cache, rows), cache.labels[rows])["macro_f1"]
    for m in ("text", "image", "video"):
        train_fusion(cache, cfg, {**TRAIN, "seed": 1}, tmp_path / f"{m}.pt", DEFAULT, modalities=[m])
        single, _ = load_checkpoint(tmp_path / f"{m}.pt")
        single_f1 = scores(cached_fusion_logits(single, cache, rows), cache.labels[rows])["macro_f1"]
        assert fused > single_f1 + 0.1, (kind, m, fused, single_f1)
    assert fused > 0.8
    assert (tmp_path / "r" / "metrics.json").exists() and (tmp_path / "r" / "classification_report.json").exists()


def test_fusion_on_a_modality_missing_from_the_data_uses_what_is_there(tmp_path: Path):
    cache = synthetic_cache(300)
    cache.present["video"][:] = False
    summary = train_fusion(cache, {**FUSION, "kind": "attention", "epochs": 2}, TRAIN, tmp_path / "f.pt", DEFAULT)
    assert summary["modalities"] == ["text", "image"]


def test_training_is_reproducible_for_a_seed(tmp_path: Path):
    cache = synthetic_cache(300)
    cfg = {**FUSION, "kind": "attention", "epochs": 3}
    for name in ("a", "b"):
        torch.manual_seed(hash(name) % 1000)  # a different global RNG state before each run
        train_fusion(cache, cfg, {**TRAIN, "seed": 5}, tmp_path / f"{name}.pt", DEFAULT)
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=False)["state_dict"] for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fusion_models_side_by_side_equal_each_one_trained_alone(tmp_path: Path, monkeypatch):
    """The forked workers train every subset's model into its own file, as one process would."""
    cache = synthetic_cache(300)
    cache.present["video"][cache.splits != "test"] = False  # video alone has nothing to train on
    cfg = {**FUSION, "kind": "attention", "epochs": 2}
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})  # two workers, whatever this machine has
    results = train_fusion_models(cache, cfg, {**TRAIN, "seed": 3}, tmp_path / "r", DEFAULT, tmp_path)
    assert set(results) == {"fusion"} | {"+".join(s) for s in SUBSETS[:-1]}
    assert "none of ['video'] has embeddings for training posts" in results["video"]["skipped"]
    assert not subset_path(["video"], tmp_path).exists()
    assert (tmp_path / "r" / "metrics.json").exists()
    torch.set_num_threads(1)  # as in a worker
    try:
        for subset in (["text"], ["image", "video"]):
            train_fusion(cache, cfg, {**TRAIN, "seed": 3}, tmp_path / "alone.pt", DEFAULT, modalities=subset)
            alone = torch.load(tmp_path / "alone.pt", weights_only=True)["state_dict"]
            forked = torch.load(subset_path(subset, tmp_path), weights_only=True)["state_dict"]
            assert all(torch.equal(alone[k], forked[k]) for k in alone), subset
    finally:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    rows = {(r["subset"], r["mode"]): r for r in run_ablation(cache, tmp_path)}
    assert len(rows) == 14
    assert rows[("video", "retrained")]["macro_f1"] is None and "not trained" in rows[("video", "retrained")]["note"]
    assert rows[("video", "masked")]["n"] == 0  # the fusion model never saw video either
    everything = load_checkpoint(fusion_path(tmp_path))[0]
    test = cache.rows_with("test", everything.modalities)
    f1 = scores(cached_fusion_logits(everything, cache, test), cache.labels[test])["macro_f1"]
    assert rows[("text+image+video", "retrained")]["macro_f1"] == pytest.approx(f1)
