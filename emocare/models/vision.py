"""Image and video specialists on a vision tower (:mod:`emocare.models.towers`: open_clip or timm).

With ``freeze: true`` the tower is not trained: the head learns from the tower's pooled features,
computed once per media file (:func:`emocare.data.datasets.tower_features`, kept in
:mod:`emocare.media.feature_store`), so an epoch costs a linear layer. The datasets that feed the specialists
are in :mod:`emocare.data.datasets`.
"""

from __future__ import annotations

import torch
from torch import nn

from emocare.media.decoding import decode_media
from emocare.media.frame_store import decode_uint8, geometric_part
from emocare.models.cpu_paths import FLOAT32_PATHS
from emocare.models.towers import load_vision_tower, rebuild_tower, tower_spec, weights_source
from emocare.transforms import eval_transform


class VisionSpecialist(nn.Module):
    """Vision tower -> (mean over frames for video) -> dropout -> Linear(dim -> classes); ``frozen``: only the
    head is trained."""

    def __init__(self, tower: nn.Module, modality: str, arch: str, preprocess: dict, dim: int, labels: list[str],
                 dropout: float = 0.3, frames: int = 8, frozen: bool = False):
        super().__init__()
        if modality not in ("image", "video"):
            raise ValueError(f"vision modality must be image or video, got {modality!r}")
        self.tower, self.modality, self.arch = tower, modality, arch
        self.preprocess, self.dim, self.frames, self.frozen = preprocess, dim, frames, frozen
        self.tower.requires_grad_(not frozen)
        self.fast = None  # the tower's CPU runner for inference (emocare.models.cpu_paths.use_cpu_path)
        self.transform = eval_transform(preprocess)  # one post's evaluation input (decode)
        self._geometric = geometric_part(self.transform)  # None: a transform the model cannot finish itself
        self.dropout = nn.Dropout(dropout)
        self.labels = list(labels)
        self.head = nn.Linear(dim, len(self.labels))
        # eval_transform's Normalize, for uint8 pixels normalised on the model's device (not saved: from preprocess)
        self.register_buffer("mean", torch.tensor(preprocess["mean"], dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("std", torch.tensor(preprocess["std"], dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def checkpoint_kind(self) -> str:
        return self.modality

    def train(self, mode: bool = True) -> VisionSpecialist:
        super().train(mode)
        if self.frozen:
            self.tower.eval()  # a frozen tower's batch-norm statistics stay the pretrained ones
        return self

    @property
    def feature_precision(self) -> str:
        """The precision the tower's CPU path computes in, which names its features in the feature store
        (:func:`emocare.media.feature_store.tower_store`): fp32 eager and ONNX Runtime share entries (the same
        float32 arithmetic)."""
        path = getattr(self.fast, "name", "fp32")
        return "fp32" if path in FLOAT32_PATHS else path

    def decode(self, source) -> torch.Tensor:
        """One post's media (a path, bytes or a PIL image) as this tower's evaluation input: uint8 pixels
        (``[3, H, W]``, a video ``[frames, 3, H, W]``) that :meth:`encode` scales and normalises, the same
        operations as the transform's (bit-identical), a batch at a time and a quarter of float32's bytes
        through DataLoader workers; float pixels where the transform does more than resize, crop and normalise."""
        if self._geometric is None:
            return decode_media(self.modality, source, self.transform, self.frames)
        x = torch.from_numpy(decode_uint8(self.modality, source, self._geometric, self.frames)).permute(0, 3, 1, 2)
        return x[0] if self.modality == "image" else x

    @staticmethod
    def collate(items: list[tuple[torch.Tensor, int]]) -> dict:
        """Pixels ([3, H, W] or [T, 3, H, W] each) or a frozen tower's features ([dim] each), with labels."""
        x, labels = zip(*items, strict=True)
        return {"features" if x[0].dim() == 1 else "pixels": torch.stack(x),
                "label": torch.tensor([int(y) for y in labels], dtype=torch.long)}

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (the frame store's) as ``ToTensor`` then ``Normalize`` would give them, same operations;
        in place on the one float copy (3.5 times faster than a new tensor per operation, bit-identical)."""
        return pixels.to(torch.float32, copy=True).div_(255).sub_(self.mean).div_(self.std)

    def encode(self, batch: dict) -> torch.Tensor:
        """Pooled features before the classifier: [B, dim] (video frames mean-pooled); uint8 pixels normalised first;
        a frozen tower's features as they are."""
        if "features" in batch:
            return batch["features"]
        x = batch["pixels"]
        if x.dtype == torch.uint8:
            x = self.normalize(x)
        if x.dim() == 5:  # a batch of videos: all their frames in one tower call
            b, t = x.shape[:2]
            return self.run_tower(x.flatten(0, 1)).view(b, t, -1).mean(1)
        return self.run_tower(x)

    def run_tower(self, x: torch.Tensor) -> torch.Tensor:
        """The tower on normalised pixels: through its CPU runner when one is set and no gradient is taken."""
        if self.fast is not None and not torch.is_grad_enabled():
            return self.fast(x)
        return self.tower(x)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.dropout(self.encode(batch)))

    def spec(self) -> dict:
        return {"arch": self.arch, "preprocess": self.preprocess, "dim": self.dim, "frames": self.frames,
                "frozen": self.frozen, "model_cfg": tower_spec(self.arch)}

    @classmethod
    def from_spec(cls, modality: str, spec: dict, labels: list[str]) -> VisionSpecialist:
        tower = rebuild_tower(spec["arch"], spec["model_cfg"])
        return cls(tower, modality, spec["arch"], spec["preprocess"], spec["dim"], labels, 0.0, spec["frames"],
                   spec.get("frozen", False))


def pretrained_source(cfg: dict) -> str | None:
    """Where the tower's weights come from (tag or file, and what they were trained on); ``None``: from scratch."""
    return weights_source(cfg["backbone"], cfg.get("pretrained"))


def build(modality: str, cfg: dict, offline: bool, labels: list[str]) -> VisionSpecialist:
    """The ``image`` or ``video`` specialist its ``params.yaml`` section describes."""
    tower, preprocess, dim = load_vision_tower(cfg["backbone"], cfg.get("pretrained"), offline)
    return VisionSpecialist(tower, modality, cfg["backbone"], preprocess, dim, labels, cfg["dropout"],
                            cfg.get("frames", 8), bool(cfg.get("freeze", False)))


def rebuild(kind: str, spec: dict, labels: list[str]) -> VisionSpecialist:
    """The specialist a checkpoint's ``spec`` describes (its weights are loaded next)."""
    return VisionSpecialist.from_spec(kind, spec, labels)
