"""Data contract (manifest), validation, splitting, importers, the demo set, and the datasets that feed posts to
the specialists.

Which module builds a specialist's dataset is data (:data:`DATASET_MODULES`), imported only when one is built,
as :data:`emocare.models.MODEL_MODULES` does for the models: the text stages never import the vision datasets
(and their towers' transforms), nor the vision stages the OCR.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from emocare.data.manifest import Post, load_posts

if TYPE_CHECKING:  # torch is imported by the dataset modules, not by every user of the manifest
    from torch.utils.data import Dataset

__all__ = ["DATASET_MODULES", "Post", "load_posts", "specialist_dataset"]

DATASET_MODULES = {"text": ("emocare.data.texts", "text_dataset"),
                   "image": ("emocare.data.datasets", "vision_dataset"),
                   "video": ("emocare.data.datasets", "vision_dataset")}


def specialist_dataset(model, posts: list[Post], train: bool = False, augment: bool = True,
                       frame_store: str | Path | None = None) -> Dataset:
    """The posts as ``model``'s input (a specialist of ``model.modality``): raw text or pixels, or a frozen
    backbone's features of them; augmented when ``train`` and ``augment`` (images); stores of decoded
    pixels, OCR and features beside ``frame_store``."""
    module, name = DATASET_MODULES[model.modality]
    return getattr(importlib.import_module(module), name)(model, posts, train, augment, frame_store)
