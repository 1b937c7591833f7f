"""Distributed training and sharded embedding with torchrun: 2 gloo processes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import TINY_TRAIN, TRAIN, VISION, validated_split

from emocare.io import write_json
from emocare.launch import command
from emocare.pipeline.embed import embed_modality
from emocare.pipeline.specialists import train_specialist

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def workdir(demo_dir: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    validated_split(demo_dir, root)
    params = {"offline": True, "train": TRAIN,
              "image": {**VISION, **TINY_TRAIN, "epochs": 3, "patience": 1, "batch_size": 8}}
    write_json(root / "params.json", params)
    return root


def torchrun(root: Path, mode: str) -> list[dict]:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command(2, "", str(WORKER), [mode, str(root)]), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((root / f"{mode}-rank{r}.json").read_text()) for r in (0, 1)]


def test_two_ranks_take_the_same_decisions_and_write_one_checkpoint(workdir: Path):
    ranks = torchrun(workdir, "train")
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["world_size"] == 2
    for key in ("best_epoch", "epochs_run", "best_val_macro_f1", "best_val_loss"):
        assert ranks[0][key] == ranks[1][key], key
    assert [p.name for p in (workdir / "ddp").iterdir()] == ["best_model.pt"]
    info = json.loads((workdir / "ddp-reports" / "info.json").read_text())
    metrics = json.loads((workdir / "ddp-reports" / "metrics.json").read_text())
    assert info["world_size"] == 2 and metrics["best_epoch"] == info["best_epoch"] == ranks[0]["best_epoch"]


def test_sharded_embedding_equals_the_single_process_cache(workdir: Path):
    from emocare.data.manifest import load_posts
    from emocare.data.split import read_split

    params = json.loads((workdir / "params.json").read_text())
    train_specialist("image", {**params, "image": {**params["image"], "epochs": 1}}, workdir / "posts.jsonl",
                     workdir / "split.json", workdir / "single" / "best_model.pt", workdir / "single-reports")
    embed_modality("image", workdir / "single" / "best_model.pt", load_posts(workdir / "posts.jsonl"),
                   read_split(workdir / "split.json"), workdir / "single-image.h5", batch_size=8, device="cpu")
    ranks = torchrun(workdir, "embed")
    assert ranks[0]["world_size"] == 2
    assert not (workdir / "ddp-image.h5.shards").exists()
    with h5py.File(workdir / "single-image.h5") as a, h5py.File(workdir / "ddp-image.h5") as b:
        for key in ("present", "id", "label", "split"):
            assert (a[key][:] == b[key][:]).all(), key
        np.testing.assert_allclose(a["emb"][:], b["emb"][:], atol=1e-5)
        assert dict(a.attrs).keys() == dict(b.attrs).keys()


def test_launcher_commands():
    assert command(1, "", "s.py", ["text"]) == [sys.executable, "s.py", "text"]
    assert command(2, "", "s.py", ["text"])[1:5] == ["-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node=2"]
    multi = command(4, "--nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=h:29400", "s.py", [])
    assert "--standalone" not in multi and "--nnodes=2" in multi
