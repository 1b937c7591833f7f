"""The report's figures (confusion, ablation, reliability), drawn with Pillow and written atomically as PNG.

A heatmap and a bar chart need no plotting library: importing matplotlib and its first draw took
1.2 s of every evaluate run, a tenth of a fusion experiment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emocare.io import atomic_path

INK, GRID = (33, 33, 33), (200, 200, 200)
MODE_COLOURS = {"masked": (31, 119, 180), "retrained": (255, 127, 14)}  # also the reliability curves' colours


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _save(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG", optimize=True)


def _blue(v: float) -> tuple[int, int, int]:
    """White (0) to dark blue (1), like matplotlib's ``Blues``."""
    lo, hi = np.array([247, 251, 255]), np.array([8, 48, 107])
    return tuple(int(c) for c in lo + (hi - lo) * min(max(v, 0.0), 1.0))


def _heatmap(draw: ImageDraw.ImageDraw, x0: int, y0: int, data: np.ndarray, names: list[str], title: str,
             fmt: str, cell: int) -> None:
    font, small = _font(14), _font(12)
    draw.text((x0 + cell * len(names) / 2, y0 - 34), title, fill=INK, font=font, anchor="mm")
    top = float(data.max()) if data.size else 0.0
    for i, row in enumerate(data):
        draw.text((x0 - 8, y0 + i * cell + cell / 2), names[i], fill=INK, font=small, anchor="rm")
        for j, v in enumerate(row):
            share = float(v) / top if top else 0.0
            box = (x0 + j * cell, y0 + i * cell, x0 + (j + 1) * cell, y0 + (i + 1) * cell)
            draw.rectangle(box, fill=_blue(share), outline=GRID)
            draw.text((box[0] + cell / 2, box[1] + cell / 2), format(v, fmt), font=small, anchor="mm",
                      fill=(255, 255, 255) if share > 0.5 else INK)
    for j, name in enumerate(names):
        draw.text((x0 + j * cell + cell / 2, y0 + len(names) * cell + 12), name, fill=INK, font=small, anchor="mm")
    draw.text((x0 + cell * len(names) / 2, y0 + len(names) * cell + 36), "predicted", fill=INK, font=small,
              anchor="mm")
    draw.text((x0 - 8, y0 - 12), "actual", fill=INK, font=small, anchor="rm")


def confusion_png(matrix: np.ndarray, names: list[str], path: str | Path, title: str = "Test set") -> None:
    """Counts and row-normalised confusion matrices side by side."""
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    cell, left, top = 92, 120, 60
    panel = left + cell * len(names) + 30
    image = Image.new("RGB", (2 * panel, top + cell * len(names) + 60), "white")
    draw = ImageDraw.Draw(image)
    _heatmap(draw, left, top, matrix, names, f"{title} (counts)", "d", cell)
    _heatmap(draw, panel + left, top, norm, names, f"{title} (row-normalised)", ".2f", cell)
    _save(image, path)


def ablation_png(rows: list[dict], path: str | Path) -> None:
    """Horizontal bars of test macro-F1 per modality subset, masked vs retrained (``n/a``: not scored)."""
    names = list(dict.fromkeys(r["subset"] for r in rows))
    font, small = _font(14), _font(12)
    left, top, width, bar = 130, 60, 520, 14
    step = 2 * bar + 14
    image = Image.new("RGB", (left + width + 70, top + step * len(names) + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left + width / 2, 18), "Modality ablation: test macro-F1", fill=INK, font=font, anchor="mm")
    for k, (mode, colour) in enumerate(MODE_COLOURS.items()):
        draw.rectangle((left + k * 110, 36, left + k * 110 + 12, 48), fill=colour)
        draw.text((left + k * 110 + 18, 42), mode, fill=INK, font=small, anchor="lm")
    for tick in np.linspace(0, 1, 6):
        x = left + tick * width
        draw.line((x, top - 4, x, top + step * len(names)), fill=GRID)
        draw.text((x, top + step * len(names) + 12), f"{tick:.1f}", fill=INK, font=small, anchor="mm")
    for i, name in enumerate(names):
        y = top + i * step
        draw.text((left - 8, y + bar), name, fill=INK, font=small, anchor="rm")
        for k, (mode, colour) in enumerate(MODE_COLOURS.items()):
            value = next((r["macro_f1"] for r in rows if r["subset"] == name and r["mode"] == mode), None)
            y0 = y + k * bar
            if value is not None:
                draw.rectangle((left, y0, left + value * width, y0 + bar - 2), fill=colour)
            draw.text((left + (value or 0.0) * width + 6, y0 + bar / 2 - 1), "n/a" if value is None else f"{value:.2f}",
                      fill=INK, font=small, anchor="lm")
    _save(image, path)


