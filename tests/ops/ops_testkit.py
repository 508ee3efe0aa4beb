"""Helpers for the operations tests: HTTP, scraping, polling, tools, test data."""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

# tre-a and tre-b hold 40 people; tre-c holds 3, so every count there is below the
# threshold (10) and blocked.
FRAME = pd.DataFrame({"age": [30, 45, 60, 75] * 10, "sex": ["F", "M"] * 20})
DATA = {
    "tre-a": {"cohort": FRAME},
    "tre-b": {"cohort": FRAME},
    "tre-c": {"cohort": FRAME.head(3)},
}


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path; return (status, body), also for error statuses."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a /metrics page, keyed by (sample name, sorted labels)."""
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (a counter never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll condition until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)


def require_tool(name: str) -> str:
    """The path of a command-line tool; skip without it, except in CI where it must exist."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install -y prometheus provides it)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run does)")
        pytest.skip(message)
    return path
