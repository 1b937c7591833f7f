"""Image preprocessing for the vision towers: open_clip's evaluation transform, training augmentation,
and video frames stacked into one tensor."""

from __future__ import annotations

import numpy as np
import open_clip
import torch
from PIL import Image
from torchvision import transforms as T


def eval_transform(cfg: dict) -> T.Compose:
    """open_clip's evaluation preprocessing for a tower's ``preprocess`` config."""
    return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                     resize_mode=cfg.get("resize_mode"), interpolation=cfg.get("interpolation"))


def train_transform(cfg: dict) -> T.Compose:
    """Training augmentation: random resized crop, horizontal flip, colour jitter (no hue shift)."""
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        T.ToTensor(),
        T.Normalize(cfg["mean"], cfg["std"]),
    ])


def frames_to_tensor(frames: list[np.ndarray], transform) -> torch.Tensor:
    """Stack transformed RGB frames into [T, 3, H, W]."""
    return torch.stack([transform(Image.fromarray(f)) for f in frames])
