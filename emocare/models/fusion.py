"""Fusion models over cached specialist embeddings, with modality dropout.

A batch is ``{"emb": {modality: [B, D_m]}, "present": [B, M] bool, "label": [B]}`` with the
modalities in ``model.modalities`` order. Absent modalities are masked out everywhere, so a
text-only post is simply a post with one token.

Kinds:
* ``attention``: each modality projected to ``d_model`` plus a learned modality-type
  embedding; one transformer encoder layer of self-attention across the present modality
  tokens (key-padding mask); masked mean pooling; MLP head.
* ``gated``: per-modality sigmoid gates computed from all present (projected) features;
  gate-weighted average; MLP head.
* ``concat``: masked concatenation of the projected features; MLP head.
* ``linear``: each present modality's embedding L2-normalised (an absent one zero), concatenated, and a linear
  map to the classes: multinomial logistic regression, fitted by scikit-learn
  (:func:`emocare.pipeline.fusion_training.fit_linear`), not by gradient steps. With a few hundred labels it
  learns from frozen embeddings where the attention kind barely beats the majority class (README: "Learning from
  few labels").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from emocare.calibration import apply
from emocare.models.checkpoint import load_model

KINDS = ("attention", "gated", "concat", "linear")


def drop_modalities(present: torch.Tensor, p: float) -> torch.Tensor:
    """Drop each present modality with probability ``p``, never all of a post's modalities.

    Where every present modality of a post is drawn for dropping, one of them, chosen
    uniformly, is kept: the expected drop rate of a post with k modalities is p - p**k / k.
    """
    if p <= 0:
        return present
    kept = present & (torch.rand(present.shape, device=present.device) >= p)
    lost_all = present.any(1) & ~kept.any(1)
    scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
    rescue = nn.functional.one_hot(scores.argmax(1), present.shape[1]).bool() & lost_all[:, None]
    return kept | rescue


class FusionModel(nn.Module):
    """Cross-modal fusion of specialist embeddings; see the module docstring for the kinds."""

    checkpoint_kind = "fusion"

    def __init__(self, dims: dict[str, int], *, kind: str, d_model: int, heads: int, hidden: int, dropout: float,
                 modality_dropout: float, labels: list[str], calibration: dict | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"fusion.kind must be one of {KINDS}, got {kind!r}")
        if not dims:
            raise ValueError("fusion needs at least one modality with embeddings")
        self.modalities = list(dims)
        self.config = {"dims": dict(dims), "kind": kind, "d_model": d_model, "heads": heads, "hidden": hidden,
                       "dropout": dropout, "modality_dropout": modality_dropout}
        self.kind, self.modality_dropout, self.labels = kind, modality_dropout, list(labels)
        self.calibration = calibration  # emocare.calibration: fitted after training, applied by emocare.scoring
        n = len(self.modalities)
        if kind == "linear":
            self.head = nn.Linear(sum(dims.values()), len(labels))
            return
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d_model)) for m, d in dims.items()})
        if kind == "attention":
            self.type_emb = nn.Parameter(torch.randn(n, d_model) * 0.02)
            self.encoder = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True,
                                                      norm_first=True)
        elif kind == "gated":
            self.gate = nn.Linear(n * d_model, n)
        width = n * d_model if kind == "concat" else d_model
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, len(labels)))

    def fuse(self, batch: dict) -> torch.Tensor:
        """Fused representation [B, width]; applies modality dropout in training mode only."""
        present = batch["present"]
        if self.training:
            present = drop_modalities(present, self.modality_dropout)
        if self.kind == "linear":
            unit = [nn.functional.normalize(batch["emb"][m].float(), dim=1) * present[:, i, None]
                    for i, m in enumerate(self.modalities)]
            return torch.cat(unit, 1)
        tokens = torch.stack([self.proj[m](batch["emb"][m]) for m in self.modalities], 1)
        tokens = tokens * present.unsqueeze(-1).to(tokens.dtype)
        if self.kind == "concat":
            return tokens.flatten(1)
        if self.kind == "gated":
            gates = torch.sigmoid(self.gate(tokens.flatten(1))) * present.to(tokens.dtype)
            return (tokens * gates.unsqueeze(-1)).sum(1) / gates.sum(1, keepdim=True).clamp(min=1e-6)
        out = self.encoder(tokens + self.type_emb, src_key_padding_mask=~present)
        weights = present.unsqueeze(-1).to(out.dtype)
        return (out.nan_to_num() * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.fuse(batch))

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits: the fitted :mod:`emocare.calibration` map (none before it is fitted)."""
        return apply(logits, self.calibration)

    @classmethod
    def from_params(cls, dims: dict[str, int], cfg: dict, labels: list[str]) -> FusionModel:
        """The model the ``fusion`` section of ``params.yaml`` describes, over modalities of ``dims``."""
        return cls(dims, kind=cfg["kind"], d_model=cfg["d_model"], heads=cfg["heads"], hidden=cfg["hidden"],
                   dropout=cfg["dropout"], modality_dropout=cfg["modality_dropout"], labels=labels)

    def spec(self) -> dict:
        return {**self.config, "calibration": self.calibration}

    @classmethod
    def from_spec(cls, spec: dict, labels: list[str]) -> FusionModel:
        # checkpoints before label sets also stored n_classes, which the labels now give
        return cls(spec["dims"], **{k: v for k, v in spec.items() if k not in ("dims", "n_classes")}, labels=labels)


def rebuild(kind: str, spec: dict, labels: list[str]) -> FusionModel:
    """The fusion model a checkpoint's ``spec`` describes, for the classes ``labels`` (its weights load next)."""
    if kind != "fusion":
        raise ValueError(f"expected a fusion model's checkpoint, got a {kind} specialist's")
    return FusionModel.from_spec(spec, labels)


def load_fusion(path: str | Path, device: str | torch.device = "cpu") -> tuple[FusionModel, dict]:
    """A fusion checkpoint's model (eval mode) and payload."""
    return load_model(path, rebuild, device)
