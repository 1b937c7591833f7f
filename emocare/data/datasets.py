"""Torch datasets that feed posts' media to the vision specialists (text posts: :meth:`TextSpecialist.dataset`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from emocare.data.manifest import Post
from emocare.labels import label_index
from emocare.media.frame_store import FrameStore
from emocare.media.image import load_image
from emocare.media.video import read_frames
from emocare.transforms import eval_transform, frames_to_tensor, train_transform


def decode_media(modality: str, source, transform, frames: int = 8) -> torch.Tensor:
    """Pixels for one image ([3, H, W]; path, bytes or PIL image) or video ([frames, 3, H, W]; path)."""
    if modality == "image":
        return transform(load_image(source))
    return frames_to_tensor(read_frames(source, frames), transform)


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
