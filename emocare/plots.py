"""Matplotlib figures for the reports (written atomically as PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from emocare.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def confusion_png(matrix: np.ndarray, names: list[str], path: str | Path, title: str = "Test set") -> None:
    """Counts and row-normalised confusion matrices side by side."""
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, data, label, fmt in ((axes[0], matrix, "counts", "d"), (axes[1], norm, "row-normalised", ".2f")):
        ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(f"{title} ({label})")
        top = data.max() if data.size else 0
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, format(data[i, j], fmt), ha="center", va="center",
                        color="white" if top and data[i, j] > top / 2 else "black", fontsize=8)
    _save(fig, path)


def ablation_png(rows: list[dict], path: str | Path) -> None:
    """Grouped bars of test macro-F1 per modality subset, masked vs retrained."""
    names = [r["subset"] for r in rows if r["mode"] == "masked"]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    x = np.arange(len(names))
    for k, mode in enumerate(("masked", "retrained")):
        vals = [next((r["macro_f1"] for r in rows if r["subset"] == n and r["mode"] == mode), None) for n in names]
        ax.bar(x + (k - 0.5) * 0.38, [v or 0.0 for v in vals], 0.38, label=mode)
        for xi, v in zip(x, vals, strict=True):
            ax.text(xi + (k - 0.5) * 0.38, (v or 0) + 0.01, "n/a" if v is None else f"{v:.2f}", ha="center",
                    fontsize=7)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test macro-F1")
    ax.set_title("Modality ablation")
    ax.legend()
    _save(fig, path)
