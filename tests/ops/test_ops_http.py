"""The operations HTTP endpoint: address parsing, health answers, a port already in use."""

from __future__ import annotations

import pytest
from ops_testkit import http_get
from prometheus_client import CollectorRegistry, Counter

from fedtre.errors import InvalidRequest, Unavailable
from fedtre.ops_http import OpsServer, parse_listen, read_page


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_listen_addresses_parse(listen, parsed):
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize("listen", ["9464", ":9464", "host:", "host:http", "host:65536", ""])
def test_bad_listen_addresses_are_refused_with_an_example(listen):
    with pytest.raises(InvalidRequest, match="HOST:PORT; e.g. 127.0.0.1:9464"):
        parse_listen(listen)


def test_endpoints_answer_from_the_registry_and_the_checks():
    registry = CollectorRegistry()
    Counter("fedtre_example_total", "An example.", registry=registry).inc(3)
    ready = {"value": False}

    def broken() -> bool:
        raise RuntimeError("a bug in a check")

    server = OpsServer("127.0.0.1:0", registry, live=broken, ready=lambda: ready["value"])
    port = server.start()
    try:
        status, body = http_get(port, "/metrics")
        assert status == 200 and "fedtre_example_total 3.0" in body
        assert http_get(port, "/readyz")[0] == 503
        ready["value"] = True
        assert http_get(port, "/readyz")[0] == 200
        assert http_get(port, "/livez")[0] == 503  # a failing check is unhealthy, not a crash
        assert http_get(port, "/")[0] == 404
    finally:
        server.close()


def test_a_port_in_use_is_reported_not_raised_as_a_traceback():
    first = OpsServer("127.0.0.1:0", CollectorRegistry())
    port = first.start()
    try:
        with pytest.raises(Unavailable, match=f"127.0.0.1:{port}"):
            OpsServer(f"127.0.0.1:{port}", CollectorRegistry()).start()
    finally:
        first.close()


def test_a_public_page_is_read_back_and_a_failing_one_is_503():
    def broken() -> tuple[str, bytes]:
        raise RuntimeError("a bug in a page")

    pages = {"/catalogue.json": lambda: ("application/json", b'{"entries": []}'), "/x": broken}
    server = OpsServer("127.0.0.1:0", CollectorRegistry(), pages=pages)
    port = server.start()
    try:
        assert read_page(f"http://127.0.0.1:{port}/", "/catalogue.json") == b'{"entries": []}'
        assert http_get(port, "/x") == (503, "try again later\n")
        assert "/catalogue.json" in http_get(port, "/nosuch")[1]  # the 404 names the pages
        with pytest.raises(Unavailable, match="is the address right"):
            read_page(f"http://127.0.0.1:{port}", "/nosuch")
    finally:
        server.close()
    with pytest.raises(InvalidRequest, match="not an http:// address"):
        read_page(f"127.0.0.1:{port}", "/catalogue.json")
