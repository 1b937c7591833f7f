"""The five emotion classes, their display names and label normalisation."""

from __future__ import annotations

LABELS: list[str] = ["neutral", "joy", "anger", "surprise", "sadness"]
DISPLAY: dict[str, str] = {
    "neutral": "Neutral/Other",
    "joy": "Joy",
    "anger": "Anger",
    "surprise": "Surprise",
    "sadness": "Sadness",
}
MODALITIES: list[str] = ["text", "image", "video"]
SUBSETS: list[list[str]] = [["text"], ["image"], ["video"], ["text", "image"], ["text", "video"], ["image", "video"],
                         ["text", "image", "video"]]  # the modality ablation's seven subsets
CLASS_COLOURS: dict[str, str] = {"neutral": "#9e9e9e", "joy": "#f4b400", "anger": "#db4437", "surprise": "#7e57c2",
                                 "sadness": "#4285f4"}  # the same colour for a class in every chart and page

# Case-insensitive aliases accepted in manifests (keys are lower-case).
ALIASES: dict[str, str] = {
    "neutral/other": "neutral",
    "other": "neutral",
    "happy": "joy",
    "happiness": "joy",
    "angry": "anger",
    "surprised": "surprise",
    "sad": "sadness",
}


def parse_label_map(spec: str | None) -> dict[str, str]:
    """Parse ``"disgust=neutral,fear=neutral"`` into a mapping (keys lower-cased)."""
    mapping: dict[str, str] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"label map entry {part!r} is not of the form source=target")
        src, dst = (s.strip() for s in part.split("=", 1))
        mapping[src.lower()] = dst
    return mapping


def normalise_label(raw: object, label_map: dict[str, str] | None = None) -> str | None:
    """Return the canonical label for ``raw`` or ``None`` when it is not one of the five classes."""
    if not isinstance(raw, str):
        return None
    key = raw.strip().lower()
    key = (label_map or {}).get(key, key).strip().lower()
    key = ALIASES.get(key, key)
    return key if key in LABELS else None


def label_index(label: str | None) -> int:
    """Class index of ``label``; -1 for an unlabelled post."""
    return LABELS.index(label) if label is not None else -1


def combo_name(present: dict[str, bool] | list[str]) -> str:
    """Name of a modality combination, e.g. ``text+image``; modalities in canonical order."""
    names = [m for m in MODALITIES if (m in present if isinstance(present, list) else present.get(m))]
    return "+".join(names) if names else "none"
