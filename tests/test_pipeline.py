"""The whole pipeline through `dvc repro` in a temporary clone, on a tiny demo with tiny settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO

from emocare.models.checkpoint import read_checkpoint

pytestmark = pytest.mark.pipeline

TINY = {
    "demo": {"posts": 120, "seed": 7},
    "split": {"min_per_class": 2},  # these 120-post sets have classes of 2 to 9 posts, below the guard's default
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
    assert {"demo_data", "validate", "split", "train_text", "embed_video", "fusion", "report"} <= stages_run(out)
    run(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    run(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    return dest


def _json(path: Path):
    return json.loads(path.read_text())


def _leaves(d) -> int:
    return sum(_leaves(v) for v in d.values()) if isinstance(d, dict) else 1


def test_outputs_are_complete_and_consistent(clone: Path):
    r = clone / "reports"
    validation, stats = _json(r / "data" / "validation.json"), _json(r / "data" / "stats.json")
    assert validation["read"] == validation["kept"] + validation["quarantined"] == 120
    test = _json(r / "test" / "summary.json")
    # cross-validation (every specialist frozen, 120 labels): every labelled post is scored, out of fold
    assert test["test_posts"] == validation["kept"] == test["n"] + test["unscored_posts"]
    headline = _json(r / "metrics.json")
    assert headline["test"] == {**{k: test[k] for k in ("macro_f1", "weighted_f1", "accuracy")},
                                "macro_f1_low": test["intervals"]["macro_f1"][0],
                                "macro_f1_high": test["intervals"]["macro_f1"][1],
                                "ece": test["calibration"]["ece_after"],
                                "ece_uncalibrated": test["calibration"]["ece_before"]}
    assert set(headline) == {"test", "by_modalities", "specialist_alone", "ablation"}
    confusion = (r / "test" / "confusion.csv").read_text().strip().splitlines()
    assert len(confusion) - 1 == test["n"]
    trained_on = read_checkpoint(clone / "models" / "fusion" / "best_model.pt")["training_data"]
    assert trained_on["posts"] == validation["kept"] and trained_on["manifest"] == "data/demo/manifest.jsonl"
    # under cross-validation the final models train on every labelled post
    assert trained_on["train_posts"] == validation["kept"] == trained_on["synthetic_train_posts"]
    for m in ("text", "image", "video", "fusion"):
        assert set(_json(r / m / "metrics.json")) == {"best_val_macro_f1", "best_epoch"}  # decisions only
    for m in ("text", "image", "video"):
        info = _json(r / m / "info.json")
        assert info["no_data"] is False and info["pretrained"] is True and info["precision"] == "fp32"
        assert info["frozen"] is True  # EfficientNet-Lite0 frozen; text tuned by setfit (auto, few labels), then frozen
        assert 1 <= info["best_epoch"] <= info["epochs_run"] <= 2
        assert (clone / "models" / f"{m}_specialist" / "best_model.pt").exists()
    ablation = _json(r / "ablation.json")["rows"]
    assert sum(x["mode"] == "masked" for x in ablation) == 7 == sum(x["mode"] == "retrained" for x in ablation)
    results = (r / "RESULTS.md").read_text()
    assert "TBD" not in results and "n/a" not in results.split("## 6.")[0]
    low, high = test["intervals"]["macro_f1"]
    assert low <= test["macro_f1"] <= high
    assert f"**Out-of-fold macro-F1: {test['macro_f1']:.4f} [{low:.4f}, {high:.4f}]**" in results
    text = _json(r / "text" / "info.json")
    assert text["regime"] == "setfit" and text["regime_requested"] == "auto" and text["train_labels"] < 800
    # cross-validated: the final encoder tuned on every label, each fold's features by an encoder tuned without it
    assert text["setfit_labels"] == validation["kept"] and text["cross_fitted"]["posts"] == validation["kept"]
    with np.load(clone / "cache" / "folds" / "text.npz") as folds:
        assert folds["features"].shape[:2] == (text["cross_fitted"]["folds"], validation["kept"])
    assert "setfit" in test["evaluation"]["why"] or "tuned without it" in test["evaluation"]["why"]
    assert _json(r / "fusion" / "info.json")["kind"] == "linear"  # fusion.kind auto, few training posts
    # 120 labels and every specialist frozen: k-fold cross-validation, the final models trained on every label
    assert stats["evaluation"]["kind"] == "cv" and test["evaluation"]["kind"] == "cv"
    baselines = _json(r / "baselines.json")["baselines"]
    assert {v["n"] for v in baselines.values()} == {test["n"]}
    assert "| majority class" in results and "| TF-IDF word 1-2-grams" in results
    curve = _json(r / "learning_curve.json")
    assert [p["share"] for p in curve["points"]] == [0.25, 0.5, 1.0]
    assert (r / "learning_curve.png").stat().st_size > 0 and "## 7. Learning Curve" in results
    assert read_checkpoint(clone / "models" / "fusion" / "best_model.pt")["evaluation"]["interval"] == [low, high]
    assert "NOT pretrained" not in results and results.count("- Backbone frozen") == 3
    assert (r / "test" / "confusion.png").stat().st_size > 0 and (r / "ablation.png").stat().st_size > 0
    shown = _json_from(dvc(clone, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert set(files) == {f"reports/{m}/metrics.json" for m in ("text", "image", "video", "fusion")} | \
        {"reports/metrics.json"}
    assert sum(_leaves(v["data"]) for v in files.values()) <= 25  # a readable `dvc exp show`
    header = dvc(clone, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    metric_columns = header[header.index("parent") + 1:]  # metrics come first, then params and deps
    assert "test.macro_f1" in metric_columns[:5], metric_columns[:8]
    errors = (r / "test" / "errors.jsonl").read_text().splitlines()
    media = [m for e in map(json.loads, errors) for m in (e["image"], e["video"]) if m]
    assert all(m.startswith("data/") and (clone / m).is_file() for m in media)  # the same in any checkout
    assert (r / "test" / "errors.html").read_text().count('class="card"') == len(errors) > 0
    assert "[the error gallery](test/errors.html)" in results


def test_fusion_experiment_reruns_only_fusion_and_dependants(clone: Path):
    status = dvc(clone, "status").stdout
    assert "up to date" in status.lower() or status.strip() == ""
    # on the tiny set (12 test posts) a small change may move no number at all: a large one must (the attention
    # kind: fusion.kind auto fits the linear kind here, which has no learning rate)
    out = dvc(clone, "exp", "run", "-S", "fusion.kind=attention", "-S", "fusion.lr=0.5").stdout
    ran = stages_run(out)
    assert ran == {"fusion", "report"}
    diff = _json_from(dvc(clone, "metrics", "diff", "--json").stdout)
    assert set(diff) <= {"reports/fusion/metrics.json", "reports/metrics.json"} and diff  # only fusion and test


def test_rerun_with_unchanged_inputs_changes_no_metric(clone: Path):
    """Runs after the fusion experiment (applied in the workspace): forced reruns give the same numbers."""
    run(clone, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "experiment")
    dvc(clone, "repro", "--force", "--downstream", "fusion")
    assert dvc(clone, "metrics", "diff").stdout.strip() == ""


@pytest.mark.browser
def test_plots_and_gallery_open_offline(clone: Path, tmp_path: Path):
    from browser import dom, not_blank, screenshot

    out = tmp_path / "plots"
    dvc(clone, "plots", "show", "-o", str(out))
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src=" not in page  # vega, vega-lite, vega-embed inline
    html = dom(out / "index.html", wait_ms=5000)
    charts = len(re.findall(r'class="vega-embed', html))
    assert charts >= 6 and len(re.findall(r"<canvas|<svg", html)) >= charts  # curves x4, confusion, ablation
    assert not_blank(screenshot(out / "index.html", tmp_path / "plots.png", size=(1400, 2400), wait_ms=5000))
    ablation = _json_from(dvc(clone, "plots", "show", "--json", "reports/ablation.csv").stdout)
    spec = ablation["data"]["reports/ablation.csv"][0]["content"]
    rows = {(r["subset"], r["mode"]) for r in spec["data"]["values"]}
    assert len(rows) == 14 == len(spec["data"]["values"])  # 7 subsets x (masked, retrained), one bar each
    x = spec["encoding"]["x"]
    assert x["stack"] is None and x["scale"]["domain"] == [0, 1] and spec["encoding"]["yOffset"]["field"] == "series"
    gallery = clone / "reports" / "test" / "errors.html"
    cards = len((clone / "reports" / "test" / "errors.jsonl").read_text().splitlines())
    assert dom(gallery).count('class="card"') == cards
    assert not_blank(screenshot(gallery, tmp_path / "gallery.png", size=(1200, 900)))


def test_specialist_param_change_re_embeds_only_that_modality(clone: Path):
    """Runs after the fusion experiment: retrain the image specialist, then only embed_image is stale."""
    params = clone / "params.yaml"
    p = yaml.safe_load(params.read_text())
    p["image"]["lr"] = 1e-5
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    assert "train_image" in dvc(clone, "status").stdout
    dvc(clone, "repro", "--single-item", "train_image")
    status = dvc(clone, "status").stdout
    assert "embed_image" in status
    assert "embed_text" not in status and "embed_video" not in status and "train_text" not in status


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
    assert _json(r / "image" / "info.json")["no_data"] is True
    assert _json(r / "video" / "info.json")["no_data"] is True
    assert _json(r / "fusion" / "info.json")["modalities"] == ["text"]
    ablation = {(x["subset"], x["mode"]): x for x in _json(r / "ablation.json")["rows"]}
    assert ablation[("image", "masked")]["n"] == 0 and ablation[("text", "retrained")]["n"] > 0
    assert "No data" in (r / "RESULTS.md").read_text()


SEVEN = ["neutral", "joy", "anger", "surprise", "sadness", "fear", "disgust"]  # GoEmotions' Ekman grouping


def _relabelled(demo_dir: Path, folder: Path, relabel) -> Path:
    """The demo posts with their media copied under ``folder`` (data.root) and labels ``relabel(i, label)``."""
    shutil.copytree(demo_dir / "media", folder / "media")
    lines = [json.loads(x) for x in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    for i, rec in enumerate(lines):
        rec["label"] = relabel(i, rec["label"])
    (folder / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder / "manifest.jsonl"


def _own_labels_clone(tmp_path: Path, tiny_distilbert: Path, demo_dir: Path, labels: list[str], relabel) -> Path:
    manifest = _relabelled(demo_dir, tmp_path / "data", relabel)
    params = {**TINY, "text": {**TINY["text"], "backbone": str(tiny_distilbert)}, "labels": labels,
              "data": {"manifest": str(manifest), "root": str(manifest.parent)}}
    clone = make_clone(tmp_path / "clone", params)
    dvc(clone, "repro")
    return clone


def test_seven_classes_from_params_reach_every_part(tmp_path: Path, tiny_distilbert: Path, demo_dir: Path,
                                                     capsys):
    """labels: seven classes in params.yaml, one line; data labelled in them (any case) -> dvc repro -> every
    part follows, and a changed label set re-runs exactly the stages that declare it."""
    import httpx
    import pyarrow.parquet as pq
    from test_serve import start_server

    from emocare.cli import main as cli

    clone = _own_labels_clone(tmp_path, tiny_distilbert, demo_dir, SEVEN,
                              lambda i, label: "Fear" if i % 6 == 0 else "disgust" if i % 6 == 3 else label)
    r = clone / "reports"
    assert _json(r / "data" / "validation.json")["kept"] == 120
    assert list(_json(r / "data" / "stats.json")["classes"]) == SEVEN
    for m in ("text", "image", "video"):
        ckpt = read_checkpoint(clone / "models" / f"{m}_specialist" / "best_model.pt")
        assert ckpt["labels"] == SEVEN and ckpt["state_dict"]["head.weight"].shape[0] == 7
        info = _json(r / m / "info.json")
        assert info["no_data"] or list(info["class_weights"]) == SEVEN  # a modality may have no val posts here
    fusion = read_checkpoint(clone / "models" / "fusion" / "best_model.pt")
    assert fusion["label_set"]["names"] == SEVEN and fusion["label_set"]["display"]["neutral"] == "Neutral/Other"
    assert len(set(fusion["label_set"]["colours"].values())) == 7  # a colour of its own for each class
    test = _json(r / "test" / "summary.json")
    assert list(test["per_class_f1"]) == SEVEN and list(_json(r / "test" / "classification_report.json"))[:7] == SEVEN
    results = (r / "RESULTS.md").read_text()
    assert "- Fear: " in results and "- Disgust: " in results and "Linear(32 → 7)" in results
    gallery = (r / "test" / "errors.html").read_text()
    assert all(f'<option value="{c}">' in gallery for c in SEVEN)

    posts = clone / "data" / "posts.jsonl"
    assert cli(["predict", "--models", str(clone / "models"), "--device", "cpu", "--manifest", str(posts),
                "-o", str(tmp_path / "p.parquet"), "--workers", "0"]) == 0
    capsys.readouterr()
    table = pq.read_table(tmp_path / "p.parquet")
    assert [f.name for f in table.schema.field("probabilities").type] == SEVEN and table.num_rows == 120
    proc, url = start_server(clone / "models", tmp_path)
    try:
        assert [x["name"] for x in httpx.get(f"{url}/labels").json()["labels"]] == SEVEN
        answer = httpx.post(f"{url}/predict", json={"text": "so scared right now"}, timeout=30).json()
        assert list(answer["probabilities"]) == SEVEN and answer["label"] in SEVEN
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    params = clone / "params.yaml"
    p = yaml.safe_load(params.read_text())
    p["labels"] = SEVEN[:-1]  # without disgust
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    status = dvc(clone, "status").stdout
    stale = {s.rstrip(":") for s in re.findall(r"^(\w+):", status, re.M)}
    assert stale == {"validate", "split", "train_text", "train_image", "train_video", "baselines", "fusion", "report"}
    single = dvc(clone, "repro", "--single-item", "fusion", check=False)  # the old caches, the new labels
    assert single.returncode != 0
    assert f"has the classes {SEVEN}, but params.yaml's labels has {SEVEN[:-1]}" in single.stdout + single.stderr


def test_two_classes_run_through_the_whole_pipeline(tmp_path: Path, tiny_distilbert: Path, demo_dir: Path):
    clone = _own_labels_clone(tmp_path, tiny_distilbert, demo_dir, ["positive", "negative"],
                              lambda i, label: "positive" if label in ("joy", "surprise") else "negative")
    r = clone / "reports"
    assert list(_json(r / "test" / "summary.json")["per_class_f1"]) == ["positive", "negative"]
    assert read_checkpoint(clone / "models" / "fusion" / "best_model.pt")["state_dict"]["head.weight"].shape[0] == 2
    assert "- Positive: " in (r / "RESULTS.md").read_text()
