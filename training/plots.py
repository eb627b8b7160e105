"""Small PNG charts drawn with Pillow (matplotlib is not a dependency): bar charts and line charts.

Benches write their figures next to their markdown results; these two shapes cover histograms and loss curves.

    bar_chart("out.png", [3, 5, 2], ["a", "b", "c"], "Title", "x", "count")
    line_chart("loss.png", {"train": [(0, 1.0), (100, 0.4)]}, "Loss", "step", "loss")
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

SIZE = (960, 540)
MARGIN = (90, 60, 30, 80)  # left, top, right, bottom
COLORS = ("#3b6ea8", "#d1603d", "#4f9a5b", "#8a5aa8", "#c49a2c", "#3a9a9a", "#b04a6a", "#666666")
INK, GRID, BACK = "#222222", "#e3e3e3", "white"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.2e}"


class _Axes:
    """A blank chart with title, axis labels, y grid and a data-to-pixel mapping."""

    def __init__(self, title: str, xlabel: str, ylabel: str, y_ticks: list[float], size: tuple[int, int]):
        self.image = Image.new("RGB", size, BACK)
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.small = _font(16), _font(13)
        left, top, right, bottom = MARGIN
        self.box = (left, top, size[0] - right, size[1] - bottom)
        self.y_lo, self.y_hi = y_ticks[0], y_ticks[-1]
        x0, y0, x1, y1 = self.box
        self.draw.text(((x0 + x1) / 2, 22), title, fill=INK, font=_font(20), anchor="mm")
        self.draw.text(((x0 + x1) / 2, size[1] - 22), xlabel, fill=INK, font=self.font, anchor="mm")
        label = Image.new("RGBA", (max(1, int(self.draw.textlength(ylabel, font=self.font))) + 4, 22))
        ImageDraw.Draw(label).text((2, 2), ylabel, fill=INK, font=self.font)
        rotated = label.rotate(90, expand=True)
        self.image.paste(rotated, (14, int((y0 + y1) / 2 - rotated.height / 2)), rotated)
        for tick in y_ticks:
            y = self.y(tick)
            self.draw.line([(x0, y), (x1, y)], fill=GRID)
            self.draw.text((x0 - 8, y), _label(tick), fill=INK, font=self.small, anchor="rm")
        self.draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=INK, width=1)

    def y(self, value: float) -> float:
        _, y0, _, y1 = self.box
        return y1 - (value - self.y_lo) / (self.y_hi - self.y_lo) * (y1 - y0)

    def save(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.image.save(path, format="PNG", optimize=True)
        return path


def bar_chart(path: str, values: Sequence[float], labels: Sequence[str], title: str, xlabel: str, ylabel: str,
              size: tuple[int, int] = SIZE) -> str:
    """Vertical bars, one per value, labelled below (thinned out when they would overlap); returns ``path``."""
    if len(values) != len(labels) or not values:
        raise ValueError(f"need as many labels as values (> 0), got {len(values)} values and {len(labels)} labels")
    axes = _Axes(title, xlabel, ylabel, nice_ticks(min(0.0, min(values)), max(values)), size)
    x0, _, x1, y1 = axes.box
    slot = (x1 - x0) / len(values)
    widest = max(axes.draw.textlength(str(label), font=axes.small) for label in labels)
    every = max(1, math.ceil((widest + 8) / slot))
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        left, right = x0 + i * slot + slot * 0.1, x0 + (i + 1) * slot - slot * 0.1
        top, base = sorted((axes.y(value), axes.y(0.0)))
        axes.draw.rectangle([left, top, max(left, right), base], fill=COLORS[0])
        if i % every == 0:
            axes.draw.text(((left + right) / 2, y1 + 12), str(label), fill=INK, font=axes.small, anchor="mm")
    return axes.save(path)


def line_chart(path: str, series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = SIZE) -> str:
    """One polyline per named series of (x, y) points, with a legend; returns ``path``."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        raise ValueError("line_chart needs at least one point")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    y_ticks = nice_ticks(min(ys), max(ys))
    axes = _Axes(title, xlabel, ylabel, y_ticks, size)
    x_ticks = nice_ticks(min(xs), max(xs), count=6)
    x0, y0, x1, y1 = axes.box

    def x(value: float) -> float:
        return x0 + (value - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (x1 - x0)

    for tick in x_ticks:
        axes.draw.line([(x(tick), y1), (x(tick), y1 + 5)], fill=INK)
        axes.draw.text((x(tick), y1 + 16), _label(tick), fill=INK, font=axes.small, anchor="mm")
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = [(x(px), axes.y(py)) for px, py in sorted(pts)]
        if len(coords) > 1:
            axes.draw.line(coords, fill=color, width=2, joint="curve")
        elif coords:  # a lone point would be invisible as a line
            cx, cy = coords[0]
            axes.draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)
        ly = y0 + 10 + i * 20
        axes.draw.line([(x1 - 150, ly), (x1 - 125, ly)], fill=color, width=3)
        axes.draw.text((x1 - 118, ly), name, fill=INK, font=axes.small, anchor="lm")
    return axes.save(path)
