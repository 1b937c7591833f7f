"""Inference: the Python API and `emocare predict` on tiny demo-trained models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from emocare.cli import main as cli
from emocare.labels import DEFAULT
from emocare.predict import EmoCare


@pytest.fixture(scope="module")
def model(trained_bundle: Path) -> EmoCare:
    return EmoCare.load(trained_bundle, device="cpu")


def _media(demo_dir: Path, kind: str) -> Path:
    return next((demo_dir / "media").glob("*.png" if kind == "image" else "*.mp4"))


def _check(result: dict, modalities: list[str]) -> None:
    assert result["label"] in DEFAULT.names and result["modalities"] == modalities
    assert set(result["probabilities"]) == set(DEFAULT)
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)


def test_predict_each_combination_and_input_type(model: EmoCare, demo_dir: Path):
    image = _media(demo_dir, "image")
    _check(model.predict(text="finally got Leon!!"), ["text"])
    by_path = model.predict(text="me rn:", image=image)
    _check(by_path, ["text", "image"])
    assert model.predict(text="me rn:", image=image.read_bytes()) == by_path
    assert model.predict(text="me rn:", image=Image.open(image)) == by_path
    _check(model.predict(text="", video=_media(demo_dir, "video")), ["video"])


def test_batch_equals_single_and_records_errors(model: EmoCare, demo_dir: Path):
    posts = [{"text": "so mad"}, {"text": "x", "image": b"not an image"}, {"text": "me rn:",
                                                                           "image": str(_media(demo_dir, "image"))},
             {"text": " "}]
    results = model.predict_batch(posts, batch_size=2)
    assert "error" in results[1] and "image could not be decoded" in results[1]["error"]
    assert "no usable modality" in results[3]["error"]
    for i in (0, 2):
        single = model.predict(**posts[i])
        assert single["label"] == results[i]["label"]
        for c in DEFAULT:
            assert abs(single["probabilities"][c] - results[i]["probabilities"][c]) < 1e-4
    with pytest.raises(ValueError, match="could not be decoded"):
        model.predict(text="x", image=b"junk")


def test_cli_predict_single_post(trained_bundle: Path, capsys):
    assert cli(["predict", "--models", str(trained_bundle), "--device", "cpu", "--text", "so happy"]) == 0
    captured = capsys.readouterr()
    _check(json.loads(captured.out), ["text"])
    assert "trained on EmoCare's synthetic demo set" in captured.err  # the bundle's own record says so


def test_the_bundle_records_what_it_was_trained_on(model: EmoCare, demo_dir: Path):
    from emocare.bundle import demo_warning

    record = model.training_data
    assert record["manifest"] == str(demo_dir / "manifest.jsonl") and len(record["sha256"]) == 64
    assert record["posts"] == 120 and 0 < record["train_posts"] == record["synthetic_train_posts"] < 120
    assert f"{record['train_posts']} of {record['train_posts']} training posts" in model.demo_warning
    assert demo_warning({**record, "synthetic_train_posts": record["train_posts"] // 2}) is None  # mostly real
    assert demo_warning(None) is None  # a bundle from before the record: nothing to claim


def test_cli_predict_manifest_keeps_going_past_bad_records(trained_bundle: Path, demo_dir: Path, tmp_path: Path,
                                                           capsys):
    lines = (demo_dir / "manifest.jsonl").read_text().splitlines()[:40]
    shutil.copytree(demo_dir / "media", tmp_path / "media", copy_function=os.link)  # hard links: not symlinks
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    lines += [json.dumps({"id": "bad-image", "text": "x", "image": "bad.png"}), "{not json", ""]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred.jsonl"
    assert cli(["predict", "--models", str(trained_bundle), "--device", "cpu", "--manifest",
                str(tmp_path / "m.jsonl"), "-o", str(out), "--batch-size", "8"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert {k: summary[k] for k in ("records", "predicted", "errors", "degraded")} == \
        {"records": 42, "predicted": 40, "errors": 2, "degraded": 0}
    assert "synthetic demo set" in captured.err
    provenance = json.loads((tmp_path / "pred.jsonl.models.json").read_text())
    assert provenance["models"] == str(trained_bundle) and provenance["training_data"]["synthetic_train_posts"] > 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 42 and rows[0]["id"] == json.loads(lines[0])["id"] and "true_label" in rows[0]
    assert "image could not be decoded" in rows[40]["error"] and rows[41]["line"] == 42
    assert "not valid JSON" in rows[41]["error"]


@pytest.mark.parametrize("command", [["predict", "--text", "hi"], ["serve"]])
def test_a_missing_bundle_is_reported_before_loading_anything(command, tmp_path: Path, capsys):
    """A wrong --models fails at once, naming the folder, the missing file and the way out."""
    assert cli([*command, "--models", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert f"no trained models in {tmp_path / 'nowhere'}" in err and "fusion/best_model.pt" in err
    assert "dvc repro" in err and "--models" in err


def test_probabilities_are_calibrated_and_attribution_explains_the_label(model: EmoCare, demo_dir: Path):
    """The fusion model's stored calibration reaches predict; hiding a modality costs what ``attribution`` says."""
    import torch

    from emocare.calibration import apply, softmax
    from emocare.scoring import fusion_logits

    # the tiny bundle trains on under 800 posts: temperature scaling in place of bcts (fusion_training's rule)
    assert model.fusion.calibration["kind"] == "temperature" and model.validation["posts"] > 0
    image = _media(demo_dir, "image")
    both = model.predict(text="me rn:", image=image)
    assert set(both["attribution"]) == {"text", "image"}
    alone = model.predict(text="me rn:")
    assert alone["attribution"] == {}  # one modality: nothing to hide it against
    top = both["label"]
    assert both["attribution"]["image"] == pytest.approx(both["probabilities"][top] - alone["probabilities"][top],
                                                         abs=1e-3)
    decoded, _ = model.decode({"text": "me rn:"})
    emb = {m: torch.zeros(1, model.specialists[m].dim) for m in model.fusion.modalities}
    from emocare.scoring import features
    emb["text"] = features(model.specialists["text"], model.specialists["text"].collate([(decoded["text"], -1)]),
                           model.device)
    present = torch.tensor([[m == "text" for m in model.fusion.modalities]])
    raw = fusion_logits(model.fusion, emb, present, model.device, calibrated=False)
    calibrated = softmax(apply(raw, model.fusion.calibration))[0]
    assert alone["probabilities"][DEFAULT.names[0]] == pytest.approx(float(calibrated[0]), abs=1e-5)


