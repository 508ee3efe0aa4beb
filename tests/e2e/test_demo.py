"""`fedtre demo` runs a coordinator and three agents as processes and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_every_analysis_and_cleans_up():
    done = subprocess.run(
        [sys.executable, "-m", "fedtre.cli.main", "demo", "--rows", "600"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert len(re.findall(r"^== .*\(count, job \d+: completed\)$", out, re.M)) == 1
    assert len(re.findall(r"^== .*\(crosstab, job \d+: (completed|partial)\)$", out, re.M)) == 2
    assert len(re.findall(r"^== .*\(summary, job \d+: completed\)$", out, re.M)) == 1
    assert "all processes stopped" in out
    # every result says its counts carry noise: 4 analyses, 4 notes
    assert out.count("(not exact: each TRE adds small consistent noise") == 4
    home = Path(re.search(r"network in (\S+)", out).group(1))
    assert not home.exists()
