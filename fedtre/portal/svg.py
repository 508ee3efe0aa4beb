"""Kaplan-Meier curves and histograms as inline SVG: drawn on the server from what the
researcher received, with presentation attributes only (the CSP forbids inline style)."""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 640, 320, 40
COLOURS = ["#1f4e79", "#a33c00", "#2d6a2d", "#6b2d6b", "#5c5c00"]


def chart(analysis: str, combined: dict[str, Any], frame: Any) -> Markup:
    """The result's chart, or "" for analyses without one."""
    if analysis == "kaplan_meier":
        return survival(combined)
    if analysis == "histogram" and frame is not None:
        return histogram(frame)
    return Markup("")


def survival(combined: dict[str, Any]) -> Markup:
    curves = [(label, c) for label, c in combined.get("groups") or [] if isinstance(c, dict)]
    steps = [(label, _steps(c.get("table") or [])) for label, c in curves]
    last = max((t for _, points in steps for t, _ in points), default=0.0) or 1.0
    by = combined.get("by")
    lines = []
    for i, (label, points) in enumerate(steps):
        path = _step_path([(_x(t / last), _y(s)) for t, s in points])
        name = "all" if by is None else f"{by} = {label}"
        colour = COLOURS[i % len(COLOURS)]
        lines.append(
            f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"><title>{escape(name)}</title></path>'
            f'<text x="{WIDTH - PAD - 120}" y="{PAD + 16 * i}" fill="{colour}" font-size="12">{escape(name)}</text>'
        )
    return _frame(
        "".join(lines),
        f"Kaplan-Meier survival curves to time {last:g}",
        x_label=str(combined.get("time") or "time"),
        y_label="survival",
    )


def histogram(frame: Any) -> Markup:
    counts = [None if _missing(n) else int(n) for n in frame["n"]]
    top = max((n for n in counts if n is not None), default=0) or 1
    width = (WIDTH - 2 * PAD) / max(len(counts), 1)
    bars = []
    for i, (interval, n) in enumerate(zip(frame.index, counts, strict=True)):
        label = f"{interval}: {'withheld' if n is None else n}"
        height = 0 if n is None else (HEIGHT - 2 * PAD) * n / top
        bars.append(
            f'<rect x="{PAD + i * width + 1:.1f}" y="{HEIGHT - PAD - height:.1f}" '
            f'width="{max(width - 2, 1):.1f}" height="{height:.1f}" fill="{COLOURS[0]}">'
            f"<title>{escape(label)}</title></rect>"
        )
    return _frame(
        "".join(bars),
        f"Histogram of {frame.index.name}",
        x_label=str(frame.index.name),
        y_label="n",
    )


def _frame(body: str, title: str, *, x_label: str, y_label: str) -> Markup:
    axes = (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12">{escape(x_label)}</text>'
        f'<text x="12" y="{HEIGHT / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 12 {HEIGHT / 2})">{escape(y_label)}</text>'
    )
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" class="chart"><title>{escape(title)}</title>{axes}{body}</svg>'
    )


def _steps(table: list[list[Any]]) -> list[tuple[float, float]]:
    points = [(0.0, 1.0)]
    for row in table:
        t, s = row[0], row[4]
        if t is not None and s is not None:
            points.append((float(t), float(s)))
    return points


def _step_path(points: list[tuple[float, float]]) -> str:
    path = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for x, y in points[1:]:
        path += f" H{x:.1f} V{y:.1f}"
    return path


def _x(fraction: float) -> float:
    return PAD + (WIDTH - 2 * PAD) * fraction


def _y(survival: float) -> float:
    return HEIGHT - PAD - (HEIGHT - 2 * PAD) * survival


def _missing(value: Any) -> bool:
    try:
        return value is None or math.isnan(float(value))
    except (TypeError, ValueError):
        return True
