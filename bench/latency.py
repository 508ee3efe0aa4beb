"""End-to-end latency of one `count` job over three agents, submit to combined result.

Run with `make bench` (or `.venv/bin/python bench/latency.py --jobs 200`). Prints p50, p90,
p99 and writes bench/results/latency.json. Everything is real: gRPC over mutual TLS on
loopback, SQLite state, the agents' SQL pushdown on synthetic cohorts.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from fedtre.synth import write_cohorts
from fedtre.testing import LocalNetwork


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2000, help="people per TRE")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "latency.json"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = write_cohorts(Path(tmp), n_nodes=3, rows=args.rows, seed=1, fmt="sqlite")
        data = {node: {"cohort": path} for node, path in files.items()}
        with LocalNetwork(data) as net, net.client() as client:
            params = {"filter": {"col": "age", "op": ">=", "value": 50}}
            for _ in range(10):  # warm up connections and caches
                client.submit("count", dataset="cohort", params=params).result(timeout=30)
            latencies = []
            for _ in range(args.jobs):
                start = time.perf_counter()
                result = client.submit("count", dataset="cohort", params=params).result(timeout=30)
                latencies.append((time.perf_counter() - start) * 1000)
                assert result.state == "completed", result.state

    latencies.sort()
    figures = {
        "jobs": args.jobs,
        "rows_per_node": args.rows,
        "p50_ms": round(statistics.median(latencies), 2),
        "p90_ms": round(latencies[int(0.90 * (len(latencies) - 1))], 2),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
        "max_ms": round(latencies[-1], 2),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }
    print("single count job over 3 agents (submit -> combined result)")
    for key, value in figures.items():
        print(f"  {key:14} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
