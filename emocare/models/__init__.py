"""Model factory and checkpoints: build a specialist from params, save and rebuild any model.

The specialist modules (transformers, open_clip) are imported where a specialist is built, so
the fusion-only stages start without them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from emocare.io import atomic_path
from emocare.labels import LABELS
from emocare.models.errors import BackboneNotFound
from emocare.models.fusion import FusionModel

__all__ = ["BackboneNotFound", "FusionModel", "build_specialist", "load_checkpoint", "save_checkpoint"]


def build_specialist(modality: str, cfg: dict, offline: bool = True) -> nn.Module:
    """Build the ``modality`` specialist described by its ``params.yaml`` section."""
    if modality == "text":
        from emocare.models.text import TextSpecialist, load_text_backbone

        backbone, tokenizer = load_text_backbone(cfg["backbone"], offline)
        return TextSpecialist(backbone, tokenizer, cfg.get("pooling", "mean"), cfg.get("dropout", 0.3),
                              cfg.get("max_length", 128), len(LABELS))
    from emocare.models.vision import VisionSpecialist, load_vision_tower

    tower, preprocess, dim = load_vision_tower(cfg["backbone"], cfg.get("pretrained"), offline)
    return VisionSpecialist(tower, modality, cfg["backbone"], preprocess, dim, cfg.get("dropout", 0.3),
                            cfg.get("frames", 8), len(LABELS))


def save_checkpoint(path: str | Path, model: nn.Module, **extra) -> None:
    """Atomically save weights plus everything needed to rebuild ``model``."""
    kind = "fusion" if isinstance(model, FusionModel) else model.modality
    payload = {"kind": kind, "labels": LABELS, "spec": model.spec(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a specialist or fusion model from ``best_model.pt``; returns (model in eval mode, payload)."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    kind, n = payload["kind"], len(payload["labels"])
    if kind == "fusion":
        model = FusionModel.from_spec(payload["spec"])
    elif kind == "text":
        from emocare.models.text import TextSpecialist

        model = TextSpecialist.from_spec(payload["spec"], n)
    else:
        from emocare.models.vision import VisionSpecialist

        model = VisionSpecialist.from_spec(kind, payload["spec"], n)
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload
