"""The operations HTTP endpoint of a fedtre process: Prometheus /metrics, /livez and /readyz.

Plain HTTP on its own port, apart from the mutual-TLS gRPC port, so that Prometheus and
Kubernetes probes can reach it. It serves only metrics and health, no ids and no data,
and whatever public pages its process gives it (the coordinator's Data Use Register and
dataset catalogue); read_page reads one of them.
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from fedtre.errors import InvalidRequest, Unavailable

logger = logging.getLogger(__name__)

Check = Callable[[], bool]
# A public page: returns (content type, body), built afresh for each request.
Page = Callable[[], tuple[str, bytes]]


def parse_listen(listen: str, what: str = "metrics listen address") -> tuple[str, int]:
    """Return (host, port) from HOST:PORT ([::1]:PORT for IPv6); port 0 picks a free port.

    Raises InvalidRequest naming what was given and how to write it.
    """
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidRequest(
            f"{what} {listen!r} is not HOST:PORT; e.g. 127.0.0.1:9464, or 0.0.0.0:9464 "
            "to be scraped from other hosts"
        )
    return host, int(port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    # Every scrape would otherwise print an access line on stderr, outside the JSON log.
    def log_message(self, format: str, *args: Any) -> None:
        pass


class OpsServer:
    """Serves /metrics from registry, and /livez and /readyz from the given checks.

    A check returns True when healthy; the endpoint answers 200, or 503 when it is not.
    """

    def __init__(
        self,
        listen: str,
        registry: CollectorRegistry,
        *,
        live: Check = lambda: True,
        ready: Check = lambda: True,
        pages: Mapping[str, Page] | None = None,
    ) -> None:
        self.host, self._requested_port = parse_listen(listen)
        self._pages = dict(pages or {})
        self._metrics = make_wsgi_app(registry)
        self._checks = {"/livez": live, "/readyz": ready}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        """Bind and serve in a background thread; return the bound port.

        Raises Unavailable when the address cannot be bound (in use, or not this host's).
        """
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._server = make_server(
                self.host,
                self._requested_port,
                self._app,
                server_class=server_class,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise Unavailable(
                f"cannot serve metrics on {self.host}:{self._requested_port} ({exc.strerror}); "
                "choose a free port"
            ) from exc
        self.port = self._server.server_port
        # A short poll interval keeps close() quick; the cost is ten idle wake-ups a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"ops-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("operations endpoint serving", extra={"host": self.host, "port": self.port})
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            try:
                return self._metrics(environ, start_response)  # type: ignore[no-any-return]
            except Exception:
                logger.exception("cannot render the metrics")
                return _plain(start_response, "500 Internal Server Error", "see the log\n")
        page = self._pages.get(path)
        if page is not None:
            return self._page(page, path, start_response)
        check = self._checks.get(path)
        if check is None:
            known = ", ".join(["/metrics", "/livez", "/readyz", *self._pages])
            return _plain(start_response, "404 Not Found", f"try {known}\n")
        try:
            healthy = check()
        except Exception:
            logger.exception("health check raised", extra={"path": path})
            healthy = False
        if healthy:
            return _plain(start_response, "200 OK", "ok\n")
        return _plain(start_response, "503 Service Unavailable", "not ok\n")

    @staticmethod
    def _page(page: Page, path: str, start_response: Callable[..., Any]) -> list[bytes]:
        try:
            content_type, body = page()
        except Exception:
            logger.exception("cannot render a page", extra={"path": path})
            return _plain(start_response, "503 Service Unavailable", "try again later\n")
        start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [body]


def read_page(url: str, page: str, timeout: float = 30.0) -> bytes:
    """The public page (e.g. "/catalogue.json") of the ops HTTP server at url, as served.

    url is http://HOST:PORT (the process's --metrics-listen). Raises InvalidRequest for a
    URL that is not http(s), Unavailable when the page cannot be read.
    """
    if not url.startswith(("http://", "https://")):
        raise InvalidRequest(f"{url!r} is not an http:// address, e.g. http://127.0.0.1:9464")
    address = f"{url.rstrip('/')}{page}"
    try:
        with urllib.request.urlopen(address, timeout=timeout) as response:  # noqa: S310
            return response.read()  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"cannot read {address} ({exc}); is the address right?") from None


def _plain(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]
