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
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
            return _respond(start_response, "200 OK", exposition(registry), CONTENT_TYPE_LATEST)
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


# The text format's type for each family type exposition() renders itself, and the name suffix.
_TEXT_TYPES = {
    "gauge": ("gauge", ""),
    "counter": ("counter", "_total"),
    "histogram": ("histogram", ""),
    "info": ("gauge", "_info"),
}


class _Families(Collector):
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def exposition(registry: Collector) -> bytes:
    """
    Given a registry, return its samples in the Prometheus text format: byte for
    byte what `prometheus_client.generate_latest` writes, in about half its
    time. generate_latest checks and escapes every label name of every sample
    (for UTF-8 names): 6,000 series (500 accounts) took it 27 ms. cloudplow's
    names are plain, so here each distinct label set is rendered once. A family
    of another type, or with timestamps or `_created` samples, goes through
    generate_latest.
    """
    rendered_labels: dict[tuple[tuple[str, str], ...], str] = {}
    output: list[str] = []
    for family in registry.collect():
        if family.type not in _TEXT_TYPES or any(
            sample.timestamp is not None or sample.name.endswith("_created") for sample in family.samples
        ):
            output.append(generate_latest(_Families([family])).decode())
            continue
        text_type, suffix = _TEXT_TYPES[family.type]
        name = family.name + suffix
        output.append(f"# HELP {name} {_escape_help(family.documentation)}\n# TYPE {name} {text_type}\n")
        for sample in family.samples:
            key = tuple(sample.labels.items())
            labels = rendered_labels.get(key)
            if labels is None:
                labels = rendered_labels[key] = _render_labels(sample.labels)
            output.append(f"{sample.name}{labels} {floatToGoString(sample.value)}\n")
    return "".join(output).encode()


def _render_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    pairs = (f'{name}="{_escape_label_value(value)}"' for name, value in sorted(labels.items()))
    return "{" + ",".join(pairs) + "}"


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


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
