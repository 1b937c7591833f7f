"""The HDF5 embedding cache: content, alignment, determinism, atomic writes, `emocare cache info`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TEXT, VISION

from emocare import cache as cache_mod
from emocare.cache import load_cache
from emocare.cli import main as cli
from emocare.data.split import stratified_split
from emocare.data.validate import validate_manifest
from emocare.labels import DEFAULT, MODALITIES
from emocare.models import build_specialist, save_checkpoint
from emocare.pipeline.embed import embed_modality


@pytest.fixture(scope="module")
def embedded(demo_dir: Path, tiny_distilbert: Path, tmp_path_factory) -> tuple[Path, list, dict, dict]:
    out = tmp_path_factory.mktemp("cache")
    posts = validate_manifest(demo_dir / "manifest.jsonl").kept
    split = stratified_split(posts, {"train": 0.8, "val": 0.1, "test": 0.1}, 0)
    ckpts = {}
    for m in MODALITIES:
        cfg = ({"backbone": str(tiny_distilbert), **TEXT} if m == "text" else {**VISION, "frames": 4})
        ckpts[m] = out / f"{m}.pt"
        save_checkpoint(ckpts[m], build_specialist(m, cfg, DEFAULT), backbone=cfg["backbone"], pretrained=m == "text")
        embed_modality(m, ckpts[m], posts, split, out / "embeddings" / f"{m}.h5", batch_size=16, device="cpu")
    return out / "embeddings", posts, split, ckpts


def test_files_hold_aligned_rows_with_attributes(embedded):
    folder, posts, split, _ = embedded
    dims = {"text": 32, "image": 512, "video": 512}
    for m in MODALITIES:
        with h5py.File(folder / f"{m}.h5") as f:
            emb, present = f["emb"][:], f["present"][:]
            assert emb.shape == (len(posts), dims[m]) and emb.dtype == np.float32
            assert present.tolist() == [m in p.modalities for p in posts]
            assert not emb[~present].any() and np.abs(emb[present]).sum(1).min() > 0
            assert [x.decode() for x in f["id"][:]] == [p.id for p in posts]
            assert f["label"][:].tolist() == [DEFAULT.index(p.label) for p in posts]
            assert [x.decode() for x in f["split"][:]] == [split[p.id] for p in posts]
            assert list(f.attrs["labels"]) == list(DEFAULT) and f.attrs["dim"] == dims[m]
            assert f.attrs["modality"] == m and len(f.attrs["checkpoint_sha256"]) == 64
    cache = load_cache(folder)
    assert cache.ids == [p.id for p in posts]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_two_runs_give_identical_bytes(embedded, tmp_path: Path):
    folder, posts, split, ckpts = embedded
    for m in ("text", "video"):
        embed_modality(m, ckpts[m], posts, split, tmp_path / f"{m}.h5", batch_size=16, device="cpu")
        assert _md5(tmp_path / f"{m}.h5") == _md5(folder / f"{m}.h5")


def test_interrupted_write_leaves_no_file(embedded, tmp_path: Path, monkeypatch):
    folder, posts, split, ckpts = embedded
    target = tmp_path / "image.h5"

    def explode(*a, **k):
        raise KeyboardInterrupt("killed midway")

    monkeypatch.setattr(cache_mod.np, "array", explode)  # fails after 'emb' and 'present' were written
    with pytest.raises(KeyboardInterrupt):
        embed_modality("image", ckpts["image"], posts, split, target, batch_size=16, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_misaligned_files_are_refused(embedded, tmp_path: Path):
    folder, posts, split, ckpts = embedded
    for m in MODALITIES:
        (tmp_path / f"{m}.h5").write_bytes((folder / f"{m}.h5").read_bytes())
    embed_modality("video", ckpts["video"], posts[::-1], split, tmp_path / "video.h5", device="cpu")
    with pytest.raises(ValueError, match="do not line up"):
        load_cache(tmp_path)


def test_cache_info_cli(embedded, capsys):
    folder, posts, _, _ = embedded
    assert cli(["cache", "info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"{len(posts)} posts, ids lined up" in out and "image.h5: emb" in out and "checkpoint_sha256" in out
