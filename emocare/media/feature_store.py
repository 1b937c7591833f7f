"""A frozen tower's pooled features kept on disk: one small ``.npy`` per media file and tower.

With a frozen backbone, training the head needs each post's features once, not each epoch, and the
embed stage needs the same features again. The store computes them once: the first reader runs the
tower, every later reader (the other epochs, the embed stage, a rerun with another head) reads them
back. It lives beside the frame store (``<frame_store>/features/``).

An entry is named by the frame store's key for the file (its identity, frame count and geometric
transforms) and by a digest of the tower's weights and normalisation, so other weights or another
input size never read a stale entry. Entries are written atomically. The loop that fills the store while
building a frozen tower's training data is :func:`emocare.data.datasets.tower_features`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emocare.io import atomic_path
from emocare.media.frame_store import FrameStore


def tower_digest(tower: nn.Module, preprocess: dict, precision: str = "fp32") -> str:
    """A digest of a tower's weights, its preprocessing and the precision it runs in (fp32 is not named, so
    earlier entries stay valid): what its features depend on."""
    h = hashlib.sha256(repr(sorted(preprocess.items())).encode())
    if precision != "fp32":
        h.update(precision.encode())
    for name, tensor in tower.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureStore:
    """Features of ``frames``' media under ``root/features/<tower digest>/``."""

    def __init__(self, root: str | Path, frames: FrameStore, digest: str):
        self.root, self.frames = Path(root) / "features" / digest, frames

    def path(self, media: str | Path) -> Path:
        key = self.frames.path(media).stem
        return self.root / key[:2] / f"{key}.npy"

    def get(self, media: str | Path) -> np.ndarray | None:
        try:
            return np.load(self.path(media))
        except (FileNotFoundError, ValueError, EOFError):  # not there yet, or unreadable: compute again
            return None

    def put(self, media: str | Path, features: np.ndarray) -> None:
        entry = self.path(media)
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, features)


def tower_store(model: nn.Module, root: str | Path, frames: FrameStore | None = None) -> FeatureStore:
    """The store of a vision specialist's tower features beside the frame store ``root``, for the precision its
    CPU path computes in (:attr:`emocare.models.vision.VisionSpecialist.feature_precision`)."""
    frames = frames or FrameStore(root, model.modality, model.transform, model.frames)
    return FeatureStore(root, frames, tower_digest(model.tower, model.preprocess, model.feature_precision))
