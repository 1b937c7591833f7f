"""Reading ``params.yaml``, the one owner of every tunable value of the pipeline, refusing keys no stage reads."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from emocare.labels import LabelSet


@dataclass
class TrainConfig:
    """The trainer's settings: the ``train`` section (shared) merged with a model's section (its own)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    patience: int
    seed: int
    device: str
    grad_clip: float
    num_workers: int | str

    @classmethod
    def from_params(cls, *sections: dict) -> TrainConfig:
        """Merge sections left to right (later wins) and keep the trainer's keys; a missing one is an error."""
        merged: dict = {}
        for s in sections:
            merged.update(s or {})
        missing = [f.name for f in fields(cls) if f.name not in merged]
        if missing:
            raise ValueError(f"params.yaml: the trainer needs {', '.join(missing)} (in train or the model's section)")
        return cls(**{f.name: merged[f.name] for f in fields(cls)})


SHARED_TRAINER_KEYS = ["seed", "device", "grad_clip", "num_workers"]  # the train section
MODEL_TRAINER_KEYS = [f.name for f in fields(TrainConfig) if f.name not in SHARED_TRAINER_KEYS]
_VISION = ["backbone", "pretrained", "freeze", "dropout", *MODEL_TRAINER_KEYS]
# Every key a stage reads, by section: a misspelt key would otherwise change nothing and say nothing.
KNOWN_KEYS: dict[str, list[str] | None] = {
    "labels": None,  # the classes, checked by emocare.labels.LabelSet
    "label_display": None,
    "label_colours": None,
    "offline": None,
    "frame_store": None,
    "cpu_path": None,
    "data": ["manifest", "root", "max_image_pixels", "allow_unlabelled"],
    "demo": ["posts", "seed"],
    "split": ["train", "val", "test", "seed", "cv_below", "folds", "min_labels", "min_per_class"],
    "train": [*SHARED_TRAINER_KEYS, "regime"],
    "launch": ["nproc", "torchrun_args"],
    "text": ["backbone", "pooling", "max_length", "ocr", "dropout", *MODEL_TRAINER_KEYS],
    "image": [*_VISION, "augment"],
    "video": [*_VISION, "frames"],
    "embed": ["batch_size", "num_workers"],
    "fusion": ["kind", "modality_dropout", "dropout", "d_model", "heads", "hidden", "calibration", *MODEL_TRAINER_KEYS],
    "evaluate": ["errors"],
}
# Keys renamed so that each setting has one name everywhere; an old params.yaml is told what they are now.
RENAMED = {"fusion.hidden_dropout": "fusion.dropout (head dropout, as in text, image and video); the modality "
                                    "dropout that fusion.dropout used to mean is fusion.modality_dropout"}


def check_params(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """``params`` unchanged; a ValueError naming any unknown section or key and listing the known ones."""
    for section, value in params.items():
        if section not in KNOWN_KEYS:
            raise ValueError(f"{source}: unknown section {section!r}; known sections: {', '.join(KNOWN_KEYS)}")
        known = KNOWN_KEYS[section]
        if known is None or value is None:
            continue
        if not isinstance(value, dict):
            raise ValueError(f"{source}: {section} must be a mapping of {', '.join(known)}")
        unknown = [k for k in value if k not in known]
        if unknown:
            key = f"{section}.{unknown[0]}"
            if key in RENAMED:
                raise ValueError(f"{source}: {key} is now {RENAMED[key]}")
            raise ValueError(f"{source}: unknown key {key}; the known keys of {section} are {', '.join(known)}")
    try:
        LabelSet.from_params(params)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return params


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Load and check the pipeline parameters."""
    with open(path, encoding="utf-8") as f:
        return check_params(yaml.safe_load(f) or {}, str(path))


def project_labels(spec: str | None = None, path: str | Path = "params.yaml") -> LabelSet:
    """The classes a command checks labels against: ``spec`` (``a,b,c``) when given, else those of the project's
    ``params.yaml`` (in the working directory), else the five default ones."""
    if spec:
        return LabelSet.of([s.strip() for s in spec.split(",") if s.strip()])
    return LabelSet.from_params(load_params(path)) if Path(path).is_file() else LabelSet.from_params({})


def project_setting(key: str, default: Any, path: str | Path = "params.yaml") -> Any:
    """A top-level setting of the project's ``params.yaml`` (in the working directory), else ``default``:
    what a command run inside the project (predict, label, serve) shares with its pipeline."""
    if not Path(path).is_file():
        return default
    return load_params(path).get(key, default)
