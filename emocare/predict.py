"""Inference on the trained bundle in ``models/``: the Python API behind `emocare predict` and the service.

    from emocare.predict import EmoCare
    model = EmoCare.load("models/")
    model.predict(text="me rn:", image="meme.png")
    # {"label": "joy", "probabilities": {...}, "modalities": ["text", "image"],
    #  "attribution": {"text": 0.41, "image": 0.07}}
    # (and "ocr_text", the text read from the media, when the text specialist was trained with text.ocr)

The probabilities are calibrated (:mod:`emocare.calibration`). ``attribution`` says how much the predicted
class's probability falls when each modality is hidden (a post with one modality has none). With
``min_confidence``, a post whose top probability is below it gets the label ``uncertain``.

Missing modalities are normal: each post goes through the fusion model with the tokens it has.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emocare.bundle import (
    MODELS_DIR,
    demo_warning,
    evaluation_line,
    evaluation_warning,
    require_bundle,
    specialist_path,
)
from emocare.labels import LabelSet
from emocare.media.feature_store import FeatureStore, tower_store
from emocare.media.ocr import media_text, with_ocr
from emocare.models import load_checkpoint
from emocare.models.cpu_paths import use_cpu_path
from emocare.params import project_setting
from emocare.runtime import resolve_device
from emocare.scoring import attribution, attribution_record, features

ImageInput = str | Path | bytes | Image.Image | None
NO_MODALITY = "the post has no usable modality (no text, and no media this model was trained on)"
UNCERTAIN = "uncertain"  # the label of a prediction less confident than min_confidence
PROJECT = object()  # EmoCare.load's frame_store default: the project's params.yaml value


class EmoCare:
    """The specialists and the fusion model, loaded once."""

    def __init__(self, specialists: dict, fusion, device: torch.device, label_set: LabelSet,
                 training_data: dict | None = None, validation: dict | None = None, evaluation: dict | None = None,
                 feature_stores: dict[str, FeatureStore] | None = None):
        self.specialists, self.fusion, self.device, self.label_set = specialists, fusion, device, label_set
        self.training_data = training_data  # emocare.bundle.training_record: what the bundle was trained on
        self.validation = validation  # emocare.quantify.validation_stats, for the trends' adjusted estimators
        self.evaluation = evaluation  # emocare.bundle.evaluation_record: the bundle's macro-F1, interval, labels
        # frozen vision towers' features per media file, shared with training and embedding (computed once)
        self.feature_stores = feature_stores or {}
        self._lock = threading.Lock()  # one forward pass at a time when shared between threads

    def __getstate__(self) -> dict:  # picklable for a model process (emocare.serving.worker): no lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def share_memory(self) -> EmoCare:
        """Move the weights to shared memory, so a child process maps them rather than copying them."""
        for module in (*self.specialists.values(), self.fusion):
            module.share_memory()
        return self

    @classmethod
    def load(cls, models_dir: str | Path = MODELS_DIR, device: str = "auto", cpu_path: str | None = None,
             frame_store: str | Path | None = PROJECT) -> EmoCare:
        """Load the bundle's fusion model and the specialists it was trained with (layout: :mod:`emocare.bundle`).

        ``cpu_path`` (:mod:`emocare.models.cpu_paths`; None: the project's ``params.yaml`` value, else ``auto``)
        says how the encoders run on a CPU. A frozen vision tower's features are read from, and written to,
        the feature store beside ``frame_store`` (by default the project's ``frame_store``; None: no store).
        """
        dev = resolve_device(device)
        cpu_path = cpu_path or project_setting("cpu_path", "auto")
        if frame_store is PROJECT:
            frame_store = project_setting("frame_store", None)
        fusion, payload = load_checkpoint(require_bundle(models_dir), dev)
        label_set = LabelSet.from_payload(payload)
        specialists = {m: load_checkpoint(specialist_path(m, models_dir), dev)[0] for m in fusion.modalities}
        stores = {}
        for m, model in specialists.items():
            label_set.require_same(model.labels, f"the {m} specialist ({specialist_path(m, models_dir)})",
                                   "the fusion model")
            use_cpu_path(model, cpu_path, dev)
            if frame_store and getattr(model, "frozen", False):
                stores[m] = tower_store(model, frame_store)
        return cls(specialists, fusion, dev, label_set, payload.get("training_data"), payload.get("validation"),
                   payload.get("evaluation"), stores)

    @property
    def cpu_paths(self) -> dict[str, str]:
        """The path each specialist's encoder runs on (:mod:`emocare.models.cpu_paths`)."""
        return {m: getattr(model.fast, "name", "fp32") for m, model in self.specialists.items()}

    @property
    def demo_warning(self) -> str | None:
        """A warning to show when the bundle was trained on the synthetic demo set."""
        return demo_warning(self.training_data)

    @property
    def notices(self) -> list[str]:
        """What to tell whoever reads this bundle's answers: the demo warning, how well it was measured to do
        (macro-F1 with its interval and the labels behind it) and a warning when that is near chance."""
        return [n for n in (self.demo_warning, evaluation_line(self.evaluation), evaluation_warning(self.evaluation))
                if n]

    @property
    def labels(self) -> list[str]:
        """The bundle's classes, in the order of its outputs."""
        return list(self.label_set)

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
                stored = self.stored_features(m, post[m])
                inputs[m] = self.specialists[m].decode(post[m]) if stored is None else stored
                if stored is None and m in self.feature_stores and isinstance(post[m], str | Path):
                    inputs.setdefault("sources", {})[m] = post[m]  # to keep its features once computed
            except Exception as e:  # noqa: BLE001 - any decoder failure becomes the post's error
                failed[m] = f"{m} could not be decoded: {e}"
        if "text" in inputs and self.specialists["text"].ocr:  # as in training: the text in its media follows
            media = next((m for m in ("image", "video") if post.get(m) is not None and m not in failed), None)
            inputs["ocr_text"] = media_text(post[media], media) if media else ""
            inputs["text"] = with_ocr(text, inputs["ocr_text"])
        return inputs, failed

    def stored_features(self, modality: str, source) -> torch.Tensor | None:
        """The feature store's features [dim] of a media file, when a store is kept and holds them."""
        store = self.feature_stores.get(modality)
        if store is None or not isinstance(source, str | Path):
            return None
        try:
            found = store.get(source)
        except OSError:  # the file is missing or unreadable: decoding says so
            return None
        return None if found is None else torch.from_numpy(found)

    def _score(self, decoded: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        n = len(decoded)
        mods = self.fusion.modalities
        emb, present = {}, torch.zeros(n, len(mods), dtype=torch.bool)
        for j, m in enumerate(mods):
            model = self.specialists[m]
            rows = [i for i, d in enumerate(decoded) if m in d]
            emb[m] = torch.zeros(n, model.dim)
            present[rows, j] = True
            # a vision post's features may come from the store already: run the tower on the others only
            todo = [i for i in rows if m == "text" or decoded[i][m].dim() > 1]
            stored = [i for i in rows if i not in set(todo)]
            if stored:
                emb[m][stored] = torch.stack([decoded[i][m] for i in stored])
            if todo:
                emb[m][todo] = features(model, model.collate([(decoded[i][m], -1) for i in todo]), self.device)
                self._keep_features(m, [decoded[i] for i in todo], emb[m][todo])
        return attribution(self.fusion, emb, present, self.device)

    def _keep_features(self, modality: str, decoded: list[dict], feats: torch.Tensor) -> None:
        """Write computed tower features to the feature store, for the media files they came from."""
        store = self.feature_stores.get(modality)
        if store is None:
            return
        for d, f in zip(decoded, feats, strict=True):
            source = d.get("sources", {}).get(modality)
            if source is not None:
                store.put(source, f.numpy())

    def score(self, decoded: list[dict], min_confidence: float = 0.0) -> list[dict]:
        """Results (label, probabilities, modalities used, attribution) for already decoded posts, in one batch."""
        if not decoded:
            return []
        with self._lock:
            probs, attr = self._score(decoded)
        names, mods = self.label_set.names, self.fusion.modalities
        return [{"label": names[int(p.argmax())] if p.max() >= min_confidence else UNCERTAIN,
                 "probabilities": {c: round(float(x), 6) for c, x in zip(names, p, strict=True)},
                 "modalities": [m for m in mods if m in d],
                 "attribution": attribution_record(mods, a),
                 **({"ocr_text": d["ocr_text"]} if "ocr_text" in d else {})}
                for d, p, a in zip(decoded, probs, attr, strict=True)]

    def predict_batch(self, posts: list[dict], batch_size: int = 32, min_confidence: float = 0.0) -> list[dict]:
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
            for i, result in zip(ok, self.score(decoded, min_confidence), strict=True):
                results[i] = result
        return results

    def predict(self, text: str = "", image: ImageInput = None, video: str | Path | None = None,
                min_confidence: float = 0.0) -> dict:
        """Predict one post; raises ValueError when it cannot be decoded."""
        result = self.predict_batch([{"text": text, "image": image, "video": video}], 32, min_confidence)[0]
        if "error" in result:
            raise ValueError(result["error"])
        return result
