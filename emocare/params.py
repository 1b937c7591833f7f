"""Reading ``params.yaml`` (the single source of every tunable value), refusing keys no stage reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_TRAINER = ["epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "patience"]
_VISION = ["backbone", "pretrained", "dropout", *_TRAINER]
# Every key a stage reads, by section: a misspelt key would otherwise change nothing and say nothing.
KNOWN_KEYS: dict[str, list[str] | None] = {
    "offline": None,
    "frame_store": None,
    "data": ["manifest", "root", "max_image_pixels", "allow_unlabelled"],
    "demo": ["posts", "seed"],
    "split": ["train", "val", "test", "seed"],
    "train": ["seed", "device", "grad_clip", "num_workers"],
    "launch": ["nproc", "torchrun_args"],
    "text": ["backbone", "pooling", "max_length", "dropout", *_TRAINER],
    "image": [*_VISION, "augment"],
    "video": [*_VISION, "frames"],
    "embed": ["batch_size", "num_workers"],
    "fusion": ["kind", "dropout", "hidden_dropout", "d_model", "heads", "hidden", *_TRAINER],
    "evaluate": ["errors"],
}


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
            raise ValueError(f"{source}: unknown key {section}.{unknown[0]}; the known keys of {section} are "
                             f"{', '.join(known)}")
    return params


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Load and check the pipeline parameters."""
    with open(path, encoding="utf-8") as f:
        return check_params(yaml.safe_load(f) or {}, str(path))
