"""Torch datasets that feed posts' media to the vision specialists (text posts: :mod:`emocare.data.texts`), and
a frozen tower's features of them, computed once and kept in the feature store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from emocare.data.manifest import Post
from emocare.labels import label_index
from emocare.media.decoding import decode_media
from emocare.media.feature_store import tower_store
from emocare.media.frame_store import FrameStore
from emocare.progress import progress_bar
from emocare.runtime import autocast, make_loader, to_device
from emocare.transforms import eval_transform, train_transform

FEATURE_BATCH = 64  # images per tower call while computing a frozen tower's features (a video is `frames` images)


class MediaDataset(Dataset):
    """One media modality of a list of posts: (pixels, label index); pixels from ``store`` when given."""

    def __init__(self, posts: list[Post], labels: list[str], modality: str, transform, frames: int = 8,
                 store: FrameStore | None = None):
        self.posts, self.labels, self.modality, self.transform = posts, labels, modality, transform
        self.frames, self.store = frames, store

    def __len__(self) -> int:
        return len(self.posts)

    def __getitem__(self, i: int):
        post = self.posts[i]
        source = getattr(post, self.modality)
        y = label_index(post.label, self.labels)
        if self.store is not None:
            return self.store.pixels(source), y
        return decode_media(self.modality, source, self.transform, self.frames), y


def media_dataset(modality: str, preprocess: dict, frames: int, posts: list[Post], labels: list[str],
                  train: bool = False, augment: bool = True, frame_store: str | Path | None = None) -> MediaDataset:
    """The dataset of ``posts``' ``modality`` (labels indexed in ``labels``) for a tower with ``preprocess``;
    augmented images when training.

    With ``frame_store`` (a folder), decoded pixels are kept there and read back
    (:mod:`emocare.media.frame_store`), except for augmented images, which are cropped anew each time.
    """
    if train and augment and modality == "image":
        return MediaDataset(posts, labels, "image", train_transform(preprocess))
    tf = eval_transform(preprocess)
    store = FrameStore(frame_store, modality, tf, frames) if frame_store else None
    return MediaDataset(posts, labels, modality, tf, frames, store)


def vision_dataset(model, posts: list[Post], train: bool = False, augment: bool = True,
                   frame_store: str | Path | None = None) -> Dataset:
    """The posts' media as a vision specialist's input (:func:`media_dataset`); for a frozen tower, its features
    of them (augmentation does not apply)."""
    if model.frozen:
        labels = torch.tensor([label_index(p.label, model.labels) for p in posts], dtype=torch.long)
        return TensorDataset(torch.from_numpy(tower_features(model, posts, frame_store)), labels)
    return media_dataset(model.modality, model.preprocess, model.frames, posts, model.labels, train, augment,
                         frame_store)


def tower_features(model, posts: list[Post], frame_store: str | Path | None = None) -> np.ndarray:
    """A vision specialist's pooled tower features of the posts' media [len(posts), model.dim], computed on the
    device the model is on; read from, and written to, the feature store beside ``frame_store``."""
    pixels = media_dataset(model.modality, model.preprocess, model.frames, posts, model.labels,
                           frame_store=frame_store)
    store = tower_store(model, frame_store, pixels.store) if frame_store else None
    media = [getattr(p, model.modality) for p in posts]
    out = np.zeros((len(posts), model.dim), np.float32)
    todo = []
    for i, m in enumerate(media):
        found = store.get(m) if store else None
        if found is None:
            todo.append(i)
        else:
            out[i] = found
    if not todo:
        return out
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_call = FEATURE_BATCH if model.modality == "image" else max(1, FEATURE_BATCH // model.frames)
    loader = make_loader(Subset(pixels, todo), per_call, model.collate, device, "auto")
    rows = iter(todo)
    with torch.inference_mode():
        for batch in progress_bar(loader, desc=f"{model.modality} features ({len(todo)} of {len(posts)} to compute)",
                                  unit="batch", leave=False):
            with autocast(device):
                feats = model.encode(to_device(batch, device)).float().cpu().numpy()
            for f in feats:
                i = next(rows)
                out[i] = f
                if store:
                    store.put(media[i], f)
    model.train(was_training)
    return out
