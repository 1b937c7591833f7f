"""Model factory and checkpoints: build a specialist from params, save and rebuild any model.

Checkpoints hold tensors and plain values only (dicts, lists, strings, numbers, bytes) and are
loaded with ``torch.load(weights_only=True)``: a file that would need arbitrary code to unpickle
is refused, so a shared `models/` folder (a DVC remote) cannot run code on the machines that load
it. `emocare models convert` rewrites an older file the user trusts into that form.

The specialist modules (transformers, open_clip) are imported where a specialist is built, so
the fusion-only stages start without them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emocare.io import atomic_path
from emocare.labels import LABELS
from emocare.models.errors import BackboneNotFound
from emocare.models.fusion import FusionModel

__all__ = ["BackboneNotFound", "FusionModel", "UnsafeCheckpoint", "build_specialist", "convert_checkpoint",
           "load_checkpoint", "read_checkpoint", "save_checkpoint"]


class UnsafeCheckpoint(ValueError):
    """A checkpoint that cannot be loaded without running arbitrary code."""


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


def plain(obj, where: str = "checkpoint"):
    """``obj`` with every value a tensor or a plain type (numpy values and paths converted); else ValueError."""
    if isinstance(obj, np.generic):  # before the builtins: np.float64 is a float subclass, yet pickles as numpy
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if obj is None or type(obj) in (str, bytes, bool, int, float) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, Path):
        return str(obj)
    raise ValueError(f"{where}: a {type(obj).__name__} cannot be stored in a safe checkpoint")


def save_checkpoint(path: str | Path, model: nn.Module, **extra) -> None:
    """Atomically save weights plus everything needed to rebuild ``model`` (tensors and plain values only)."""
    kind = "fusion" if isinstance(model, FusionModel) else model.modality
    payload = {"kind": kind, "labels": LABELS, "spec": model.spec(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    _save(plain(payload), path)


def _save(payload: dict, path: str | Path) -> None:
    """``torch.save`` through a file object, atomically: saved to a path, the archive's inner folder would be
    named after the random temporary file, so the same weights would give different bytes (and DVC hashes)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's payload, loaded with ``weights_only=True``; :class:`UnsafeCheckpoint` if it needs more."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        why = next((x.strip() for x in lines if "Unsupported global" in x), lines[-1] if lines else "")
        raise UnsafeCheckpoint(
            f"{path}: refused to load: the file needs arbitrary code to unpickle, which a checkpoint must never "
            f"need ({why}). If it is an older EmoCare checkpoint from a source you trust, rewrite it in the "
            f"safe form with `emocare models convert {path}`.") from None


def convert_checkpoint(path: str | Path, out: str | Path | None = None) -> dict:
    """Rewrite a checkpoint the user trusts (full unpickling) with tensors and plain values only."""
    payload = torch.load(path, map_location="cpu", weights_only=False)  # the caller vouches for this file
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"{path}: not an EmoCare checkpoint (no state_dict)")
    out = Path(out or path)
    _save(plain(payload), out)
    read_checkpoint(out)
    return {"converted": str(path), "out": str(out), "kind": payload.get("kind")}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a specialist or fusion model from ``best_model.pt``; returns (model in eval mode, payload)."""
    payload = read_checkpoint(path)
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
