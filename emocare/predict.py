"""Inference on the trained bundle in ``models/``: the Python API behind `emocare predict` and the service.

    from emocare.predict import EmoCare
    model = EmoCare.load("models/")
    model.predict(text="me rn:", image="meme.png")
    # {"label": "joy", "probabilities": {...}, "modalities": ["text", "image"]}

Missing modalities are normal: each post goes through the fusion model with the tokens it has.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emocare.data.datasets import decode_media
from emocare.labels import LABELS
from emocare.models import load_checkpoint
from emocare.models.vision import eval_transform
from emocare.train import autocast, resolve_device, to_device

ImageInput = str | Path | bytes | Image.Image | None
NO_MODALITY = "the post has no usable modality (no text, and no media this model was trained on)"


class EmoCare:
    """The specialists and the fusion model, loaded once."""

    def __init__(self, specialists: dict, fusion, device: torch.device):
        self.specialists, self.fusion, self.device = specialists, fusion, device
        self.transforms = {m: eval_transform(s.preprocess) for m, s in specialists.items() if m != "text"}
        self._lock = threading.Lock()  # one forward pass at a time when shared between threads

    def __getstate__(self) -> dict:  # picklable for a model process (emocare.model_worker): no lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def share_memory(self) -> EmoCare:
        """Move the weights to shared memory, so a child process maps them rather than copying them."""
        for module in (*self.specialists.values(), self.fusion):
            module.share_memory()
        return self

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

    def decode(self, post: dict) -> tuple[dict, dict[str, str]]:
        """(model inputs per modality, {modality: why its media failed to decode}) for one post."""
        inputs, failed = {}, {}
        text = post.get("text") or ""
        if "text" in self.specialists and text.strip():
            inputs["text"] = text
        for m in ("image", "video"):
            if post.get(m) is None or m not in self.specialists:
                continue
            try:
                inputs[m] = decode_media(m, post[m], self.transforms[m], self.specialists[m].frames)
            except Exception as e:  # noqa: BLE001 - any decoder failure becomes the post's error
                failed[m] = f"{m} could not be decoded: {e}"
        return inputs, failed

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

    def score(self, decoded: list[dict]) -> list[dict]:
        """Results (label, probabilities, modalities used) for already decoded posts, in one batch."""
        if not decoded:
            return []
        with self._lock:
            probs = self._score(decoded)
        return [{"label": LABELS[int(p.argmax())],
                 "probabilities": {c: round(float(x), 6) for c, x in zip(LABELS, p, strict=True)},
                 "modalities": [m for m in self.fusion.modalities if m in d]}
                for d, p in zip(decoded, probs, strict=True)]

    def predict_batch(self, posts: list[dict], batch_size: int = 32) -> list[dict]:
        """Predict many posts (dicts with text, image, video); a post that fails gets an ``error`` instead."""
        results: list[dict] = [{} for _ in posts]
        for start in range(0, len(posts), batch_size):
            decoded, ok = [], []
            for i in range(start, min(start + batch_size, len(posts))):
                inputs, failed = self.decode(posts[i])
                if failed or not inputs:
                    results[i] = {"error": next(iter(failed.values()), NO_MODALITY)}
                else:
                    decoded.append(inputs)
                    ok.append(i)
            for i, result in zip(ok, self.score(decoded), strict=True):
                results[i] = result
        return results

    def predict(self, text: str = "", image: ImageInput = None, video: str | Path | None = None) -> dict:
        """Predict one post; raises ValueError when it cannot be decoded."""
        result = self.predict_batch([{"text": text, "image": image, "video": video}])[0]
        if "error" in result:
            raise ValueError(result["error"])
        return result
