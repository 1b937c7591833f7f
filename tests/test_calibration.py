"""Calibration: fitted on validation, stored in the fusion checkpoint, applied by the one scoring path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TRAIN
from test_fusion import FUSION, synthetic_cache

from emocare.calibration import apply, describe, ece, ece_floor, fit_calibration, nll, reliability, softmax
from emocare.labels import DEFAULT
from emocare.models.checkpoint import read_checkpoint
from emocare.models.fusion import load_fusion
from emocare.pipeline.fusion_training import train_fusion
from emocare.scoring import cached_fusion_logits


def drawn(n: int, k: int = 5, seed: int = 0, prior_shift: np.ndarray | None = None):
    """Logits whose softmax is the truth, and labels drawn from it (optionally with a shifted prior)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 1.5
    if prior_shift is not None:
        logits = logits + prior_shift
    p = softmax(logits)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


def test_ece_of_known_cases():
    logits, labels = drawn(40000)
    assert ece(softmax(logits), labels) < 0.01  # labels drawn from the probabilities: calibrated
    always_wrong = np.tile([[0.9, 0.1]], (100, 1))
    assert ece(always_wrong, np.ones(100, int)) == pytest.approx(0.9)
    bins = reliability(always_wrong, np.ones(100, int))
    assert [(b["bin"], b["posts"], b["accuracy"]) for b in bins] == [(13, 100, 0.0)]
    assert ece(np.zeros((0, 3)), np.zeros(0, int)) is None


def test_ece_floor_is_what_calibrated_probabilities_read_at_that_size():
    """The floor matches the ECE of labels drawn from the probabilities themselves, shrinks with the set's size,
    and is 0 where every confidence is 1 (no draw can miss)."""
    for n in (300, 3000):
        logits, _ = drawn(n, seed=3)
        p = softmax(logits)
        rng = np.random.default_rng(0)
        observed = np.mean([ece(p, (p.cumsum(1) > rng.random((n, 1))).argmax(1)) for _ in range(100)])
        assert ece_floor(p) == pytest.approx(observed, rel=0.1)
    assert ece_floor(softmax(drawn(300, seed=3)[0])) > 2 * ece_floor(softmax(drawn(3000, seed=3)[0]))
    assert ece_floor(np.eye(3)[[0, 1, 2, 0]]) == 0.0 and ece_floor(np.zeros((0, 3))) is None


def test_temperature_undoes_over_confidence_and_keeps_labels():
    logits, labels = drawn(20000)
    fitted = fit_calibration(3 * logits, labels, "temperature")
    assert 1 / fitted["scale"][0] == pytest.approx(3.0, rel=0.05) and fitted["bias"] == [0.0] * 5
    after = softmax(3 * logits * np.asarray(fitted["scale"]))
    assert ece(softmax(3 * logits), labels) > 0.1 > 0.02 > ece(after, labels)
    assert nll(after, labels) < nll(softmax(3 * logits), labels)
    assert (after.argmax(1) == logits.argmax(1)).all()


def test_a_bias_also_undoes_a_prior_shift():
    """Class weights act like a shifted prior: the bias of bcts and vector scaling removes it, temperature cannot."""
    shift = np.array([0.0, 0.0, 1.2, 1.0, 1.5])
    logits, labels = drawn(20000, seed=1)
    for kind, worst in (("bcts", 0.02), ("vector", 0.02), ("temperature", None)):
        fitted = fit_calibration(logits + shift, labels, kind)
        assert (len(set(fitted["scale"])) == 1) is (kind != "vector")
        after = softmax((logits + shift) * np.asarray(fitted["scale"]) + np.asarray(fitted["bias"]))
        mean_error = np.abs(after.mean(0) - np.bincount(labels, minlength=5) / len(labels)).mean()
        if worst is not None:
            assert mean_error < worst and ece(after, labels) < 0.02
        else:
            assert mean_error > 0.05


def test_matrix_scaling_undoes_a_mixing_of_the_classes_logits():
    """Logits whose classes leak into each other (a linear mix no per-class scale can undo): matrix scaling
    recovers the calibrated probabilities, vector scaling cannot; the checkpoint's matrix is applied row-wise."""
    logits, labels = drawn(20000, seed=2)
    mixing = np.eye(5) + 0.6 * np.roll(np.eye(5), 1, axis=1)
    mixed = logits @ np.linalg.inv(mixing)  # the truth is mixed @ mixing
    matrix, vector = fit_calibration(mixed, labels, "matrix"), fit_calibration(mixed, labels, "vector")
    assert np.asarray(matrix["scale"]).shape == (5, 5) and len(matrix["bias"]) == 5
    after = softmax(apply(mixed, matrix))
    np.testing.assert_allclose(after, softmax(mixed @ np.asarray(matrix["scale"]) + matrix["bias"]), atol=1e-5)
    assert nll(after, labels) < nll(softmax(apply(mixed, vector)), labels) - 0.01
    assert ece(after, labels) < 0.02 and np.abs(after - softmax(logits)).mean() < 0.02
    assert "matrix scaling" in describe(matrix) and "T = " in describe(fit_calibration(mixed, labels, "bcts"))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        fit_calibration(np.zeros((2, 2)), np.zeros(2, int), "platt")


def test_train_fusion_stores_the_calibration_and_scoring_applies_it(tmp_path: Path):
    torch.manual_seed(0)
    cache = synthetic_cache(1200)  # 840 training posts
    path = tmp_path / "fusion.pt"
    metrics = train_fusion(cache, {**FUSION, "kind": "attention", "epochs": 6, "calibration": "bcts"}, TRAIN, path,
                           DEFAULT)
    fitted = metrics["calibration"]
    assert fitted["kind"] == "bcts"  # named in params.yaml: as asked, at any size
    assert fitted["val_nll_after"] <= fitted["val_nll_before"] + 1e-9
    payload = read_checkpoint(path)
    assert payload["spec"]["calibration"]["scale"] == fitted["scale"]
    assert np.asarray(payload["validation"]["confusion"]).sum(0) == pytest.approx(np.ones(5))
    model, _ = load_fusion(path)
    test = cache.rows("test")
    raw = cached_fusion_logits(model, cache, test, calibrated=False)
    assert cached_fusion_logits(model, cache, test) == pytest.approx(apply(raw, fitted), rel=1e-5, abs=1e-5)
    none = train_fusion(cache, {**FUSION, "kind": "attention", "epochs": 2, "calibration": "none"}, TRAIN,
                        tmp_path / "raw.pt", DEFAULT)["calibration"]
    assert none["scale"] == [1.0] * 5 and none["val_ece_after"] == none["val_ece_before"]
    path = tmp_path / "matrix.pt"
    matrix = train_fusion(cache, {**FUSION, "kind": "attention", "epochs": 2, "calibration": "matrix"}, TRAIN,
                          path, DEFAULT)["calibration"]
    model, _ = load_fusion(path)
    raw = cached_fusion_logits(model, cache, test, calibrated=False)
    assert np.asarray(matrix["scale"]).shape == (5, 5)
    assert cached_fusion_logits(model, cache, test) == pytest.approx(apply(raw, matrix), rel=1e-5, abs=1e-5)
