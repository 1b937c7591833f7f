"""Reading ``params.yaml`` (the single source of every tunable value)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Load the pipeline parameters."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)
