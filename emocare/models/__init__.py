"""Model factory: build a specialist from its ``params.yaml`` section, rebuild any model from its checkpoint.

Which module builds each kind of model is data (:data:`MODEL_MODULES`), imported only when one is
built or loaded: a stage imports one tower (transformers or open_clip), never the others, and the
specialists never import the fusion model. Each module offers ``build(modality, cfg, offline, labels)``
and ``pretrained_source(cfg)`` (specialists) and ``rebuild(kind, spec, labels)``. Every model carries
its class names as ``labels``, which its checkpoint stores.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from emocare.labels import LabelSet
from emocare.models.checkpoint import UnsafeCheckpoint, convert_checkpoint, load_model, read_checkpoint, save_checkpoint

__all__ = ["MODEL_MODULES", "UnsafeCheckpoint", "build_specialist", "convert_checkpoint", "load_checkpoint",
           "model_module", "pretrained_source", "read_checkpoint", "save_checkpoint"]

MODEL_MODULES = {"text": "emocare.models.text", "image": "emocare.models.vision", "video": "emocare.models.vision",
                 "fusion": "emocare.models.fusion"}


def model_module(kind: str) -> ModuleType:
    """The module that builds models of ``kind`` (a modality, or ``fusion``)."""
    if kind not in MODEL_MODULES:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(MODEL_MODULES)}")
    return importlib.import_module(MODEL_MODULES[kind])


def build_specialist(modality: str, cfg: dict, labels: LabelSet, offline: bool = True) -> nn.Module:
    """Build the ``modality`` specialist described by its ``params.yaml`` section, with a head for ``labels``."""
    return model_module(modality).build(modality, cfg, offline, list(labels))


def pretrained_source(modality: str, cfg: dict) -> str | None:
    """Where the ``modality`` backbone's pretrained weights come from (``None``: trained from scratch)."""
    return model_module(modality).pretrained_source(cfg)


def _rebuild(kind: str, spec: dict, labels: list[str]) -> nn.Module:
    return model_module(kind).rebuild(kind, spec, labels)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a specialist or fusion model from its checkpoint; returns (model in eval mode, payload)."""
    return load_model(path, _rebuild, device)
