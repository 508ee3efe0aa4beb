"""A legitimate call's latency, quiet and under a flood of refused calls; audit rows written.

    .venv/bin/python bench/refusal_flood.py [--seconds 10] [--flooders 2] [--max-calls 5000]

The coordinator runs as its own process (`fedtre coordinator serve`, SQLite, loopback
only). Quiet: one admin calls WhoAmI over and over for --seconds; p50 and p95. Flood:
the same, while --flooders processes send calls with a forged API token (well-formed,
unknown) from four threads each, --rate calls a second in all (350 by default, the rate
issue 17 reported; 0: as fast as the coordinator answers), for --seconds or until
--max-calls in all; the legitimate calls are timed only while the flood lasts. Then the coordinator is stopped (it audits the window's counted
refusals on the way out) and the rows its audit log gained are counted, as are the
"call refused" lines of its log. Target (issue 17): the flood p50 within 2x of quiet,
and audit rows bounded whatever the flood's size.

Prints a table and writes bench/results/refusal_flood.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from network import coordinator_process  # noqa: E402  (bench/network.py)

RESULTS = Path(__file__).parent / "results" / "refusal_flood.json"
FORGED = "ft1.0123456789ab.forged-secret-for-the-benchmark"


def _stub(api: str, ca: Path, token: str) -> Any:
    import grpc

    from fedtre.credentials import person_credentials
    from fedtre.v1 import admin_pb2_grpc

    channel = grpc.secure_channel(api, person_credentials(ca=ca, token=token))
    return admin_pb2_grpc.AdminServiceStub(channel)


def timed_calls(
    api: str, ca: Path, token: str, seconds: float, while_: Any = lambda: True
) -> list[float]:
    """WhoAmI as one legitimate caller for `seconds` (and while while_() holds); the
    latency of each call in ms."""
    from fedtre.v1 import admin_pb2

    stub = _stub(api, ca, token)
    stub.WhoAmI(admin_pb2.WhoAmIRequest(), timeout=10)  # connect first
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and while_():
        started = time.perf_counter()
        stub.WhoAmI(admin_pb2.WhoAmIRequest(), timeout=10)
        times.append((time.perf_counter() - started) * 1000)
    return times


def flooder(
    api: str, ca: str, seconds: float, budget: int, rate: float, rotate: bool, out: Any
) -> None:
    """One process: four threads sending forged-token calls, `rate` a second in all (0: as
    fast as answered), a new forged secret on every call when rotate (so no one credential
    reaches the limit); put (refused, other, seconds taken) on out."""
    import grpc

    from fedtre.v1 import admin_pb2, admin_pb2_grpc

    if rotate:
        channel = grpc.secure_channel(
            api, grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
        )
        stub = admin_pb2_grpc.AdminServiceStub(channel)
    else:
        stub = _stub(api, Path(ca), FORGED)
    started = time.monotonic()
    end = started + seconds
    counts = {"refused": 0, "other": 0}
    lock = threading.Lock()

    def run() -> None:
        while time.monotonic() < end:
            with lock:
                sent = counts["refused"] + counts["other"]
                if sent >= budget:
                    return
            if rate:
                time.sleep(max(0.0, started + sent / rate - time.monotonic()))
            metadata = (
                [("authorization", f"Bearer {FORGED}-{threading.get_ident()}-{sent}")]
                if rotate
                else None
            )
            try:
                stub.WhoAmI(admin_pb2.WhoAmIRequest(), timeout=10, metadata=metadata)
                key = "other"
            except grpc.RpcError as exc:
                key = "refused" if exc.code() == grpc.StatusCode.UNAUTHENTICATED else "other"
            with lock:
                counts[key] += 1

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((counts["refused"], counts["other"], time.monotonic() - started))


def audit_rows(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_log").fetchone()[0])


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "calls": len(times),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fedtre.identity.ca import init_network

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        init_network(home / "pki", ["tre-a"])
        database = home / "coordinator.sqlite"
        ca = home / "pki" / "ca" / "ca.pem"
        with coordinator_process(home, f"sqlite:///{database}") as (_, _, api):
            token = (home / "admin" / "token").read_text().strip()
            quiet = timed_calls(api, ca, token, args.seconds)
            rows_before = audit_rows(database)
            results: Any = multiprocessing.get_context("spawn").Queue()
            budget = args.max_calls // args.flooders
            floods = [
                multiprocessing.get_context("spawn").Process(
                    target=flooder,
                    args=(
                        api,
                        str(ca),
                        args.seconds,
                        budget,
                        args.rate / args.flooders,
                        args.rotate,
                        results,
                    ),
                )
                for _ in range(args.flooders)
            ]
            for process in floods:
                process.start()
            time.sleep(0.5)  # let the flood reach speed
            # Measured only while the flood lasts (it stops early at --max-calls).
            loaded = timed_calls(
                api, ca, token, args.seconds, lambda: all(p.is_alive() for p in floods)
            )
            counts = [results.get(timeout=args.seconds + 60) for _ in floods]
            for process in floods:
                process.join(timeout=30)
        # Stopped: the window's counted refusals are audited on the way out.
        rows_added = audit_rows(database) - rows_before
        log = (home / "coordinator.log").read_text()
        refused_lines = sum('"call refused"' in line for line in log.splitlines())
    quiet_s, loaded_s = summary(quiet), summary(loaded)
    return {
        "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "seconds": args.seconds,
        "flooders": args.flooders,
        "rate_asked": args.rate,
        "rotate": args.rotate,
        "quiet": quiet_s,
        "flood": loaded_s,
        "p50_ratio": round(loaded_s["p50_ms"] / quiet_s["p50_ms"], 2),
        "refused_calls": sum(c[0] for c in counts),
        "flood_seconds": round(max(c[2] for c in counts), 2),
        "other_outcomes": sum(c[1] for c in counts),
        "audit_rows_added": rows_added,
        "refused_log_lines": refused_lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flooders", type=int, default=2)
    parser.add_argument("--max-calls", type=int, default=5000)
    parser.add_argument(
        "--rate",
        type=float,
        default=350.0,
        help="refused calls a second in all (issue 17 saw 3,500 in 10 s); 0: as fast as answered",
    )
    parser.add_argument(
        "--rotate",
        action="store_true",
        help="a new forged secret on every call, so no one credential reaches the limit",
    )
    args = parser.parse_args()
    figures = run(args)
    print(f"{'':10} {'calls':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for name in ("quiet", "flood"):
        f = figures[name]
        print(f"{name:10} {f['calls']:>7} {f['p50_ms']:>8} {f['p95_ms']:>8}")
    print(
        f"p50 ratio {figures['p50_ratio']}; {figures['refused_calls']} refused calls in "
        f"{figures['flood_seconds']} s "
        f"({figures['other_outcomes']} other outcomes); audit rows added "
        f"{figures['audit_rows_added']}; 'call refused' log lines {figures['refused_log_lines']}"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
