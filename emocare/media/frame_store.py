"""Decoded pixels kept on disk: every video's sampled frames (and every image) at the tower's input size.

Decoding (PNG/JPEG, and eight seeks and decodes per video) is what bounds the vision specialists'
input pipeline. The store does it once per post: the first reader decodes the media, applies the
transform's geometric part (resize, crop, RGB) and writes the result as uint8 ``[T, H, W, 3]``
(``T = 1`` for an image); every later epoch, and the embed stage, read that file back. The
DataLoader ships those uint8 pixels (a quarter of float32's bytes through worker shared memory and
the host-to-device copy) and the model scales and normalises them on its device
(:meth:`emocare.models.vision.VisionSpecialist.normalize`). The pixels are those the transform would
have produced, normalised by the same operations, so results are bit-identical to decoding every
time (tested).

An entry's name is a hash of the media file (resolved path, size, modification time), the
number of frames and the geometric transforms, so a changed file, frame count or tower size
never reads a stale entry. Entries are written atomically; concurrent DataLoader workers and
torchrun ranks may write the same entry safely. Size per 1,000 posts: ``T * H * W * 3`` bytes
each, e.g. 98 MB of 8-frame videos at 64 px (the demo tower), 1.2 GB at 224 px (ViT-B-32);
images 12 MB at 64 px, 150 MB at 224 px. The ``frame_store`` param sets the folder (``null``:
decode every time); delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from emocare.io import atomic_path
from emocare.media.image import load_image
from emocare.media.video import read_frames, video_decoder

VERSION = 1  # bump when what an entry holds changes


def geometric_part(transform: T.Compose) -> T.Compose | None:
    """The PIL-to-PIL steps before ``ToTensor``, when only a ``Normalize`` follows it (what the model redoes
    on its device); otherwise None."""
    steps = list(transform.transforms)
    at = next((i for i, t in enumerate(steps) if isinstance(t, T.ToTensor)), None)
    if at is None or [type(t) for t in steps[at + 1:]] != [T.Normalize]:
        return None
    return T.Compose(steps[:at])


def decode_uint8(modality: str, source, geometric: T.Compose, frames: int = 8,
                 decoder: str | None = None) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` pixels of an image (``T = 1``; path, bytes or PIL image) or a video's ``frames``
    sampled frames (path), after ``geometric`` (:func:`geometric_part`): the transform's output before scaling."""
    if modality == "image":
        images = [load_image(source)]
    else:
        images = [Image.fromarray(f) for f in read_frames(source, frames, decoder)]
    return np.stack([np.asarray(geometric(img), dtype=np.uint8) for img in images])


def file_key(media: str | Path, tag: str) -> str:
    """A name for what is derived from a media file: the file's identity (resolved path, size, modification
    time) and ``tag``, what was derived and how."""
    resolved = Path(media).resolve()
    stat = resolved.stat()
    return hashlib.sha256(f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}|{tag}".encode()).hexdigest()


class FrameStore:
    """Pixels for ``modality`` posts under ``root``, as ``transform`` (an eval transform) would give them."""

    def __init__(self, root: str | Path, modality: str, transform: T.Compose, frames: int = 8):
        geometric = geometric_part(transform)
        if geometric is None:
            raise ValueError(f"the frame store needs a transform that ends ToTensor, Normalize, not {transform}")
        self.root, self.modality, self.frames = Path(root), modality, frames if modality == "video" else 1
        self.geometric = geometric
        steps = re.sub(r" at 0x[0-9a-f]+", "", repr(self.geometric))  # a function's repr names its address
        self.decoder = video_decoder()  # named in the tag: decoders could round pixels differently
        decoder = f"|{self.decoder}" if modality == "video" else ""
        self._tag = f"v{VERSION}|{modality}|{self.frames}|{steps}{decoder}"

    def path(self, media: str | Path) -> Path:
        """The entry for a media file: named by the file's identity and what is done to it."""
        key = file_key(media, self._tag)
        return self.root / key[:2] / f"{key}.npy"

    def uint8(self, media: str | Path) -> np.ndarray:
        """uint8 ``[T, H, W, 3]``: read from the store, or decoded and written there."""
        entry = self.path(media)
        try:
            return np.load(entry)
        except (FileNotFoundError, ValueError, EOFError):  # not there yet, or unreadable: decode again
            pass
        pixels = decode_uint8(self.modality, media, self.geometric, self.frames, self.decoder)
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, pixels)
        return pixels

    def pixels(self, media: str | Path) -> torch.Tensor:
        """The model's input before normalisation: uint8 ``[3, H, W]`` for an image, ``[T, 3, H, W]`` for a video."""
        x = torch.from_numpy(self.uint8(media)).permute(0, 3, 1, 2)
        return x[0] if self.modality == "image" else x
