"""The layout of ``models/``, the trained bundle: the one place that spells its paths.

    models/
    ├── text_specialist/best_model.pt
    ├── image_specialist/best_model.pt
    ├── video_specialist/best_model.pt
    └── fusion/
        ├── best_model.pt            the fusion model (all modalities)
        └── subsets/<a+b>.pt         the ablation's fusion models, one per smaller subset
"""

from __future__ import annotations

from pathlib import Path

from emocare.labels import MODALITIES

MODELS_DIR = "models"
CHECKPOINT = "best_model.pt"


def specialist_dir(modality: str, models_dir: str | Path = MODELS_DIR) -> Path:
    return Path(models_dir) / f"{modality}_specialist"


def specialist_path(modality: str, models_dir: str | Path = MODELS_DIR) -> Path:
    """The ``modality`` specialist's checkpoint."""
    return specialist_dir(modality, models_dir) / CHECKPOINT


def fusion_dir(models_dir: str | Path = MODELS_DIR) -> Path:
    return Path(models_dir) / "fusion"


def fusion_path(models_dir: str | Path = MODELS_DIR) -> Path:
    """The fusion model's checkpoint: what prediction and the service load first."""
    return fusion_dir(models_dir) / CHECKPOINT


def require_bundle(models_dir: str | Path = MODELS_DIR) -> Path:
    """``fusion_path(models_dir)``, or a FileNotFoundError saying how to get one (checked before loading torch)."""
    path = fusion_path(models_dir)
    if not path.exists():
        raise FileNotFoundError(f"no trained models in {models_dir} ({path} is missing): train them with "
                                f"`dvc repro`, or point --models at a trained bundle")
    return path


def subsets_dir(models_dir: str | Path = MODELS_DIR) -> Path:
    return fusion_dir(models_dir) / "subsets"


def subset_path(subset: list[str], models_dir: str | Path = MODELS_DIR) -> Path:
    """The ablation's fusion model for ``subset``; the all-modalities one is the fusion model itself."""
    if sorted(subset) == sorted(MODALITIES):
        return fusion_path(models_dir)
    return subsets_dir(models_dir) / f"{'+'.join(subset)}.pt"
