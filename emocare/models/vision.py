"""Image and video specialists on an open_clip visual tower.

The project registers its own small configurations (``configs/*.json`` beside this file) with
open_clip, so ``EmoCare-ViT-Tiny-64`` is built like any open_clip architecture.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import open_clip
import torch
from torch import nn
from torch.utils.data import Dataset

from emocare.data.datasets import decode_media, media_dataset
from emocare.models.errors import BackboneNotFound
from emocare.transforms import eval_transform

open_clip.add_model_config(Path(__file__).parent / "configs")


def load_vision_tower(arch: str, pretrained: str | None, offline: bool = True) -> tuple[nn.Module, dict, int]:
    """Build open_clip's visual tower; returns (tower, preprocess cfg, embed dim).

    ``pretrained`` is an open_clip tag (e.g. ``openai``), a local checkpoint file, or ``None``
    for random initialisation.
    """
    if arch not in open_clip.list_models():
        raise BackboneNotFound(f"vision backbone {arch!r} is not an open_clip architecture; "
                               f"known ones include {open_clip.list_models()[:8]}...")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        model = open_clip.create_model(arch, pretrained=pretrained or None)
    except RuntimeError as e:
        raise BackboneNotFound(
            f"vision backbone {arch!r} with pretrained={pretrained!r} could not be loaded"
            f"{' offline' if offline else ''}. Looked for a file {pretrained!r} (absent) and for the tag "
            f"{pretrained!r} in the open_clip/Hugging Face cache. Ways out: set the backbone's pretrained to a "
            f"local checkpoint file; set pretrained: null to train from scratch; or, on a machine with "
            f"internet, set offline: false to download it. ({e})") from e
    cfg = dict(model.visual.preprocess_cfg)
    dim = open_clip.get_model_config(arch)["embed_dim"]
    return model.visual, cfg, dim


class VisionSpecialist(nn.Module):
    """open_clip visual tower -> (mean over frames for video) -> dropout -> Linear(dim -> classes)."""

    def __init__(self, tower: nn.Module, modality: str, arch: str, preprocess: dict, dim: int, labels: list[str],
                 dropout: float = 0.3, frames: int = 8):
        super().__init__()
        if modality not in ("image", "video"):
            raise ValueError(f"vision modality must be image or video, got {modality!r}")
        self.tower, self.modality, self.arch = tower, modality, arch
        self.preprocess, self.dim, self.frames = preprocess, dim, frames
        self._eval_transform = eval_transform(preprocess)
        self.dropout = nn.Dropout(dropout)
        self.labels = list(labels)
        self.head = nn.Linear(dim, len(self.labels))
        # eval_transform's Normalize, for uint8 pixels normalised on the model's device (not saved: from preprocess)
        self.register_buffer("mean", torch.tensor(preprocess["mean"], dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("std", torch.tensor(preprocess["std"], dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def checkpoint_kind(self) -> str:
        return self.modality

    def dataset(self, posts: list, train: bool = False, augment: bool = True,
                frame_store: str | Path | None = None) -> Dataset:
        """The posts' media as this tower's input (:func:`emocare.data.datasets.media_dataset`)."""
        return media_dataset(self.modality, self.preprocess, self.frames, posts, self.labels, train, augment,
                             frame_store)

    def decode(self, source) -> torch.Tensor:
        """One post's media (a path, bytes or a PIL image) as this tower's evaluation input."""
        return decode_media(self.modality, source, self._eval_transform, self.frames)

    @staticmethod
    def collate(items: list[tuple[torch.Tensor, int]]) -> dict:
        pixels, labels = zip(*items, strict=True)
        return {"pixels": torch.stack(pixels), "label": torch.tensor(labels, dtype=torch.long)}

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (the frame store's) as ``ToTensor`` then ``Normalize`` would give them, same operations."""
        return pixels.float().div(255).sub(self.mean).div(self.std)

    def encode(self, batch: dict) -> torch.Tensor:
        """Pooled features before the classifier: [B, dim] (video frames mean-pooled); uint8 pixels normalised first."""
        x = batch["pixels"]
        if x.dtype == torch.uint8:
            x = self.normalize(x)
        if x.dim() == 5:
            b, t = x.shape[:2]
            return self.tower(x.flatten(0, 1)).view(b, t, -1).mean(1)
        return self.tower(x)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.dropout(self.encode(batch)))

    def spec(self) -> dict:
        return {"arch": self.arch, "preprocess": self.preprocess, "dim": self.dim, "frames": self.frames,
                "model_cfg": open_clip.get_model_config(self.arch)}

    @classmethod
    def from_spec(cls, modality: str, spec: dict, labels: list[str]) -> VisionSpecialist:
        if spec["arch"] not in open_clip.list_models():  # a configuration this install does not ship
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, f"{spec['arch']}.json").write_text(json.dumps(spec["model_cfg"]))
                open_clip.add_model_config(tmp)
        logging.disable(logging.WARNING)  # open_clip would warn "initialized randomly": the weights load next
        try:
            tower, _, _ = load_vision_tower(spec["arch"], None)
        finally:
            logging.disable(logging.NOTSET)
        return cls(tower, modality, spec["arch"], spec["preprocess"], spec["dim"], labels, 0.0, spec["frames"])


def pretrained_source(cfg: dict) -> str | None:
    """The open_clip tag or checkpoint file of the tower's weights; ``None``: trained from scratch."""
    return cfg.get("pretrained")


def build(modality: str, cfg: dict, offline: bool, labels: list[str]) -> VisionSpecialist:
    """The ``image`` or ``video`` specialist its ``params.yaml`` section describes."""
    tower, preprocess, dim = load_vision_tower(cfg["backbone"], cfg.get("pretrained"), offline)
    return VisionSpecialist(tower, modality, cfg["backbone"], preprocess, dim, labels, cfg["dropout"],
                            cfg.get("frames", 8))


def rebuild(kind: str, spec: dict, labels: list[str]) -> VisionSpecialist:
    """The specialist a checkpoint's ``spec`` describes (its weights are loaded next)."""
    return VisionSpecialist.from_spec(kind, spec, labels)