def test_min_confidence_labels_uncertain_and_is_counted(model: EmoCare, trained_bundle: Path, demo_dir: Path,
                                                        tmp_path: Path, capsys):
    assert model.predict(text="so mad", min_confidence=1.01)["label"] == "uncertain"
    assert model.predict(text="so mad", min_confidence=0.0)["label"] in DEFAULT.names
    lines = (demo_dir / "manifest.jsonl").read_text().splitlines()[:20]
    shutil.copytree(demo_dir / "media", tmp_path / "media", copy_function=os.link)  # hard links: not symlinks
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred.jsonl"
    assert cli(["predict", "--models", str(trained_bundle), "--device", "cpu", "--manifest",
                str(tmp_path / "m.jsonl"), "-o", str(out), "--min-confidence", "0.5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    low = [r for r in rows if max(r["probabilities"].values()) < 0.5]
    assert summary["uncertain"] == len(low) == sum(r["label"] == "uncertain" for r in rows)
    assert summary["uncertain_rate"] == pytest.approx(len(low) / len(rows), abs=1e-4)
    assert all("attribution" in r for r in rows)
    provenance = json.loads((tmp_path / "pred.jsonl.models.json").read_text())
    assert provenance["validation"] == model.validation  # what `trends --quantifier acc|pacc` needs
