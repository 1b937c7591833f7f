"""Images and videos decoded into a vision tower's input.

One post at a time on the CPU (:func:`decode_media`: Pillow for images, sampled frames for videos, then the
tower's transform), or images in batches on the model's device (:func:`decode_images`): JPEGs with
``torchvision.io.decode_jpeg`` (nvJPEG on CUDA), resized and cropped there; other formats (PNG, GIF, ...)
decoded by Pillow on the CPU, as every time.

The batch result is what the frame store holds (:meth:`emocare.media.frame_store.FrameStore.pixels`): uint8
``[B, 3, H, W]``, which the model normalises on its device. The geometry is the evaluation transform's own
``Resize`` and ``CenterCrop`` applied to tensors (bicubic with antialiasing on float pixels, rounded back to
uint8), not Pillow's, so pixels differ from the CPU path by resampling rounding: tested within a mean of 1.5 and
a 99th percentile of 6 levels of 255 on the demo's images saved as JPEG (decoding itself is identical on the
CPU). Whether it is faster than decoding in DataLoader workers is measured by ``benchmarks/gpu_suite.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg

from emocare.media.frame_store import geometric_part
from emocare.media.image import load_image
from emocare.media.video import read_frames
from emocare.transforms import frames_to_tensor

JPEG_MAGIC = b"\xff\xd8\xff"


def decode_media(modality: str, source, transform, frames: int = 8) -> torch.Tensor:
    """Pixels for one image ([3, H, W]; path, bytes or PIL image) or video ([frames, 3, H, W]; path)."""
    if modality == "image":
        return transform(load_image(source))
    return frames_to_tensor(read_frames(source, frames), transform)


def tensor_geometry(transform: T.Compose) -> list:
    """The ``Resize`` and ``CenterCrop`` steps of an evaluation transform (the rest is Pillow's RGB conversion,
    done by decoding as RGB)."""
    geometric = geometric_part(transform)
    if geometric is None:
        raise ValueError(f"device decoding needs a transform that ends ToTensor, Normalize, not {transform}")
    return [t for t in geometric.transforms if isinstance(t, T.Resize | T.CenterCrop)]


def _shape(pixels: torch.Tensor, steps: list) -> torch.Tensor:
    """uint8 [3, h, w] -> the steps' output, computed on float pixels (bicubic needs them on CUDA), rounded."""
    x = pixels.unsqueeze(0).float()
    for step in steps:
        x = step(x)
    return x.round_().clamp_(0, 255).to(torch.uint8)[0]


def decode_images(sources: list[str | Path | bytes], transform: T.Compose, device: torch.device | str) -> torch.Tensor:
    """uint8 ``[len(sources), 3, H, W]`` on ``device``: the images (paths or bytes) at the transform's geometry;
    JPEGs decoded in one batch on ``device``, other formats by Pillow."""
    device = torch.device(device)
    steps = tensor_geometry(transform)
    raw = [s if isinstance(s, bytes | bytearray) else Path(s).read_bytes() for s in sources]
    jpeg = [i for i, b in enumerate(raw) if b[:3] == JPEG_MAGIC]
    decoded: list[torch.Tensor | None] = [None] * len(raw)
    if jpeg:
        data = [torch.frombuffer(bytearray(raw[i]), dtype=torch.uint8) for i in jpeg]
        for i, img in zip(jpeg, decode_jpeg(data, mode=ImageReadMode.RGB, device=device), strict=True):
            decoded[i] = img
    for i, img in enumerate(decoded):
        if img is None:  # PNG and the rest: Pillow, as the CPU path
            rgb = np.asarray(load_image(raw[i]), dtype=np.uint8)
            decoded[i] = torch.from_numpy(rgb.copy()).permute(2, 0, 1).to(device)
    return torch.stack([_shape(img, steps) for img in decoded])
