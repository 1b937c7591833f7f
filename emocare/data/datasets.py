"""Torch datasets that feed posts to the specialists."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from emocare.data.manifest import Post
from emocare.labels import LABELS
from emocare.media.frame_store import FrameStore
from emocare.media.image import load_image
from emocare.media.video import read_frames
from emocare.models.vision import eval_transform, frames_to_tensor, train_transform


def decode_media(modality: str, source, transform, frames: int = 8) -> torch.Tensor:
    """Pixels for one image ([3, H, W]; path, bytes or PIL image) or video ([frames, 3, H, W]; path)."""
    if modality == "image":
        return transform(load_image(source))
    return frames_to_tensor(read_frames(source, frames), transform)


def label_index(label: str | None) -> int:
    """Class index of ``label``; -1 for an unlabelled post."""
    return LABELS.index(label) if label is not None else -1


class PostDataset(Dataset):
    """One modality of a list of posts: (text or pixels, label index); pixels from ``store`` when given."""

    def __init__(self, posts: list[Post], modality: str, transform=None, frames: int = 8,
                 store: FrameStore | None = None):
        self.posts, self.modality, self.transform, self.frames, self.store = posts, modality, transform, frames, store

    def __len__(self) -> int:
        return len(self.posts)

    def __getitem__(self, i: int):
        post = self.posts[i]
        y = label_index(post.label)
        if self.modality == "text":
            return post.text, y
        if self.store is not None:
            return self.store.pixels(getattr(post, self.modality)), y
        return decode_media(self.modality, getattr(post, self.modality), self.transform, self.frames), y


def specialist_dataset(model, posts: list[Post], train: bool = False, augment: bool = True,
                       frame_store: str | Path | None = None) -> PostDataset:
    """The dataset for ``model``'s modality; training augmentation for images when asked.

    With ``frame_store`` (a folder), decoded pixels are kept there and read back
    (:mod:`emocare.media.frame_store`), except for augmented images, which are cropped anew each time.
    """
    if model.modality == "text":
        return PostDataset(posts, "text")
    if train and augment and model.modality == "image":
        return PostDataset(posts, "image", train_transform(model.preprocess))
    tf = eval_transform(model.preprocess)
    store = FrameStore(frame_store, model.modality, tf, model.frames) if frame_store else None
    return PostDataset(posts, model.modality, tf, model.frames, store)
