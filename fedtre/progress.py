"""A one-line progress bar for a job (JobHandle.wait(progress=True)), drawn by tqdm.

tqdm.auto draws a notebook widget under Jupyter (with ipywidgets) and a text line in a
terminal. A multi-round job (glm) counts rounds out of its maximum; a single-round job
counts the nodes that have answered. The state and latest deviance follow the bar.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedtre.client import JobStatus


class JobProgressBar:
    """Call update() with each new status of the job; close() when it has finished."""

    def __init__(self, job_id: int, file: IO[str] | None = None) -> None:
        from tqdm.auto import tqdm

        self._bar: Any = tqdm(total=None, desc=f"job {job_id}", file=file, leave=True)

    def update(self, status: JobStatus) -> None:
        progress = status.progress
        total: int | None
        if progress is not None and progress.max_rounds:
            total, done, unit = progress.max_rounds, progress.round, "rounds"
        else:
            total = len(status.tasks) or len(status.nodes) or None
            done, unit = status.done_count, "nodes"
        if status.state in ("completed", "partial"):
            total = done  # a fit that converged early has finished: a full bar
        self._bar.total = total
        self._bar.n = done
        self._bar.unit = unit
        postfix = status.state.replace("_", " ")
        deviance = progress.figures.get("deviance") if progress is not None else None
        if isinstance(deviance, int | float):
            postfix += f", deviance {deviance:.6g}"
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> JobProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
