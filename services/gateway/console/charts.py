"""Chart geometry for the reports page: plain numbers that a template draws as inline SVG, so
the charts need no JavaScript library and no build step, and every rule is unit-tested.
Each chart is drawn in a fixed viewBox and scales with the page; the page also shows each
chart's numbers as a table (the accessible equivalent)."""
from __future__ import annotations

import math
from typing import Sequence


def nice_max(value: float) -> float:
    """The axis top: the smallest 1, 2, 2.5 or 5 times a power of ten not below `value`."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            top = step * power
            return int(top) if top >= 1 and float(top).is_integer() else top
    return 10 * power  # pragma: no cover - the loop always answers


def column_chart(points: Sequence[tuple[str, float]], width: int = 640, height: int = 240,
                 ticks: int = 4) -> dict:
    """Vertical bars for a series (new customers per period): each bar's box, its label and
    value, and the y axis' grid lines. Labels thin out when there are many periods."""
    left, right, top, bottom = 44, 8, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = nice_max(max((v for _, v in points), default=0))
    n = max(1, len(points))
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.7)
    every = max(1, math.ceil(n / 12))  # at most about 12 labels on the axis
    bars = []
    for i, (label, value) in enumerate(points):
        h = plot_h * (value / peak) if peak else 0
        x = left + i * slot + (slot - bar_w) / 2
        bars.append({"x": round(x, 1), "y": round(top + plot_h - h, 1), "w": round(bar_w, 1),
                     "h": round(h, 1), "label": label, "value": value,
                     "cx": round(x + bar_w / 2, 1), "show_label": i % every == 0})
    if peak and all(float(v).is_integer() for _, v in points):
        # Counts get whole-number grid lines: 0, 1, ... 5 rather than 1.2, 2.5, 3.8.
        ticks = next((t for t in (ticks, 5, 4, 3, 2) if t <= peak and peak % t == 0), 1)
    grid = [{"y": round(top + plot_h - plot_h * k / ticks, 1),
             "value": _tick(peak * k / ticks)} for k in range(ticks + 1)]
    return {"width": width, "height": height, "bars": bars, "grid": grid, "left": left,
            "right": width - right, "base": top + plot_h, "label_y": top + plot_h + 18,
            "max": peak}


def bar_list(items: Sequence[tuple[str, float]], width: int = 640, row: int = 30) -> dict:
    """Horizontal bars, one row per item (segment sizes), longest bar the largest value."""
    label_w, value_w = 120, 60
    plot_w = width - label_w - value_w
    peak = max((v for _, v in items), default=0)
    rows = []
    for i, (label, value) in enumerate(items):
        w = plot_w * (value / peak) if peak else 0
        rows.append({"label": label, "value": value, "y": i * row + 4, "w": round(w, 1),
                     "text_y": i * row + row / 2 + 5, "value_x": round(label_w + w + 6, 1)})
    return {"width": width, "height": max(row, len(items) * row + 8), "rows": rows,
            "x0": label_w}


def share_bar(share: float | None, width: int = 640, height: int = 36) -> dict | None:
    """A 0-100 % bar with the share filled (repeat rate, the top 10 %'s revenue share)."""
    if share is None:
        return None
    share = min(1.0, max(0.0, float(share)))
    return {"width": width, "height": height, "filled": round(width * share, 1),
            "percent": round(share * 100, 1)}


def _tick(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