def reliability_png(curves: dict[str, list[dict]], eces: dict[str, float | None], path: str | Path,
                    title: str = "Reliability (test set)") -> None:
    """Accuracy against confidence per bin (:func:`emocare.calibration.reliability`), one curve per entry of
    ``curves`` (e.g. before and after calibration), the diagonal for perfect calibration, ECE in the legend."""
    font, small = _font(14), _font(12)
    left, top, side = 70, 70, 420
    image = Image.new("RGB", (left + side + 40, top + side + 60), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left + side / 2, 18), title, fill=INK, font=font, anchor="mm")

    def xy(conf: float, acc: float) -> tuple[float, float]:
        return left + conf * side, top + (1 - acc) * side

    for tick in np.linspace(0, 1, 6):
        draw.line((*xy(tick, 0), *xy(tick, 1)), fill=GRID)
        draw.line((*xy(0, tick), *xy(1, tick)), fill=GRID)
        draw.text((xy(tick, 0)[0], top + side + 12), f"{tick:.1f}", fill=INK, font=small, anchor="mm")
        draw.text((left - 8, xy(0, tick)[1]), f"{tick:.1f}", fill=INK, font=small, anchor="rm")
    draw.line((*xy(0, 0), *xy(1, 1)), fill=(120, 120, 120), width=1)
    draw.text((left + side / 2, top + side + 36), "confidence (top label)", fill=INK, font=small, anchor="mm")
    draw.text((12, top - 20), "accuracy", fill=INK, font=small, anchor="lm")
    for k, ((name, bins), colour) in enumerate(zip(curves.items(), MODE_COLOURS.values(), strict=False)):
        points = [xy(b["confidence"], b["accuracy"]) for b in bins]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        ece = eces.get(name)
        draw.rectangle((left + 10, top + 10 + 20 * k, left + 22, top + 22 + 20 * k), fill=colour)
        draw.text((left + 28, top + 16 + 20 * k), f"{name}: ECE {'n/a' if ece is None else f'{ece:.3f}'}",
                  fill=INK, font=small, anchor="lm")
    _save(image, path)


def learning_curve_png(points: list[dict], path: str | Path,
                       title: str = "Learning curve: macro-F1 by training labels") -> None:
    """Macro-F1 against the number of training labels, each point with its 95% interval as a vertical bar."""
    font, small = _font(14), _font(12)
    left, top, width, height = 70, 50, 480, 300
    image = Image.new("RGB", (left + width + 40, top + height + 60), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left + width / 2, 18), title, fill=INK, font=font, anchor="mm")
    scored = [p for p in points if p.get("interval")]
    x_max = max((p["labels"] for p in scored), default=1) * 1.05

    def xy(labels: float, f1: float) -> tuple[float, float]:
        return left + labels / x_max * width, top + (1 - f1) * height

    for tick in np.linspace(0, 1, 6):
        draw.line((*xy(0, tick), *xy(x_max, tick)), fill=GRID)
        draw.text((left - 8, xy(0, tick)[1]), f"{tick:.1f}", fill=INK, font=small, anchor="rm")
    for p in scored:
        x, _ = xy(p["labels"], 0)
        draw.text((x, top + height + 12), str(p["labels"]), fill=INK, font=small, anchor="mm")
    draw.text((left + width / 2, top + height + 36), "training labels", fill=INK, font=small, anchor="mm")
    draw.text((12, top - 20), "macro-F1 (95% interval)", fill=INK, font=small, anchor="lm")
    colour = MODE_COLOURS["masked"]
    centres = [xy(p["labels"], p["macro_f1"]) for p in scored]
    if len(centres) > 1:
        draw.line(centres, fill=colour, width=2)
    for p, (x, y) in zip(scored, centres, strict=True):
        lo, hi = p["interval"]
        draw.line((x, xy(0, lo)[1], x, xy(0, hi)[1]), fill=colour, width=2)
        for v in (lo, hi):
            draw.line((x - 5, xy(0, v)[1], x + 5, xy(0, v)[1]), fill=colour, width=2)
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        draw.text((x + 8, y - 10), f"{p['macro_f1']:.2f}", fill=INK, font=small, anchor="lm")
    _save(image, path)
