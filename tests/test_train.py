"""The shared trainer: learning, early stopping, best checkpoint, class weights in the loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from procs import children, kill_and_wait
from torch import nn
from torch.utils.data import Dataset

from emocare.labels import DEFAULT
from emocare.models.fusion import FusionModel
from emocare.params import TrainConfig
from emocare.pipeline.curves import Curves
from emocare.pipeline.training import fit
from emocare.runtime import resolve_device


class Blobs(Dataset):
    """Five Gaussian blobs in 8-d, one per class, as cached single-modality embeddings."""

    def __init__(self, n: int, seed: int, spread: float = 0.5):
        g = torch.Generator().manual_seed(seed)
        centres = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)) * 3
        self.y = torch.arange(n) % 5
        self.x = centres[self.y] + spread * torch.randn(n, 8, generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"emb": {"text": self.x[i]}, "present": torch.tensor([True]), "label": self.y[i]}


def _model(**kw) -> FusionModel:
    return FusionModel({"text": 8}, kind="concat", d_model=16, heads=1, hidden=16, dropout=0.0, modality_dropout=0.0,
                       labels=list(DEFAULT), **kw)


def _cfg(**kw) -> TrainConfig:
    """A trainer configuration: params.yaml's train section and a model section's trainer keys, with ``kw``."""
    return TrainConfig(**{"epochs": 4, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 0,
                          "patience": 3, "seed": 42, "device": "cpu", "grad_clip": 1.0, "num_workers": "auto", **kw})


def test_trainer_learns_and_keeps_the_best_epoch(tmp_path: Path):
    cfg = _cfg(epochs=15, batch_size=32, lr=1e-2, warmup_steps=5, patience=15)
    summary = fit(_model(), Blobs(400, 1), Blobs(100, 2), cfg, [1.0] * 5, tmp_path / "best.pt",
                  live_dir=tmp_path / "live")
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < losses[0] / 3
    assert summary["best_val_macro_f1"] > 0.95
    payload = torch.load(tmp_path / "best.pt", weights_only=False)
    assert payload["epoch"] == summary["best_epoch"]
    assert payload["val_macro_f1"] == summary["best_val_macro_f1"]
    assert max(h["val_macro_f1"] for h in summary["history"]) == summary["best_val_macro_f1"]
    curves = tmp_path / "live" / "plots" / "metrics"
    assert {p.name for p in curves.iterdir()} == {"train_loss.tsv", "val_loss.tsv", "val_macro_f1.tsv"}
    rows = (curves / "val_macro_f1.tsv").read_text().splitlines()
    assert rows[0] == "step\tval_macro_f1" and len(rows) == summary["epochs_run"] + 1
    assert [float(r.split("\t")[1]) for r in rows[1:]] == [h["val_macro_f1"] for h in summary["history"]]
    latest = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert latest == {**{k: summary["history"][-1][k] for k in ("train_loss", "val_loss", "val_macro_f1")},
                      "step": summary["epochs_run"] - 1}


def test_curves_replace_an_earlier_runs(tmp_path: Path):
    old = Curves(tmp_path)
    old.log({"a": 1, "b": 2})
    old.log({"a": 3, "b": 4})
    Curves(tmp_path).log({"a": 5})
    assert (tmp_path / "plots" / "metrics" / "a.tsv").read_text() == "step\ta\n0\t5.0\n"
    assert not (tmp_path / "plots" / "metrics" / "b.tsv").exists()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 5.0, "step": 0}


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path: Path):
    cfg = _cfg(epochs=20, batch_size=64, lr=0.0, patience=3)  # lr 0: F1 never improves
    summary = fit(_model(), Blobs(100, 1), Blobs(50, 2), cfg, [1.0] * 5, tmp_path / "best.pt")
    assert summary["best_epoch"] == 1 and summary["epochs_run"] == 1 + 3


def test_class_weights_reach_the_loss(tmp_path: Path):
    torch.manual_seed(0)
    train, val = Blobs(50, 1), Blobs(25, 2)
    cfg = _cfg(epochs=1, batch_size=100, lr=0.0, seed=3)
    weights = [5.0, 1.0, 1.0, 1.0, 0.1]
    model = _model()
    with torch.no_grad():  # make per-class losses differ so that weighting matters
        model.head[-1].bias.copy_(torch.tensor([4.0, 0.0, 0.0, 0.0, -4.0]))
    summary = fit(model, train, val, cfg, weights, tmp_path / "w.pt")
    uniform = fit(model, train, val, cfg, [1.0] * 5, tmp_path / "u.pt")
    model.eval()
    with torch.no_grad():
        logits = model({"emb": {"text": train.x}, "present": torch.ones(len(train), 1, dtype=torch.bool)})
    expected = nn.functional.cross_entropy(logits, train.y, weight=torch.tensor(weights))
    assert abs(summary["history"][0]["train_loss"] - float(expected)) < 1e-4
    assert abs(summary["history"][0]["train_loss"] - uniform["history"][0]["train_loss"]) > 0.5


def test_device_setting():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")


# --- precision and workers by device ---------------------------------------------------------------

@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16"),
                                                      ((6, 1), "fp16")])
def test_precision_follows_the_gpu(monkeypatch, capability, expected):
    from emocare.runtime import AUTOCAST_DTYPES, choose_precision

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert choose_precision(torch.device("cuda", 0)) == expected  # an RTX 2080 is 7.5: no native bf16
    assert AUTOCAST_DTYPES[expected] == {"fp16": torch.float16, "bf16": torch.bfloat16}[expected]
    assert choose_precision(torch.device("cpu")) == "fp32"


def test_workers_auto_by_device(monkeypatch):

    from emocare.runtime import resolve_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_workers("auto", torch.device("cuda", 0)) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four GPUs share the 16 cores
    assert resolve_workers("auto", torch.device("cuda", 0)) == 3
    assert resolve_workers("auto", torch.device("cpu")) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_workers("auto", torch.device("cpu")) == 0 and resolve_workers(3, torch.device("cpu")) == 3


def test_metrics_equal_scikit_learns():
    """The trainer's metrics (numpy, one confusion matrix) against scikit-learn's, absent classes included."""
    import numpy as np
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    from emocare.labels import DEFAULT
    from emocare.metrics import report_dict, scores

    rng = np.random.default_rng(0)
    for n, classes in ((200, 5), (30, 3), (7, 2), (1, 1)):
        labels = rng.integers(0, classes, n)
        logits = rng.normal(size=(n, 5)).astype(np.float32)
        logits[:, classes:] -= 3  # some classes never predicted, some never true
        pred = logits.argmax(1)
        s = scores(logits, labels)
        assert np.isclose(s["macro_f1"], f1_score(labels, pred, average="macro", zero_division=0))
        assert np.isclose(s["weighted_f1"], f1_score(labels, pred, average="weighted", zero_division=0))
        assert np.isclose(s["accuracy"], accuracy_score(labels, pred))
        ours = report_dict(labels, pred, list(DEFAULT))
        theirs = classification_report(labels, pred, labels=list(range(5)), target_names=list(DEFAULT),
                                       output_dict=True, zero_division=0)
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    assert np.isclose(ours[key][k], v), (n, key, k)
            else:
                assert np.isclose(ours[key], value)


SLOW_LOADER = """
import time, torch
from torch.utils.data import Dataset
from emocare.runtime import make_loader

class Slow(Dataset):
    def __len__(self): return 1000
    def __getitem__(self, i):
        time.sleep(1.0)
        return torch.zeros(1)

for batch in make_loader(Slow(), 8, None, torch.device("cpu"), num_workers=2):
    print("batch", flush=True)
"""


def test_loader_workers_die_with_their_parent():
    """A worker looks for its parent only between batches, and a batch here takes 8 s: without a parent-death
    signal the workers live on for seconds after the kill (minutes, with real batches of videos)."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_LOADER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "batch\n"
    workers = children(proc.pid)
    assert len(workers) == 2
    assert kill_and_wait(proc, workers, within_s=5) == [], "DataLoader workers outlived their parent"
