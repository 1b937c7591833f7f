"""The embedding cache format: one HDF5 file per modality, rows in the order of ``data/posts.jsonl``.

Each file holds ``emb`` [N, D] float32 (the specialist's pooled features before its
classifier; zeros where the modality is absent), ``present`` [N] bool, ``id`` [N], ``label``
[N] (class index, -1 when unlabelled) and ``split`` [N]; attributes ``labels``, ``backbone``,
``pretrained``, ``dim``, ``modality``, ``no_data`` and ``checkpoint_sha256``. Files are written
without timestamps to a temporary name and renamed, so equal inputs give equal bytes and a
killed run leaves no file under the final name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from emocare.io import atomic_path
from emocare.labels import MODALITIES

CHUNK_ROWS = 256


def write_cache(path: str | Path, emb: np.ndarray, present: np.ndarray, ids: list[str], labels: np.ndarray,
                splits: list[str], attrs: dict) -> None:
    """Write one modality's cache file atomically and deterministically (no HDF5 timestamps)."""
    n = len(ids)
    chunks = (max(1, min(n, CHUNK_ROWS)), max(1, emb.shape[1]))
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w", track_order=False) as f:
        f.create_dataset("emb", data=emb.astype(np.float32), chunks=chunks if n else None, track_times=False)
        f.create_dataset("present", data=present.astype(bool), track_times=False)
        f.create_dataset("id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype(), track_times=False)
        f.create_dataset("label", data=labels.astype(np.int64), track_times=False)
        f.create_dataset("split", data=np.array(splits, dtype=object), dtype=h5py.string_dtype(),
                         track_times=False)
        for key, value in attrs.items():
            f.attrs[key] = value



@dataclass
class Cache:
    """The three modality files, loaded and lined up."""

    ids: list[str]
    labels: np.ndarray
    splits: np.ndarray
    emb: dict[str, torch.Tensor]
    present: dict[str, np.ndarray]
    attrs: dict[str, dict]
    label_names: list[str]  # the classes, as the specialists that wrote the files were trained on

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def present_matrix(self, modalities: list[str]) -> torch.Tensor:
        """[N, len(modalities)] bool."""
        return torch.from_numpy(np.stack([self.present[m] for m in modalities], 1))

    def rows_with(self, split: str, modalities: list[str]) -> np.ndarray:
        """Rows of ``split`` that have at least one of ``modalities``: the posts a fusion model over them scores."""
        has_any = np.stack([self.present[m] for m in modalities], 1).any(1)
        return np.flatnonzero((self.splits == split) & has_any)

    def dataset(self, modalities: list[str], rows: np.ndarray) -> CachedDataset:
        """``rows`` as fusion-model input over ``modalities``."""
        return CachedDataset({m: self.emb[m] for m in modalities}, self.present_matrix(modalities),
                             torch.from_numpy(self.labels.astype(np.int64)), rows)

    def trained_modalities(self, wanted: list[str] | None = None) -> list[str]:
        """Modalities (of ``wanted``) that have embeddings for some training post."""
        train = self.splits == "train"
        return [m for m in (wanted or MODALITIES) if self.present[m][train].any()]


def _decode(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def load_cache(cache_dir: str | Path, modalities: list[str] = MODALITIES) -> Cache:
    """Read the modality files into memory; fail if their ids, labels or splits do not line up."""
    cache_dir = Path(cache_dir)
    ids = labels = splits = None
    emb, present, attrs = {}, {}, {}
    for m in modalities:
        path = cache_dir / f"{m}.h5"
        if not path.exists():
            raise FileNotFoundError(f"embedding cache {path} is missing: run `dvc repro embed_{m}`")
        with h5py.File(path, "r") as f:
            m_ids = _decode(f["id"][:])
            if ids is None:
                ids, labels, splits = m_ids, f["label"][:], np.array(_decode(f["split"][:]))
            elif m_ids != ids:
                first = next((i for i, (a, b) in enumerate(zip(ids, m_ids, strict=False)) if a != b),
                             min(len(ids), len(m_ids)))
                raise ValueError(f"{path}: ids do not line up with {modalities[0]}.h5 (first difference at row "
                                 f"{first}; {len(m_ids)} vs {len(ids)} rows): re-run `dvc repro embed`")
            emb[m] = torch.from_numpy(f["emb"][:])
            present[m] = f["present"][:].astype(bool)
            attrs[m] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.attrs.items()}
            first = attrs[modalities[0]]["labels"]
            if attrs[m]["labels"] != first:
                raise ValueError(f"{path}: the {m} specialist was trained on the classes {attrs[m]['labels']}, but "
                                 f"the {modalities[0]} specialist on {first}: re-run `dvc repro`")
    return Cache(ids or [], labels, splits, emb, present, attrs, list(attrs[modalities[0]]["labels"]))


def cache_info(cache_dir: str | Path) -> str:
    """Human-readable shapes, attributes and per-split counts; raises if the files do not line up."""
    cache = load_cache(cache_dir)
    lines = [f"{len(cache.ids)} posts, ids lined up across {', '.join(MODALITIES)}"]
    for m in MODALITIES:
        e = cache.emb[m]
        per_split = {s: int(cache.present[m][cache.splits == s].sum()) for s in ("train", "val", "test")}
        lines.append(f"{m}.h5: emb {tuple(e.shape)} float32, present {int(cache.present[m].sum())}, "
                     f"per split {per_split}")
        lines += [f"    {k}: {v}" for k, v in cache.attrs[m].items()]
    return "\n".join(lines)


class CachedDataset(Dataset):
    """Rows of cached embeddings for the fusion model, fetched a batch at a time.

    A batch is ``{"emb": {m: [B, D_m]}, "present": [B, M], "label": [B]}``; use
    :meth:`collate` as the DataLoader's ``collate_fn``.
    """

    def __init__(self, emb: dict[str, torch.Tensor], present: torch.Tensor, labels: torch.Tensor,
                 rows: list[int] | np.ndarray):
        self.emb, self.present, self.labels = emb, present, labels
        self.rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> dict:
        r = self.rows[indices]
        return {"emb": {m: e[r] for m, e in self.emb.items()}, "present": self.present[r], "label": self.labels[r]}

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])

    @staticmethod
    def collate(batch: dict) -> dict:
        return batch
