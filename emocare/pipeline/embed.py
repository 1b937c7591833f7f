"""Embedding posts with their best specialist into the HDF5 cache (format in :mod:`emocare.cache`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from emocare.cache import write_cache
from emocare.data import specialist_dataset
from emocare.data.manifest import Post
from emocare.distributed import barrier, init_distributed, rank_world
from emocare.io import atomic_path, file_sha256
from emocare.labels import label_index
from emocare.models import load_checkpoint
from emocare.models.cpu_paths import use_cpu_path
from emocare.progress import progress_bar
from emocare.runtime import choose_precision, make_loader, resolve_device, resolve_workers
from emocare.scoring import features


def encode_posts(model, posts: list[Post], batch_size: int = 64, num_workers: int | str = "auto",
                 device: torch.device | str = "cpu", desc: str = "embed",
                 frame_store: str | Path | None = None) -> np.ndarray:
    """Pooled specialist features [len(posts), dim] for posts that all have the model's modality."""
    device = torch.device(device)
    model.to(device).eval()
    loader = make_loader(specialist_dataset(model, posts, frame_store=frame_store), batch_size, model.collate,
                         device, num_workers)
    out = np.zeros((len(posts), model.dim), np.float32)
    row = 0
    for batch in progress_bar(loader, desc=desc, unit="batch", leave=False):
        feats = features(model, batch, device)
        out[row: row + len(feats)] = feats.numpy()
        row += len(feats)
    return out


def embed_modality(modality: str, checkpoint: str | Path, posts: list[Post], split: dict[str, str],
                   out: str | Path, batch_size: int = 64, num_workers: int | str = "auto",
                   device: str = "auto", frame_store: str | Path | None = None, cpu_path: str = "auto") -> dict:
    """Embed every post having ``modality`` with its best specialist and write ``out``; returns a summary.

    Under torchrun each rank embeds every world-th post and writes its shard beside ``out``;
    rank 0 merges the shards in post order into ``out`` (atomically) and removes them.
    """
    init_distributed(device)
    rank, world = rank_world()
    device_ = resolve_device(device)
    model, payload = load_checkpoint(checkpoint, device_)
    path = use_cpu_path(model, cpu_path, device_)  # as prediction runs it (emocare.models.cpu_paths)
    no_data = bool(payload.get("no_data"))
    present = np.array([(modality in p.modalities) and not no_data for p in posts], dtype=bool)
    emb = np.zeros((len(posts), payload["spec"]["dim"]), np.float32)
    rows = np.flatnonzero(present)
    mine = rows[rank::world]
    feats = encode_posts(model, [posts[i] for i in mine], batch_size, num_workers, device_,
                         desc=f"embed {modality}", frame_store=frame_store) if len(mine) else emb[:0]
    if world == 1:
        emb[mine] = feats
    else:
        shards = Path(f"{out}.shards")
        shards.mkdir(parents=True, exist_ok=True)
        with atomic_path(shards / f"{rank}.npz", suffix=".npz") as tmp:
            np.savez(tmp, rows=mine, emb=feats)
        barrier()
        if rank == 0:
            for r in range(world):
                with np.load(shards / f"{r}.npz") as shard:
                    emb[shard["rows"]] = shard["emb"]
    attrs = {"modality": modality, "labels": list(model.labels), "backbone": payload.get("backbone", ""),
             "pretrained": bool(payload.get("pretrained", False)), "dim": emb.shape[1], "no_data": no_data,
             "checkpoint_sha256": file_sha256(checkpoint)}
    if rank == 0:
        labels = np.array([label_index(p.label, model.labels) for p in posts])
        write_cache(out, emb, present, [p.id for p in posts], labels, [split.get(p.id, "") for p in posts], attrs)
        if world > 1:
            shutil.rmtree(f"{out}.shards")
    barrier()
    return {"modality": modality, "posts": len(posts), "present": int(present.sum()), "dim": emb.shape[1],
            "device": str(device_), "precision": choose_precision(device_), "cpu_path": path,
            "num_workers": resolve_workers(num_workers, device_), "world_size": world}
