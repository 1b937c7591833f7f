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

from emocare.io import file_sha256
from emocare.labels import MODALITIES, LabelSet

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


def label_set(models_dir: str | Path | None) -> LabelSet:
    """The classes to label with: the bundle's in ``models_dir`` when there is one, else params.yaml's (else the
    five)."""
    if models_dir and fusion_path(models_dir).is_file():
        from emocare.models.checkpoint import read_checkpoint  # here: torch loads only when there is a bundle

        return LabelSet.from_payload(read_checkpoint(fusion_path(models_dir)))
    from emocare.params import project_labels

    return project_labels()


def subsets_dir(models_dir: str | Path = MODELS_DIR) -> Path:
    return fusion_dir(models_dir) / "subsets"


def subset_path(subset: list[str], models_dir: str | Path = MODELS_DIR) -> Path:
    """The ablation's fusion model for ``subset``; the all-modalities one is the fusion model itself."""
    if sorted(subset) == sorted(MODALITIES):
        return fusion_path(models_dir)
    return subsets_dir(models_dir) / f"{'+'.join(subset)}.pt"


def training_record(posts: list, cache, manifest: str, posts_path: str | Path) -> dict:
    """What the bundle was trained on, stored in the fusion checkpoint: the manifest, the validated posts file
    (path and SHA-256), how many posts it held and trained on, and how many of those the demo generator made."""
    train_ids = {cache.ids[i] for i in cache.rows("train")}
    train = [p for p in posts if p.id in train_ids]
    return {"manifest": str(manifest), "posts_file": str(posts_path), "sha256": file_sha256(posts_path),
            "posts": len(posts), "train_posts": len(train),
            "synthetic_train_posts": sum(bool(p.meta.get("synthetic")) for p in train)}


def demo_warning(record: dict | None) -> str | None:
    """A warning when most of the bundle's training posts are the synthetic demo set's, else None."""
    if not record or record["synthetic_train_posts"] * 2 <= record["train_posts"]:
        return None
    return (f"warning: these models were trained on EmoCare's synthetic demo set ({record['synthetic_train_posts']} "
            f"of {record['train_posts']} training posts, from {record['manifest']}): on real posts their answers, "
            "however confident, mean nothing. Train on your own labelled posts first (README: Bring your own data).")


def provenance_path(predictions: str | Path) -> Path:
    """Beside a predictions file: the training record of the bundle that wrote it (``<file>.models.json``)."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.name + ".models.json")


NEAR_CHANCE = 0.05  # macro-F1 above chance that an interval's lower end must clear before the figure reassures


def evaluation_record(summary: dict, labelled: int, classes: int) -> dict:
    """What travels with the bundle (in the fusion checkpoint) of its evaluation: the macro-F1 and its 95%
    interval from ``reports/test/summary.json``, how it was measured (held-out test split or cross-validation),
    on how many posts, the labels behind the models, and chance (1 / classes)."""
    kind = summary.get("evaluation", {}).get("kind", "test")
    return {"kind": kind, "macro_f1": round(summary["macro_f1"], 4), "interval": summary["intervals"]["macro_f1"],
            "posts": summary["n"], "labels": int(labelled), "classes": classes, "chance": round(1 / classes, 4)}


def evaluation_line(record: dict | None) -> str | None:
    """The bundle's evaluation in one sentence, or None for a bundle trained before it was recorded."""
    if not record:
        return None
    lo, hi = record["interval"]
    how = (f"{record['posts']} held-out test posts" if record["kind"] == "test" else
           f"{record['posts']} posts by cross-validation (out of fold)")
    return (f"these models' macro-F1 is {record['macro_f1']:.3f} (95% interval {lo:.3f} to {hi:.3f}) on {how}; "
            f"trained on {record['labels']:,} labelled posts, {record['classes']} classes (chance "
            f"{record['chance']:.2f})")


def evaluation_warning(record: dict | None) -> str | None:
    """A warning when the interval's lower end is within :data:`NEAR_CHANCE` of chance, else None."""
    if not record or record["interval"][0] > record["chance"] + NEAR_CHANCE:
        return None
    return (f"warning: the lower end of these models' macro-F1 interval ({record['interval'][0]:.3f}) is near "
            f"chance ({record['chance']:.2f} for {record['classes']} classes): their labels may be little better "
            "than guessing. Label more posts (RESULTS.md's learning curve says what more labels add).")
