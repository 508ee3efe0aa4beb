"""Survival curves to PNG: `fedtre result ID --plot km.png` and plot_survival() in Python.

Needs matplotlib (the `plot` extra: pip install 'fedtre[plot]'); it draws off-screen with
the Agg backend, so it works on servers without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedtre.client import Result
from fedtre.errors import InvalidRequest


def plot_survival(result: Result, path: str | Path) -> Path:
    """Draw a kaplan_meier result's curves (steps, 95% bands, numbers at risk) to a PNG file.

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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidRequest(
            "plotting needs matplotlib: pip install 'fedtre[plot]' (or pip install matplotlib)"
        ) from None
    by = result.combined.get("by")
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        for label, curve in curves:
            times, survival, lower, upper = _steps(curve["table"])
            name = "all" if by is None else f"{by} = {label}"
            (line,) = axes.step(times, survival, where="post", label=name)
            axes.fill_between(times, lower, upper, step="post", alpha=0.2, color=line.get_color())
        axes.set_xlabel(str(result.combined.get("time") or "time"))
        axes.set_ylabel("survival probability")
        axes.set_ylim(0.0, 1.02)
        title = f"Kaplan-Meier, job {result.job.id}"
        logrank = result.combined.get("logrank")
        if isinstance(logrank, dict) and logrank.get("p_value") is not None:
            title += f" (log-rank p = {logrank['p_value']:.3g})"
        axes.set_title(title)
        axes.legend(loc="best")
        axes.grid(alpha=0.3)
        target = Path(path)
        figure.savefig(target, format="png")
    finally:
        plt.close(figure)
    return target


def _steps(table: list[list[Any]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Step-function points from the combined table, starting at time 0 with survival 1."""
    times, survival, lower, upper = [0.0], [1.0], [1.0], [1.0]
    for t, _n, _d, _c, s, _se, lo, hi in table:
        if s is None:
            continue
        times.append(float(t))
        survival.append(float(s))
        lower.append(float(lo) if lo is not None else float(s))
        upper.append(float(hi) if hi is not None else float(s))
    return times, survival, lower, upper
