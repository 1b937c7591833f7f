"""Data contract (manifest), validation, splitting, importers and the demo set."""

from emocare.data.manifest import Post, load_posts

__all__ = ["Post", "load_posts"]
