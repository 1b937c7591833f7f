"""EmoCare: multimodal emotion classification for social-media posts."""

from emocare.labels import MODALITIES, LabelSet

__all__ = ["MODALITIES", "LabelSet"]
__version__ = "0.1.0"
