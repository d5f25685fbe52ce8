"""The one HTTP server: /metrics (Prometheus), /status (JSON) and /healthz.

`create_app` is a plain WSGI application over a registry and two providers, so
tests can serve it with their own registry; `serve` runs it on a thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], object]


def create_app(
    registry: CollectorRegistry, status_provider: Callable[[], dict], health_provider: Callable[[], bool]
) -> Callable[[dict, StartResponse], Iterable[bytes]]:
    """Given a registry and what /status and /healthz report, return the WSGI application."""

    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _respond(start_response, "405 Method Not Allowed", b"GET only\n", "text/plain")
        if path == "/metrics":
            return _respond(start_response, "200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)
        if path == "/status":
            body = json.dumps(status_provider(), indent=2, default=str).encode() + b"\n"
            return _respond(start_response, "200 OK", body, "application/json")
        if path == "/healthz":
            healthy = health_provider()
            return _respond(
                start_response,
                "200 OK" if healthy else "503 Service Unavailable",
                b"ok\n" if healthy else b"scheduler not running\n",
                "text/plain",
            )
        return _respond(start_response, "404 Not Found", b"try /metrics, /status or /healthz\n", "text/plain")

    return app


def _respond(start_response: StartResponse, status: str, body: bytes, content_type: str) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        logger.debug("http: " + format, *args)


class HttpServer:
    """Serves an app on host:port from a background thread until stopped."""

    def __init__(self, app: Callable, host: str, port: int):
        self._server = make_server(
            host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
