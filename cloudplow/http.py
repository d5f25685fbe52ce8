"""The one HTTP server: /metrics (Prometheus), /status (JSON) and /healthz.

`create_app` is a plain WSGI application over a registry and two providers, so
tests can serve it with their own registry; `HttpServer` runs it in the
background with a bounded number of threads, whatever the clients do:

    selector thread: accept, wait for each connection's request head (with a
      deadline), drop the oldest waiting connection beyond a cap, queue the
      complete requests and hand them to the pool as it frees up
      └─ worker pool (a few threads): parse, run the app, write the response

An idle or slow client therefore holds a file descriptor for at most the
request timeout, never a thread. With `token` set, /metrics and /status
need `Authorization: Bearer <token>`; /healthz stays open for health checks.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import ipaddress
import json
import logging
import os
import resource
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

logger = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], object]


def create_app(
    registry: CollectorRegistry,
    status_provider: Callable[[], dict],
    health_provider: Callable[[], bool],
    *,
    token: str | None = None,
) -> Callable[[dict, StartResponse], Iterable[bytes]]:
    """
    Given a registry, what /status and /healthz report and an optional bearer
    token, return the WSGI application. With a token, /metrics and /status
    answer 401 unless the request carries `Authorization: Bearer <token>`.
    HEAD gets GET's status and headers and no body.
    """
    expected = token.encode() if token else None

    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _respond(start_response, "405 Method Not Allowed", b"GET only\n", "text/plain", head)
        if path in ("/metrics", "/status") and not authorized(environ, expected):
            return _respond(
                start_response,
                "401 Unauthorized",
                b"this server needs Authorization: Bearer <server.token>\n",
                "text/plain",
                head,
                [("WWW-Authenticate", 'Bearer realm="cloudplow"')],
            )
        if path == "/metrics":
            return _respond(start_response, "200 OK", exposition(registry), CONTENT_TYPE_LATEST, head)
        if path == "/status":
            body = json.dumps(status_provider(), indent=2, default=str).encode() + b"\n"
            return _respond(start_response, "200 OK", body, "application/json", head)
        if path == "/healthz":
            healthy = health_provider()
            return _respond(
                start_response,
                "200 OK" if healthy else "503 Service Unavailable",
                b"ok\n" if healthy else b"scheduler not running\n",
                "text/plain",
                head,
            )
        return _respond(
            start_response, "404 Not Found", b"try /metrics, /status or /healthz\n", "text/plain", head
        )

    return app


def authorized(environ: dict, expected: bytes | None) -> bool:
    """
    Given a WSGI environ and the expected token (None: no token configured),
    return True if the request may read /metrics and /status. The comparison
    takes the same time wherever the given token first differs.
    """
    if expected is None:
        return True
    scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    # WSGI hands header values over as latin-1 text: this gives back the bytes sent.
    given = credentials.strip().encode("latin-1", errors="replace")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, expected)


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


def _respond(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str,
    head: bool,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra_headers]
    start_response(status, headers)
    # HEAD: the Content-Length GET would send, and no body.
    return [] if head else [body]


# --- serving ---------------------------------------------------------------------

WORKERS = 4  # threads that run the app; a scrape takes ~20 ms, so 4 keep up with many scrapers
LISTEN_BACKLOG = 512  # connections the kernel queues before accept (a burst waits in it, not in SYN retries)
REQUEST_TIMEOUT_SECONDS = 10.0  # from connect to a complete request head; then the connection is closed
WRITE_TIMEOUT_SECONDS = 10.0  # the whole response; a client that reads too slowly is dropped
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; more is answered 431
MAX_IN_FLIGHT = 16  # requests handed to the pool at once; the others wait, read, in the selector


def http_url(host: str, port: int) -> str:
    """Given a host (name, IPv4 or IPv6 address) and a port, return http://host:port/."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    """
    Given the address a server listens on, return True if only this machine
    can reach it: a loopback address, or a name whose every address is one.
    The unspecified addresses (0.0.0.0, ::, "") listen everywhere.
    """
    try:
        return _is_loopback_address(host)
    except ValueError:
        pass
    if not host:
        return False
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:
        return False
    return bool(addresses) and all(_is_loopback_address(address) for address in addresses)


def exposure_warning(host: str, token: str | None) -> str | None:
    """
    Given the address the server listens on and its token, return the warning
    to log when other machines can read /metrics and /status without one, else None.
    """
    if token or is_loopback(host):
        return None
    return (
        f"server.host {host} is reachable from other machines and /metrics and /status answer "
        "anyone: set server.token (Prometheus then sends it), or listen on 127.0.0.1"
    )


def _is_loopback_address(address: str) -> bool:
    # An IPv6 address may carry a zone ("fe80::1%eth0"). Raise ValueError if it is not an address.
    return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback


def _address_family(host: str) -> socket.AddressFamily:
    """Given a listen address, return the socket family to bind it with. Raise OSError if unknown."""
    try:
        found = socket.getaddrinfo(host or None, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise OSError(error.errno, f"unknown address {host!r}: {error.strerror}") from error
    return socket.AddressFamily(found[0][0])


def _max_waiting_connections() -> int:
    # Leave half of the file descriptors to the ledger, rclone's pipes and the rest.
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft_limit // 2))


class _BoundServer(WSGIServer):
    """The listening socket and WSGI environ of wsgiref, without its serving loop."""

    request_queue_size = LISTEN_BACKLOG

    def __init__(self, host: str, port: int, family: socket.AddressFamily):
        self.address_family = family
        # The handler class given here goes unused: the pool runs each request through _Handler.
        super().__init__((host, port), WSGIRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer's server_bind looks the name up (socket.getfqdn): a DNS query at start.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])
        self.setup_environ()


class _Handler(WSGIRequestHandler):
    """One request whose head the selector has already read; the response goes to the socket."""

    def __init__(
        self,
        request: socket.socket,
        client_address: object,
        server: _BoundServer,
        head: bytes,
        write_timeout_seconds: float,
    ):
        self._head = head
        self._write_timeout_seconds = write_timeout_seconds
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.wfile = io.BufferedWriter(_DeadlineWriter(self.connection, self._write_timeout_seconds))

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("http: " + format, *args)


class _DeadlineWriter(io.RawIOBase):
    """
    Writes to a socket by sendall, all writes together within `seconds`: a
    client that reads a byte now and then cannot keep a worker for longer
    (a socket timeout alone restarts with every partial send).
    """

    def __init__(self, connection: socket.socket, seconds: float):
        self._connection = connection
        self._deadline = time.monotonic() + seconds

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        remaining_seconds = self._deadline - time.monotonic()
        if remaining_seconds <= 0:
            raise TimeoutError("the client did not read the response in time")
        self._connection.settimeout(remaining_seconds)
        self._connection.sendall(data)
        return memoryview(data).nbytes


@dataclass
class _Waiting:
    """A connection whose request head is still arriving."""

    address: object
    deadline: float
    head: bytearray = field(default_factory=bytearray)


def _answer_now(connection: socket.socket, status: str) -> None:
    """Best effort, never blocking: a short response from the selector thread, then close."""
    body = status.encode() + b"\n"
    response = (
        f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        connection.send(response + body)
    _close(connection)


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


class HttpServer:
    """
    Serves an app on host:port (IPv4 or IPv6) from a background thread until
    stopped, with at most `workers` + 1 threads however many clients connect.
    """

    def __init__(
        self,
        app: Callable,
        host: str,
        port: int,
        *,
        workers: int = WORKERS,
        request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
        write_timeout_seconds: float = WRITE_TIMEOUT_SECONDS,
        max_waiting: int | None = None,
    ):
        self._server = _BoundServer(host, port, _address_family(host))
        self._server.set_app(app)
        self._server.socket.setblocking(False)
        self.host = str(self._server.server_address[0])
        self.port = int(self._server.server_address[1])
        self.url = http_url(self.host, self.port)
        self.request_timeout_seconds = request_timeout_seconds
        self.write_timeout_seconds = write_timeout_seconds
        self.max_waiting = max_waiting or _max_waiting_connections()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-worker")
        self._in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._waiting: dict[socket.socket, _Waiting] = {}
        # Complete requests waiting for a worker (a burst), oldest first.
        self._ready: deque[tuple[socket.socket, object, bytes]] = deque()
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)  # a worker never waits to wake the selector
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close waiting connections, let running requests finish, close the socket."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        else:
            self._close_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._server.server_close()
        self._wake_writer.close()

    def _serve(self) -> None:
        self._selector.register(self._server.socket, selectors.EVENT_READ)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                timeout = 1.0
                if self._waiting:
                    # Deadlines are accept time + a constant: the first waiting connection expires first.
                    first = next(iter(self._waiting.values()))
                    timeout = min(timeout, max(0.0, first.deadline - time.monotonic()))
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is self._server.socket:
                        self._accept()
                    elif key.fileobj is self._wake_reader:
                        with contextlib.suppress(OSError):
                            self._wake_reader.recv(4096)
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                self._dispatch()
                self._expire(time.monotonic())
        except Exception:
            logger.exception("http: the server loop failed; /metrics, /status and /healthz are down")
        finally:
            self._close_all()

    def _accept(self) -> None:
        for _ in range(64):  # then look at the waiting connections again
            try:
                connection, address = self._server.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # Out of file descriptors: make room by dropping the longest-waiting connection.
                logger.debug("http: accept failed: %s", os.strerror(error.errno or 0))
                if not self._drop_oldest():
                    time.sleep(0.05)
                return
            connection.setblocking(False)
            if len(self._waiting) >= self.max_waiting:
                self._drop_oldest()
            self._waiting[connection] = _Waiting(address, time.monotonic() + self.request_timeout_seconds)
            self._selector.register(connection, selectors.EVENT_READ)

    def _read(self, connection: socket.socket) -> None:
        waiting = self._waiting.get(connection)
        if waiting is None:
            return
        try:
            data = connection.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._forget(connection)
            _close(connection)
            return
        searched_from = max(0, len(waiting.head) - 3)
        waiting.head += data
        complete = (
            waiting.head.find(b"\r\n\r\n", searched_from) >= 0
            or waiting.head.find(b"\n\n", searched_from) >= 0
        )
        if not complete and len(waiting.head) <= MAX_HEAD_BYTES:
            return
        self._forget(connection)
        if not complete:
            _answer_now(connection, "431 Request Header Fields Too Large")
            return
        if len(self._ready) >= self.max_waiting:
            _answer_now(self._ready.popleft()[0], "503 Service Unavailable")
        self._ready.append((connection, waiting.address, bytes(waiting.head)))

    def _dispatch(self) -> None:
        # A worker that finishes releases a slot and wakes the selector, which lands here.
        while self._ready and self._in_flight.acquire(blocking=False):
            connection, address, head = self._ready.popleft()
            try:
                self._pool.submit(self._handle, connection, address, head)
            except RuntimeError:  # the pool is shutting down
                self._in_flight.release()
                _close(connection)

    def _handle(self, connection: socket.socket, address: object, head: bytes) -> None:
        try:
            connection.setblocking(True)
            _Handler(connection, address, self._server, head, self.write_timeout_seconds)
        except OSError as error:
            logger.debug("http: %s: %s", address, error)
        except Exception:
            logger.exception("http: request from %s failed", address)
        finally:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_WR)
            connection.close()
            self._in_flight.release()
            with contextlib.suppress(OSError):
                self._wake_writer.send(b"x")

    def _expire(self, now: float) -> None:
        while self._waiting:
            connection, waiting = next(iter(self._waiting.items()))
            if waiting.deadline > now:
                return
            self._forget(connection)
            _close(connection)

    def _drop_oldest(self) -> bool:
        if not self._waiting:
            return False
        connection = next(iter(self._waiting))
        self._forget(connection)
        _close(connection)
        return True

    def _forget(self, connection: socket.socket) -> None:
        self._waiting.pop(connection, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection)

    def _close_all(self) -> None:
        for connection in list(self._waiting):
            self._forget(connection)
            _close(connection)
        while self._ready:
            _close(self._ready.popleft()[0])
        self._selector.close()
        self._wake_reader.close()
