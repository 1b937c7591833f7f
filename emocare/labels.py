"""The label set (classes, their display names and colours, label normalisation) and the modalities.

The classes are data: ``labels`` in ``params.yaml`` (a list of names, in order), with optional
``label_display`` and ``label_colours`` mappings beside it. A trained bundle carries its label set,
so prediction, the service and trends read the classes from the models, never from code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_LABELS: list[str] = ["neutral", "joy", "anger", "surprise", "sadness"]  # params.yaml's default; the demo's
MODALITIES: list[str] = ["text", "image", "video"]
SUBSETS: list[list[str]] = [["text"], ["image"], ["video"], ["text", "image"], ["text", "video"], ["image", "video"],
                         ["text", "image", "video"]]  # the modality ablation's seven subsets

# Display names and colours of well-known classes; any other class shows its name capitalised, in PALETTE's order.
KNOWN_DISPLAY: dict[str, str] = {"neutral": "Neutral/Other"}
KNOWN_COLOURS: dict[str, str] = {"neutral": "#9e9e9e", "joy": "#f4b400", "anger": "#db4437", "surprise": "#7e57c2",
                                 "sadness": "#4285f4", "fear": "#0f9d58", "disgust": "#8d6e63"}
# Twelve hues that stay apart on a stacked chart (Tableau 10 and two more), for classes without a known colour.
PALETTE: list[str] = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                      "#9c755f", "#17becf", "#bcbd22", "#bab0ac"]
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # a class name is also a Parquet field, a CSV column and an HTML id

# Case-insensitive aliases accepted in manifests (keys are lower-case); each applies when its class is in the set.
ALIASES: dict[str, str] = {
    "neutral/other": "neutral",
    "other": "neutral",
    "happy": "joy",
    "happiness": "joy",
    "angry": "anger",
    "surprised": "surprise",
    "sad": "sadness",
}


@dataclass(frozen=True)
class LabelSet:
    """The classes in order, with their display names and chart colours."""

    names: tuple[str, ...]
    display: dict[str, str]
    colours: dict[str, str]

    @classmethod
    def of(cls, names: list[str], display: dict | None = None, colours: dict | None = None) -> LabelSet:
        """A label set from its class names; display names and colours default as the module says."""
        if not isinstance(names, list | tuple) or len(names) < 2:
            raise ValueError(f"labels must be a list of at least two class names, got {names!r}")
        bad = [n for n in names if not isinstance(n, str) or not NAME.match(n)]
        if bad:
            raise ValueError(f"labels: {bad[0]!r} is not a class name (lower-case letters, digits, '_' or '-')")
        if len(set(names)) < len(names):
            raise ValueError(f"labels: {sorted({n for n in names if list(names).count(n) > 1})} appear twice")
        for what, given in (("label_display", display), ("label_colours", colours)):
            unknown = sorted(set(given or {}) - set(names))
            if unknown:
                raise ValueError(f"{what}: {unknown} are not in labels {list(names)}")
        spare = iter([c for c in PALETTE if c not in {KNOWN_COLOURS.get(n) for n in names}])
        chosen = {n: (colours or {}).get(n) or KNOWN_COLOURS.get(n) or next(spare, "#666666") for n in names}
        shown = {n: (display or {}).get(n) or KNOWN_DISPLAY.get(n) or n.replace("_", " ").capitalize() for n in names}
        return cls(tuple(names), shown, chosen)

    @classmethod
    def from_params(cls, params: dict) -> LabelSet:
        """The label set ``params.yaml`` declares (the five default classes when it declares none)."""
        return cls.of(params.get("labels") or DEFAULT_LABELS, params.get("label_display"), params.get("label_colours"))

    @classmethod
    def from_dict(cls, stored: dict | list) -> LabelSet:
        """Read :meth:`to_dict`'s form back (or a plain list of names, as older checkpoints hold)."""
        if isinstance(stored, dict):
            return cls.of(list(stored["names"]), stored.get("display"), stored.get("colours"))
        return cls.of(list(stored))

    @classmethod
    def from_payload(cls, payload: dict) -> LabelSet:
        """A checkpoint's label set: a fusion checkpoint's ``label_set``, else its class names."""
        return cls.from_dict(payload.get("label_set") or payload["labels"])

    def to_dict(self) -> dict:
        return {"names": list(self.names), "display": dict(self.display), "colours": dict(self.colours)}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def index(self, label: str | None) -> int:
        return label_index(label, self.names)

    def normalise(self, raw: object, label_map: dict[str, str] | None = None) -> str | None:
        """The class ``raw`` names (case-insensitive, through ``label_map`` and the aliases), or ``None``."""
        if not isinstance(raw, str):
            return None
        key = raw.strip().lower()
        key = (label_map or {}).get(key, key).strip().lower()
        if key not in self.names and ALIASES.get(key) in self.names:
            key = ALIASES[key]
        return key if key in self.names else None

    def require_same(self, other: list[str] | tuple[str, ...], what: str, theirs: str) -> None:
        """A ValueError saying that ``what`` was made for other classes than ``theirs``, naming both sets."""
        if tuple(other) != self.names:
            raise ValueError(f"{what} has the classes {list(other)}, but {theirs} has {list(self.names)}: "
                             "re-run the stages after the change (`dvc repro`), or use a bundle with the same labels")


DEFAULT = LabelSet.of(DEFAULT_LABELS)


def label_index(label: str | None, names: list[str] | tuple[str, ...]) -> int:
    """Class index of ``label`` among ``names``; -1 for an unlabelled post."""
    if label is None:
        return -1
    if label not in names:
        raise ValueError(f"label {label!r} is not one of the classes {list(names)}: the posts were validated "
                         "against other labels; re-run validate (`dvc repro`)")
    return names.index(label)


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


def combo_name(present: dict[str, bool] | list[str]) -> str:
    """Name of a modality combination, e.g. ``text+image``; modalities in canonical order."""
    names = [m for m in MODALITIES if (m in present if isinstance(present, list) else present.get(m))]
    return "+".join(names) if names else "none"
