"""Training curves in DVCLive's file layout, which `dvc plots` reads (``x: step``):

    <dir>/metrics.json              the latest values and their step
    <dir>/plots/metrics/<key>.tsv   one ``step<TAB><key>`` row per logged step

Written directly: importing DVCLive and letting it set up its repository took 1.6 s of each
fusion experiment. Every file is rewritten atomically at each step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from emocare.io import write_json, write_text


class Curves:
    """Log one row of scalars per step (an epoch) under ``directory``, replacing an earlier run's curves."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        shutil.rmtree(self.dir / "plots", ignore_errors=True)
        self.rows: list[dict[str, float]] = []

    def log(self, row: dict[str, float]) -> None:
        self.rows.append({k: float(v) for k, v in row.items()})
        for key in row:
            lines = [f"step\t{key}"] + [f"{step}\t{r[key]}" for step, r in enumerate(self.rows) if key in r]
            write_text(self.dir / "plots" / "metrics" / f"{key}.tsv", "\n".join(lines) + "\n")
        write_json(self.dir / "metrics.json", {**self.rows[-1], "step": len(self.rows) - 1})
