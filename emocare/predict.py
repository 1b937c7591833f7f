"""Inference on the trained bundle in ``models/``: the Python API behind `emocare predict` and the service.

    from emocare.predict import EmoCare
    model = EmoCare.load("models/")
    model.predict(text="me rn:", image="meme.png")
    # {"label": "joy", "probabilities": {...}, "modalities": ["text", "image"]}

Missing modalities are normal: each post goes through the fusion model with the tokens it has.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from emocare.data.datasets import decode_media
from emocare.data.manifest import iter_manifest
from emocare.io import atomic_path
from emocare.labels import LABELS
from emocare.models import load_checkpoint
from emocare.models.vision import eval_transform
from emocare.train import autocast, resolve_device, to_device

ImageInput = str | Path | bytes | Image.Image | None


class EmoCare:
    """The specialists and the fusion model, loaded once."""

    def __init__(self, specialists: dict, fusion, device: torch.device):
        self.specialists, self.fusion, self.device = specialists, fusion, device
        self.transforms = {m: eval_transform(s.preprocess) for m, s in specialists.items() if m != "text"}
        self._lock = threading.Lock()  # one forward pass at a time when shared between threads

    @classmethod
    def load(cls, models_dir: str | Path = "models", device: str = "auto") -> EmoCare:
        """Load ``models_dir/fusion/best_model.pt`` and the specialists it was trained with."""
        models_dir, dev = Path(models_dir), resolve_device(device)
        path = models_dir / "fusion" / "best_model.pt"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: train the models first (`dvc repro`)")
        fusion, _ = load_checkpoint(path, dev)
        specialists = {m: load_checkpoint(models_dir / f"{m}_specialist" / "best_model.pt", dev)[0]
                       for m in fusion.modalities}
        return cls(specialists, fusion, dev)

    @property
    def labels(self) -> list[str]:
        return list(LABELS)

    def _decode(self, post: dict) -> dict:
        """Model inputs per modality for one post; raises ValueError naming what failed."""
        inputs = {}
        text = post.get("text") or ""
        if "text" in self.specialists and text.strip():
            inputs["text"] = text
        for m in ("image", "video"):
            if post.get(m) is None or m not in self.specialists:
                continue
            try:
                inputs[m] = decode_media(m, post[m], self.transforms[m], self.specialists[m].frames)
            except Exception as e:  # noqa: BLE001 - any decoder failure becomes the post's error
                raise ValueError(f"{m} could not be decoded: {e}") from e
        if not inputs:
            raise ValueError("the post has no usable modality (no text, and no media this model was trained on)")
        return inputs

    @torch.inference_mode()
    def _score(self, decoded: list[dict]) -> np.ndarray:
        n = len(decoded)
        mods = self.fusion.modalities
        emb, present = {}, torch.zeros(n, len(mods), dtype=torch.bool)
        for j, m in enumerate(mods):
            model = self.specialists[m]
            rows = [i for i, d in enumerate(decoded) if m in d]
            feats = torch.zeros(n, model.dim)
            if rows:
                items = [(decoded[i][m], -1) for i in rows]
                batch = to_device(model.collate(items), self.device)
                with autocast(self.device):
                    feats[rows] = model.encode(batch).float().cpu()
                present[rows, j] = True
            emb[m] = feats
        batch = to_device({"emb": emb, "present": present}, self.device)
        with autocast(self.device):
            logits = self.fusion(batch).float()
        return torch.softmax(logits, 1).cpu().numpy()

    def predict_batch(self, posts: list[dict], batch_size: int = 32) -> list[dict]:
        """Predict many posts (dicts with text, image, video); a post that fails gets an ``error`` instead."""
        results: list[dict] = [{} for _ in posts]
        for start in range(0, len(posts), batch_size):
            chunk = list(range(start, min(start + batch_size, len(posts))))
            decoded, ok = [], []
            for i in chunk:
                try:
                    decoded.append(self._decode(posts[i]))
                    ok.append(i)
                except ValueError as e:
                    results[i] = {"error": str(e)}
            if ok:
                with self._lock:
                    probs = self._score(decoded)
                for i, d, p in zip(ok, decoded, probs, strict=True):
                    results[i] = {"label": LABELS[int(p.argmax())],
                                  "probabilities": {c: round(float(x), 6) for c, x in zip(LABELS, p, strict=True)},
                                  "modalities": [m for m in self.fusion.modalities if m in d]}
        return results

    def predict(self, text: str = "", image: ImageInput = None, video: str | Path | None = None) -> dict:
        """Predict one post; raises ValueError when it cannot be decoded."""
        result = self.predict_batch([{"text": text, "image": image, "video": video}])[0]
        if "error" in result:
            raise ValueError(result["error"])
        return result


def _iter_manifest(path: Path) -> Iterator[dict]:
    """Stream manifest records with media paths resolved; a bad line becomes a record with an error."""
    for line in iter_manifest(path, strict=False):
        if line.record is None:
            yield {"line": line.line_no, "error": line.error}
            continue
        rec = {**line.record, "line": line.line_no}
        for key in ("image", "video"):
            if rec.get(key):
                rec[key] = str(path.parent / rec[key])
        yield rec


def _chunks(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_manifest(model: EmoCare, manifest: str | Path, out: str | Path, batch_size: int = 32) -> dict:
    """Score a manifest in batches (memory flat) into JSON Lines; failed records carry an ``error``."""
    manifest = Path(manifest)
    with open(manifest, "rb") as f:
        total = sum(1 for line in f if line.strip())
    counts = {"records": 0, "predicted": 0, "errors": 0}
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as w, \
            tqdm(total=total, desc="predict", unit="post") as bar:
        for chunk in _chunks(_iter_manifest(manifest), batch_size):
            todo = [r for r in chunk if "error" not in r]
            results = iter(model.predict_batch(todo, batch_size))
            for rec in chunk:
                result = {"error": rec["error"]} if "error" in rec else next(results)
                row = {"id": rec.get("id"), "line": rec["line"], **result}
                if rec.get("label") is not None:
                    row["true_label"] = rec["label"]
                w.write(json.dumps(row, ensure_ascii=False) + "\n")
                counts["records"] += 1
                counts["errors" if "error" in result else "predicted"] += 1
            bar.update(len(chunk))
    return counts
