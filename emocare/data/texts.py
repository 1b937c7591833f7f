"""Torch datasets that feed posts' text to the text specialist (media posts: :mod:`emocare.data.datasets`), and
a frozen backbone's features of them."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from emocare.data.manifest import Post
from emocare.labels import label_index
from emocare.media.ocr import posts_ocr, with_ocr
from emocare.runtime import autocast, make_loader, to_device

FEATURE_BATCH = 64  # posts per backbone call while computing a frozen backbone's features


class PostTexts(Dataset):
    """Posts' text (with ``ocr_texts``, the text in their media, when given) and label index, tokenized a batch
    at a time by :meth:`emocare.models.text.TextSpecialist.collate`."""

    def __init__(self, posts: list[Post], labels: list[str], ocr_texts: list[str] | None = None):
        self.posts, self.labels, self.ocr_texts = posts, labels, ocr_texts

    def __len__(self) -> int:
        return len(self.posts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        text = self.posts[i].text if self.ocr_texts is None else with_ocr(self.posts[i].text, self.ocr_texts[i])
        return text, label_index(self.posts[i].label, self.labels)


def text_dataset(model, posts: list[Post], train: bool = False, augment: bool = True,
                 frame_store: str | Path | None = None) -> Dataset:
    """The posts' text as the text specialist's input (no augmentation: ``train`` and ``augment`` do not apply);
    with its ``ocr``, followed by the text in their media, kept in the OCR store beside ``frame_store``; for a
    frozen backbone, its features of them."""
    texts = PostTexts(posts, model.labels, posts_ocr(posts, frame_store) if model.ocr else None)
    if not model.frozen:
        return texts
    labels = torch.tensor([label_index(p.label, model.labels) for p in posts], dtype=torch.long)
    return TensorDataset(backbone_features(model, texts), labels)


@torch.inference_mode()
def backbone_features(model, texts: PostTexts) -> torch.Tensor:
    """The text specialist's pooled backbone features of ``texts`` [len, dim], float32 on the CPU, computed on the
    model's device in evaluation mode (no dropout)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for batch in make_loader(texts, FEATURE_BATCH, model.collate, device, 0):
        with autocast(device):
            out.append(model.encode(to_device(batch, device)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, model.dim))
