"""Time to first paint of the portal's jobs page with 1,000 jobs, in headless Chromium.

    .venv/bin/python bench/portal_jobs.py [--jobs 1000] [--loads 5]

A LocalNetwork (one node, jobs left pending approval so nothing runs meanwhile), --jobs
`count` jobs submitted by one researcher, the portal served on loopback by uvicorn, and
Debian's chromium (headless, through chromedriver) signed in as that researcher. Each
load of /jobs is timed by the browser itself: first-contentful-paint and the navigation's
responseStart/responseEnd (the portal asking the coordinator for the jobs and rendering
them), from the Performance API. The first load warms the session's gRPC channel and is
left out. Prints a table and writes bench/results/portal_jobs.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "portal"))
from portal_browser import CHROMEDRIVER, CHROMIUM, Served  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "portal_jobs.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from fedtre.portal.coordinator_app import PortalConfig, create_app
    from fedtre.testing import LocalNetwork

    frame = pd.DataFrame({"age": np.random.default_rng(1).integers(18, 90, 200)})
    with (
        tempfile.TemporaryDirectory() as folder,
        LocalNetwork({"tre-a": {"cohort": frame}}, auto_approve=False, directory=folder) as net,
    ):
        started = time.monotonic()
        with net.client("researcher") as researcher:
            for _ in range(args.jobs):
                researcher.submit("count", dataset="cohort")
            listed = len(researcher.jobs(limit=args.jobs))
        submit_s = time.monotonic() - started
        portal = Served(create_app(PortalConfig(net.api_address, net.pki / "ca" / "ca.pem")))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            base = f"http://localhost:{portal.port}"
            driver.get(f"{base}/signin")
            driver.find_element(By.ID, "token").send_keys(net.tokens["researcher"])
            driver.find_element(By.ID, "signin").click()
            loads = [_load(driver, f"{base}/jobs") for _ in range(args.loads + 1)][1:]
            rows = len(driver.find_elements(By.CSS_SELECTOR, "#job-rows tr"))
        finally:
            driver.quit()
            portal.stop()
    summary = {
        "jobs": args.jobs,
        "listed": listed,
        "rows_on_page": rows,
        "loads": args.loads,
        "first_contentful_paint_ms": _stats([x["fcp"] for x in loads]),
        "response_start_ms": _stats([x["response_start"] for x in loads]),
        "response_end_ms": _stats([x["response_end"] for x in loads]),
        "html_kb": round(loads[-1]["bytes"] / 1024, 1),
        "submit_s": round(submit_s, 1),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }
    print(f"jobs page with {rows} rows ({summary['html_kb']} kB of HTML), {args.loads} loads:")
    for key in ("first_contentful_paint_ms", "response_start_ms", "response_end_ms"):
        s = summary[key]
        print(f"  {key:28s} median {s['median']:8.0f}   min {s['min']:8.0f}   max {s['max']:8.0f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")


def _load(driver: Any, url: str) -> dict[str, float]:
    driver.get(url)
    for _ in range(200):  # the paint entry lands just after load
        timing = driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "const p = performance.getEntriesByName('first-contentful-paint')[0];"
            "return {fcp: p ? p.startTime : null, response_start: n.responseStart,"
            " response_end: n.responseEnd, bytes: n.decodedBodySize};"
        )
        if timing["fcp"] is not None:
            return timing  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise RuntimeError("the browser reported no first-contentful-paint")


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


if __name__ == "__main__":
    main()
