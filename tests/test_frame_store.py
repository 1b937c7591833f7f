"""The decoded-frames store: the same pixels as decoding every time (as uint8, normalised by the model),
decoded once, never stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emocare.data import specialist_dataset
from emocare.data.validate import validate_manifest
from emocare.labels import DEFAULT
from emocare.media import frame_store as store_mod
from emocare.media.decoding import decode_media
from emocare.media.frame_store import FrameStore
from emocare.media.video import read_frames, write_video
from emocare.models import build_specialist
from emocare.models.checkpoint import save_checkpoint
from emocare.pipeline.embed import embed_modality
from emocare.transforms import eval_transform

VISION = {"backbone": "EmoCare-ViT-Tiny-64", "dropout": 0.3, "frames": 4}


@pytest.fixture(scope="module")
def posts(demo_dir: Path) -> list:
    return validate_manifest(demo_dir / "manifest.jsonl").kept


@pytest.fixture(scope="module")
def models() -> dict:
    return {m: build_specialist(m, VISION, DEFAULT) for m in ("image", "video")}


def media(posts: list, modality: str, n: int = 4) -> list[str]:
    return [getattr(p, modality) for p in posts if getattr(p, modality)][:n]


@pytest.mark.parametrize("modality", ["image", "video"])
def test_stored_pixels_equal_decoding_every_time(modality: str, posts, models, tmp_path: Path, monkeypatch):
    model = models[modality]
    tf = eval_transform(model.preprocess)
    store = FrameStore(tmp_path, modality, tf, model.frames)
    files = media(posts, modality)
    decoded = [decode_media(modality, f, tf, model.frames) for f in files]
    first = [store.pixels(f) for f in files]  # decoded and written
    assert len(list(tmp_path.rglob("*.npy"))) == len(files)
    monkeypatch.setattr(store_mod, "read_frames", lambda *a: pytest.fail("a stored video was decoded again"))
    monkeypatch.setattr(store_mod, "load_image", lambda *a: pytest.fail("a stored image was decoded again"))
    again = [FrameStore(tmp_path, modality, tf, model.frames).pixels(f) for f in files]  # a new reader: read back
    for d, a, b in zip(decoded, first, again, strict=True):
        assert d.shape == a.shape and a.dtype == torch.uint8  # shipped as uint8, a quarter of the bytes
        # normalised on the model's device: bit-identical to the transform's floats, not merely close
        assert torch.equal(d, model.normalize(a)) and torch.equal(a, b)
    entry = np.load(next(tmp_path.rglob("*.npy")))
    assert entry.dtype == np.uint8 and entry.shape == (model.frames if modality == "video" else 1, 64, 64, 3)


@pytest.mark.parametrize("modality", ["image", "video"])
def test_decoded_posts_travel_as_uint8_and_encode_to_the_transforms_features(modality: str, posts, models):
    """What prediction and bulk decode (in DataLoader workers): uint8 pixels, normalised by ``encode`` in a batch
    to exactly the transform's floats, so the features are those of decoding to floats."""
    model = models[modality].eval()
    tf = eval_transform(model.preprocess)
    files = media(posts, modality, 2)
    pixels = [model.decode(f) for f in files]
    floats = torch.stack([decode_media(modality, f, tf, model.frames) for f in files])
    assert all(p.dtype == torch.uint8 for p in pixels)
    assert torch.equal(model.normalize(torch.stack(pixels)), floats)
    with torch.no_grad():
        assert torch.equal(model.encode({"pixels": torch.stack(pixels)}), model.encode({"pixels": floats}))


def test_a_changed_file_or_frame_count_is_never_read_stale(posts, models, tmp_path: Path):
    model = models["video"]
    tf = eval_transform(model.preprocess)
    clip = tmp_path / "clip.mp4"
    shutil.copy(media(posts, "video", 1)[0], clip)
    store = FrameStore(tmp_path / "store", "video", tf, 4)
    before = store.pixels(clip)
    write_video(clip, [255 - f for f in read_frames(clip, 12)])  # new content at the same path
    after = store.pixels(clip)
    assert torch.equal(model.normalize(after), decode_media("video", clip, tf, 4)) and not torch.equal(before, after)
    assert FrameStore(tmp_path / "store", "video", tf, 2).pixels(clip).shape[0] == 2
    assert len(list((tmp_path / "store").rglob("*.npy"))) == 3


def test_an_unreadable_entry_is_decoded_again(posts, models, tmp_path: Path):
    model = models["image"]
    tf = eval_transform(model.preprocess)
    store = FrameStore(tmp_path, "image", tf)
    image = media(posts, "image", 1)[0]
    good = store.pixels(image)
    store.path(image).write_bytes(b"not an array")  # e.g. a disk that filled up under another tool
    assert torch.equal(store.pixels(image), good)


def test_datasets_use_the_store_except_for_augmented_images(posts, models, tmp_path: Path):
    video = [p for p in posts if p.video][:3]
    images = [p for p in posts if p.image][:3]
    plain = specialist_dataset(models["video"], video, train=True)
    stored = specialist_dataset(models["video"], video, train=True, frame_store=tmp_path)
    assert stored.store is not None
    assert all(torch.equal(plain[i][0], models["video"].normalize(stored[i][0])) for i in range(3))
    assert specialist_dataset(models["image"], images, frame_store=tmp_path).store is not None
    assert specialist_dataset(models["image"], images, train=True, frame_store=tmp_path).store is None
    assert specialist_dataset(models["image"], images, train=True, augment=False, frame_store=tmp_path).store


def test_embed_stage_gives_the_same_cache_with_the_store(posts, models, tmp_path: Path):
    split = {p.id: "train" for p in posts}
    save_checkpoint(tmp_path / "video.pt", models["video"], backbone=VISION["backbone"], pretrained=False)
    for name, store in (("plain", None), ("cold", tmp_path / "frames"), ("warm", tmp_path / "frames")):
        embed_modality("video", tmp_path / "video.pt", posts, split, tmp_path / f"{name}.h5", batch_size=8,
                       num_workers=0, device="cpu", frame_store=store)
    import h5py

    with h5py.File(tmp_path / "plain.h5") as a, h5py.File(tmp_path / "cold.h5") as b, \
            h5py.File(tmp_path / "warm.h5") as c:
        assert np.array_equal(a["emb"][:], b["emb"][:]) and np.array_equal(a["emb"][:], c["emb"][:])
    assert len(list((tmp_path / "frames").rglob("*.npy"))) == sum(bool(p.video) for p in posts)
