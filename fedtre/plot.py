"""Survival curves to PNG: `fedtre result ID --plot km.png` and plot_survival() in Python.

Needs matplotlib (the `plot` extra: pip install 'fedtre[plot]'). It draws on a Figure of
its own, without pyplot: no display is needed, the caller's pyplot backend and figures
(e.g. in a notebook) are left alone, and it is safe to call from several threads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedtre.client import Result
from fedtre.errors import InvalidRequest
from fedtre.files import open_private


def plot_survival(result: Result, path: str | Path) -> Path:
    """Draw a kaplan_meier result's curves (steps, 95% bands) and numbers at risk to a PNG file.

    Returns the path written. Raises InvalidRequest when the result is not a combined
    kaplan_meier result, has no curve to draw, or matplotlib is missing.
    """
    if result.job.analysis != "kaplan_meier":
        raise InvalidRequest(
            f"job {result.job.id} is a {result.job.analysis} job; --plot draws kaplan_meier results"
        )
    groups = result.combined.get("groups")
    curves = [(label, curve) for label, curve in groups or [] if isinstance(curve, dict)]
    if not curves:
        raise InvalidRequest(f"job {result.job.id} has no survival curve to draw (yet)")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InvalidRequest(
            "plotting needs matplotlib: pip install 'fedtre[plot]' (or pip install matplotlib)"
        ) from None
    by = result.combined.get("by")
    figure = Figure(figsize=(8, 5), dpi=100)
    axes = figure.subplots()
    for label, curve in curves:
        times, survival, lower, upper = _steps(curve["table"])
        name = "all" if by is None else f"{by} = {label}"
        (line,) = axes.step(times, survival, where="post", label=name)
        axes.fill_between(times, lower, upper, step="post", alpha=0.2, color=line.get_color())
    axes.set_xlabel(str(result.combined.get("time") or "time"))
    axes.set_ylabel("survival probability")
    axes.set_ylim(0.0, 1.02)
    # The last row of a curve may be open ("after every released time": time null).
    last = max(
        (float(row[0]) for _, curve in curves for row in curve["table"] if row[0] is not None),
        default=1.0,
    )
    axes.set_xlim(0.0, last)
    _risk_table(figure, axes, curves, by)
    title = f"Kaplan-Meier, job {result.job.id}"
    logrank = result.combined.get("logrank")
    if isinstance(logrank, dict) and logrank.get("p_value") is not None:
        title += f" (log-rank p = {logrank['p_value']:.3g})"
    axes.set_title(title)
    axes.legend(loc="best")
    axes.grid(alpha=0.3)
    target = Path(path)
    with open_private(target, "wb") as handle:
        figure.savefig(handle, format="png")
    return target


def _risk_table(figure: Any, axes: Any, curves: list[tuple[Any, Any]], by: Any) -> None:
    """Write the numbers at risk at the x-axis ticks under the axes, one row per curve."""
    ticks = [float(t) for t in axes.get_xticks() if 0.0 <= t <= axes.get_xlim()[1]]
    rows = len(curves)
    figure.set_size_inches(8.0, 5.0 + 0.25 * rows)
    figure.subplots_adjust(bottom=0.22 + 0.05 * rows, left=0.16)
    transform = axes.get_xaxis_transform()  # x in data units, y in axes units
    axes.text(-0.03, -0.2, "at risk", transform=axes.transAxes, ha="right", fontsize=8)
    for i, (label, curve) in enumerate(curves):
        y = -0.27 - 0.07 * i
        name = "all" if by is None else str(label)
        axes.text(-0.03, y, name, transform=axes.transAxes, ha="right", fontsize=8)
        for t, n in zip(ticks, at_risk(curve["table"], ticks), strict=True):
            axes.text(t, y, str(n), transform=transform, ha="center", fontsize=8)


def at_risk(table: list[list[Any]], times: list[float]) -> list[int]:
    """The number at risk (records whose time is at or after t) at each of `times`.

    table is a combined curve's table, one row per pooled time: [time, at risk, ...]; a
    row with time null is after every released time.
    """
    rows = sorted(
        (math.inf if row[0] is None else float(row[0]), int(row[1]))
        for row in table
        if row[1] is not None
    )
    found = []
    for t in times:
        later = [n for time, n in rows if time >= t]
        found.append(later[0] if later else 0)
    return found


def _steps(table: list[list[Any]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Step-function points from the combined table, starting at time 0 with survival 1."""
    times, survival, lower, upper = [0.0], [1.0], [1.0], [1.0]
    for t, _n, _d, _c, s, _se, lo, hi in table:
        if s is None or t is None:
            continue
        times.append(float(t))
        survival.append(float(s))
        lower.append(float(lo) if lo is not None else float(s))
        upper.append(float(hi) if hi is not None else float(s))
    return times, survival, lower, upper
