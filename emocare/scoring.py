"""The one scoring path: specialist features, fusion logits and specialist-head logits for a batch of posts.

Embedding (:mod:`emocare.pipeline.embed`), evaluation (:mod:`emocare.pipeline.evaluate`), prediction, bulk prediction
and the service (all through :class:`emocare.predict.EmoCare`) and the trainer's validation score
posts with these functions, so a change in how a model is run reaches all of them at once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from emocare.progress import progress_bar
from emocare.runtime import autocast, resolve_device, to_device

FUSION_BATCH = 512  # cached embeddings are small: big batches, one per call for the service


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device,
                   desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``loader``; returns (float32 logits [N, C], labels [N])."""
    model.eval()
    logits, labels = [], []
    for batch in progress_bar(loader, desc=desc, unit="batch", leave=False):
        batch = to_device(batch, device)
        with autocast(device):
            out = model(batch)
        logits.append(out.float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


@torch.inference_mode()
def features(specialist: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    """A specialist's pooled features for one collated batch: float32 [B, dim] on the CPU."""
    with autocast(device):
        return specialist.encode(to_device(batch, device)).float().cpu()


@torch.inference_mode()
def fusion_logits(fusion: nn.Module, emb: dict[str, torch.Tensor], present: torch.Tensor, device: torch.device,
                  batch_size: int = FUSION_BATCH, calibrated: bool = True) -> np.ndarray:
    """Fusion logits [N, C] for embeddings ``emb[m]`` [N, D_m] and the ``present`` mask [N, M]
    (modalities in ``fusion.modalities`` order; an absent modality's row is ignored), with the model's
    calibration applied unless ``calibrated`` is False."""
    fusion.eval()
    out = []
    for start in range(0, len(present), batch_size):
        rows = slice(start, start + batch_size)
        batch = to_device({"emb": {m: emb[m][rows] for m in fusion.modalities}, "present": present[rows]}, device)
        with autocast(device):
            out.append(fusion(batch).float().cpu())
    logits = torch.cat(out).numpy() if out else np.zeros((0, len(fusion.labels)), np.float32)
    return fusion.calibrate(logits) if calibrated else logits


@torch.inference_mode()
def attribution(fusion: nn.Module, emb: dict[str, torch.Tensor], present: torch.Tensor, device: torch.device
                ) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated probabilities [N, C], attribution [N, M]): how much each post's top class loses in probability
    when each of its modalities is hidden from the fusion model. NaN where the modality is absent, or is the
    post's only one (hiding it leaves nothing to score)."""
    probs = torch.softmax(torch.from_numpy(fusion_logits(fusion, emb, present, device, len(present) or 1)), 1)
    top = probs.argmax(1)
    out = torch.full(present.shape, float("nan"))
    # every (post, modality) to hide, all masked copies scored in one fusion call
    post, hide = (present & (present.sum(1, keepdim=True) > 1)).nonzero(as_tuple=True)
    if len(post):
        hidden = present[post].clone()
        hidden[torch.arange(len(post)), hide] = False
        without = torch.softmax(torch.from_numpy(fusion_logits(
            fusion, {m: e[post] for m, e in emb.items()}, hidden, device, len(post))), 1)
        out[post, hide] = probs[post, top[post]] - without[torch.arange(len(post)), top[post]]
    return probs.numpy(), out.numpy()


def attribution_record(modalities: list[str], values: np.ndarray) -> dict[str, float]:
    """One post's row of :func:`attribution` as results carry it: its modalities (NaN ones left out), rounded."""
    return {m: round(float(v), 4) for m, v in zip(modalities, values, strict=True) if not np.isnan(v)}


def cached_fusion_logits(model: nn.Module, cache, rows: np.ndarray, shown: list[str] | None = None,
                         device: str = "cpu", calibrated: bool = True) -> np.ndarray:
    """:func:`fusion_logits` for an embedding cache's (:class:`emocare.cache.Cache`) ``rows``, with modalities
    outside ``shown`` hidden (masked)."""
    mods, idx = model.modalities, torch.as_tensor(rows, dtype=torch.long)
    present = cache.present_matrix(mods)[idx]
    if shown is not None:
        present = present & torch.tensor([m in shown for m in mods])
    dev = resolve_device(device)
    return fusion_logits(model.to(dev), {m: cache.emb[m][idx] for m in mods}, present, dev, calibrated=calibrated)


def head_logits(state_dict: dict[str, torch.Tensor], feats: torch.Tensor) -> np.ndarray:
    """A specialist's classifier on its cached features: its forward pass in eval mode (dropout is off),
    without building the backbone."""
    return nn.functional.linear(feats, state_dict["head.weight"], state_dict["head.bias"]).numpy()
