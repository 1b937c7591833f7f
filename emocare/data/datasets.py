"""Torch datasets that feed posts to the specialists."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from emocare.data.manifest import Post
from emocare.labels import LABELS
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
    """One modality of a list of posts: (text or pixels, label index)."""

    def __init__(self, posts: list[Post], modality: str, transform=None, frames: int = 8):
        self.posts, self.modality, self.transform, self.frames = posts, modality, transform, frames

    def __len__(self) -> int:
        return len(self.posts)

    def __getitem__(self, i: int):
        post = self.posts[i]
        y = label_index(post.label)
        if self.modality == "text":
            return post.text, y
        return decode_media(self.modality, getattr(post, self.modality), self.transform, self.frames), y


def specialist_dataset(model, posts: list[Post], train: bool = False, augment: bool = True) -> PostDataset:
    """The dataset for ``model``'s modality; training augmentation for images when asked."""
    if model.modality == "text":
        return PostDataset(posts, "text")
    tf = train_transform(model.preprocess) if train and augment and model.modality == "image" \
        else eval_transform(model.preprocess)
    return PostDataset(posts, model.modality, tf, model.frames)
