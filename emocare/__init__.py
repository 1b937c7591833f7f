"""EmoCare: multimodal emotion classification for social-media posts."""

from emocare.labels import LABELS, MODALITIES

__all__ = ["LABELS", "MODALITIES"]
__version__ = "0.1.0"
