"""The shared trainer: learning, early stopping, best checkpoint, class weights in the loss."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from emocare.models.fusion import FusionModel
from emocare.train import TrainConfig, fit, resolve_device


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
    return FusionModel({"text": 8}, kind="concat", d_model=16, hidden=16, dropout=0.0, modality_dropout=0.0, **kw)


def test_trainer_learns_and_keeps_the_best_epoch(tmp_path: Path):
    cfg = TrainConfig(epochs=15, batch_size=32, lr=1e-2, warmup_steps=5, patience=15, device="cpu")
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
    assert len((curves / "val_loss.tsv").read_text().splitlines()) == summary["epochs_run"] + 1


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path: Path):
    cfg = TrainConfig(epochs=20, batch_size=64, lr=0.0, patience=3, device="cpu")  # lr 0: F1 never improves
    summary = fit(_model(), Blobs(100, 1), Blobs(50, 2), cfg, [1.0] * 5, tmp_path / "best.pt")
    assert summary["best_epoch"] == 1 and summary["epochs_run"] == 1 + 3


def test_class_weights_reach_the_loss(tmp_path: Path):
    torch.manual_seed(0)
    train, val = Blobs(50, 1), Blobs(25, 2)
    cfg = TrainConfig(epochs=1, batch_size=100, lr=0.0, device="cpu", seed=3)
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
