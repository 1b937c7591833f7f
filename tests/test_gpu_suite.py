"""benchmarks/gpu_suite.py end to end with --smoke on the CPU: the one prepared GPU run must not first fail on a
lent GPU. The slowest test here (a tiny `dvc repro`, embedding, bulk prediction and the service: a minute or two)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_smoke_run_measures_every_part(tmp_path: Path):
    env = {**os.environ, "TQDM_DISABLE": "1", "OUT": str(tmp_path / "out"), "PYTHONPATH": str(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--device", "cpu",
                           "--workdir", str(tmp_path / "work")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_suite.json").read_text())
    assert result["device"] == "cpu" and result["smoke"]
    seed = result["seed"]
    assert {"train_text", "train_image", "train_video", "embed_image", "fusion"} <= set(seed["stages"])
    assert seed["gpu_util_mean_pct"] is None  # no nvidia-smi on a CPU: no figure, not a zero
    assert 0 < sum(s["wall_s"] for s in seed["stages"].values()) <= seed["total_s"]
    embed = result["embed"]
    assert set(embed["image"]["paths"]) == {"decode", "device", "store_cold", "store_warm"}
    assert set(embed["video"]["paths"]) == {"decode_opencv", "decode_pyav", "store_cold", "store_warm"}
    for m in ("image", "video"):
        assert embed[m]["posts"] > 0 and embed[m]["bare_forward_posts_per_s"] > 0
        for name, path in embed[m]["paths"].items():
            assert path["embed_posts_per_s"] > 0 and path["ratio"] > 0, (m, name)
            # every path embeds the same posts to the same features, up to the decoders' stated tolerances
            # (device decoding resizes on tensors: 0.002 measured on the smoke's tiny tower)
            assert path["max_abs_feature_diff_vs_first"] <= (0.05 if name == "device" else 0.0), (m, name)
    predict = result["predict"]
    assert predict["posts"] >= 120 and predict["predict_posts_per_s"] > 0 and predict["embed_posts_per_s"] > 0
    serve = result["serve"]
    assert serve["clients"] == 64 and serve["statuses"] == {"200": serve["requests"]} and serve["requests"] > 0
    assert serve["wrong_or_crossed_answers"] == 0
    table = (tmp_path / "out" / "gpu_rows.md").read_text()
    assert "| **`dvc repro`** |" in table and "| image |" in table and "| video |" in table
    assert "emocare predict --manifest" in table and "emocare serve --device cpu" in table
    assert table.strip() in proc.stdout
