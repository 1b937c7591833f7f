"""The whole pipeline through `dvc repro` in a temporary clone, on a tiny demo with tiny settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.pipeline

TINY = {
    "demo": {"posts": 120, "seed": 7},
    "text": {"max_length": 24, "epochs": 2, "batch_size": 16, "warmup_steps": 2, "lr": 1e-3},
    "image": {"epochs": 2, "batch_size": 16, "warmup_steps": 2},
    "video": {"epochs": 2, "batch_size": 8, "warmup_steps": 2, "frames": 4},
    "fusion": {"epochs": 6, "d_model": 32, "hidden": 32, "batch_size": 32, "warmup_steps": 2},
}


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def make_clone(dest: Path, params: dict) -> Path:
    """Copy the tracked and untracked-but-not-ignored files into a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    p = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in params.items():
        if isinstance(values, dict):
            p[section].update(values)
        else:
            p[section] = values
    (dest / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run(dest, "git", "init", "-q")
    run(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    run(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return dest


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def clone(tmp_path_factory, tiny_distilbert: Path) -> Path:
    params = {**TINY, "text": {**TINY["text"], "backbone": str(tiny_distilbert)}}
    dest = make_clone(tmp_path_factory.mktemp("clone"), params)
    out = dvc(dest, "repro").stdout
    assert {"demo_data", "validate", "split", "train@text", "embed@video", "train_fusion", "evaluate", "ablation",
            "report"} <= stages_run(out)
    run(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    run(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    return dest


def _json(path: Path):
    return json.loads(path.read_text())


def test_outputs_are_complete_and_consistent(clone: Path):
    r = clone / "reports"
    validation, stats = _json(r / "data" / "validation.json"), _json(r / "data" / "stats.json")
    assert validation["read"] == validation["kept"] + validation["quarantined"] == 120
    test = _json(r / "test" / "metrics.json")
    assert test["test_posts"] == stats["splits"]["test"]["count"] == test["n"] + test["unscored_posts"]
    confusion = (r / "test" / "confusion.csv").read_text().strip().splitlines()
    assert len(confusion) - 1 == test["n"]
    for m in ("text", "image", "video"):
        metrics = _json(r / m / "metrics.json")
        assert metrics["no_data"] is False and metrics["pretrained"] is (m == "text")
        assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 2
        assert (clone / "models" / f"{m}_specialist" / "best_model.pt").exists()
    ablation = _json(r / "ablation.json")["rows"]
    assert sum(x["mode"] == "masked" for x in ablation) == 7 == sum(x["mode"] == "retrained" for x in ablation)
    results = (r / "RESULTS.md").read_text()
    assert "TBD" not in results and "n/a" not in results.split("## 6.")[0]
    assert f"**Test macro-F1: {test['macro_f1']:.4f}**" in results
    assert "NOT pretrained" in results
    assert (r / "test" / "confusion.png").stat().st_size > 0 and (r / "ablation.png").stat().st_size > 0
    shown = dvc(clone, "metrics", "show", "--json").stdout
    assert "reports/fusion/metrics.json" in shown and "reports/test/metrics.json" in shown


def test_fusion_experiment_reruns_only_fusion_and_dependants(clone: Path):
    status = dvc(clone, "status").stdout
    assert "up to date" in status.lower() or status.strip() == ""
    out = dvc(clone, "exp", "run", "-S", "fusion.dropout=0.1").stdout
    ran = stages_run(out)
    assert "train_fusion" in ran
    assert not any(s.startswith(("train@", "embed@", "demo", "validate", "split")) for s in ran)
    diff = _json_from(dvc(clone, "metrics", "diff", "--json").stdout)
    assert "reports/fusion/metrics.json" in diff


def test_specialist_param_change_re_embeds_only_that_modality(clone: Path):
    """Runs after the fusion experiment: retrain the image specialist, then only embed@image is stale."""
    params = clone / "params.yaml"
    p = yaml.safe_load(params.read_text())
    p["image"]["lr"] = 1e-5
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    assert "train@image" in dvc(clone, "status").stdout
    dvc(clone, "repro", "--single-item", "train@image")
    status = dvc(clone, "status").stdout
    assert "embed@image" in status
    assert "embed@text" not in status and "embed@video" not in status and "train@text" not in status


def _json_from(text: str) -> dict:
    return json.loads(text[text.index("{"):])


def test_text_only_dataset_runs_through_the_whole_pipeline(tmp_path: Path, tiny_distilbert: Path, demo_dir: Path):
    data = tmp_path / "textonly"
    data.mkdir()
    lines = [json.loads(x) for x in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    for rec in lines:
        rec.pop("image", None)
        rec.pop("video", None)
    (data / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    params = {**TINY, "text": {**TINY["text"], "backbone": str(tiny_distilbert)},
              "data": {"manifest": str(data / "manifest.jsonl"), "root": str(data)}}
    clone = make_clone(tmp_path / "clone", params)
    dvc(clone, "repro")
    r = clone / "reports"
    assert _json(r / "image" / "metrics.json")["no_data"] is True
    assert _json(r / "video" / "metrics.json")["no_data"] is True
    assert _json(r / "fusion" / "metrics.json")["modalities"] == ["text"]
    ablation = {(x["subset"], x["mode"]): x for x in _json(r / "ablation.json")["rows"]}
    assert ablation[("image", "masked")]["n"] == 0 and ablation[("text", "retrained")]["n"] > 0
    assert "No data" in (r / "RESULTS.md").read_text()
