"""The JSON logs of a network's run: one event per line, ids in fields, no data or secrets."""

from __future__ import annotations

import io
import json
import logging

import pandas as pd

from fedtre.logs import JsonFormatter
from fedtre.testing import LocalNetwork

# A category no log line may ever show: it exists only in the TREs' data.
SECRET_PLACE = "Zanzibar-North"


def test_a_jobs_life_is_logged_as_json_events_with_ids_and_without_data():
    frame = pd.DataFrame({"age": list(range(20, 80)), "region": [SECRET_PLACE, "Elsewhere"] * 30})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with LocalNetwork(
            {"tre-a": {"cohort": frame}, "tre-b": {"cohort": frame}},
            policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"},
        ) as net:
            result = (
                net.client()
                .submit("crosstab", dataset="cohort", params={"rows": "region"})
                .result(timeout=20)
            )
            pem = (net.pki / "nodes" / "tre-a" / "key.pem").read_text()
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    # The data's category was released to the researcher, so it is there to leak.
    assert SECRET_PLACE in json.dumps(result.combined)

    text = stream.getvalue()
    events = [json.loads(line) for line in text.splitlines()]  # every line is one JSON event
    by_name: dict[str, list[dict]] = {}
    for event in events:
        assert {"ts", "level", "logger", "event"} <= set(event)
        by_name.setdefault(event["event"], []).append(event)

    job_id = result.job.id
    task_ids = {part.task_id for part in result.nodes.values()}
    assert by_name["job submitted"][0]["job_id"] == job_id
    delivered = by_name["task delivered"]
    assert {(e["job_id"], e["node_id"]) for e in delivered} == {
        (job_id, "tre-a"),
        (job_id, "tre-b"),
    }
    assert {e["task_id"] for e in delivered} == task_ids
    assert {e["task_id"] for e in by_name["result recorded"]} == task_ids
    assert {e["job_id"] for e in by_name["task finished"]} == {job_id}
    assert by_name["job finished"][0]["job_id"] == job_id
    assert SECRET_PLACE not in text
    assert "PRIVATE KEY" not in text and pem.splitlines()[1] not in text
