"""The HTTP server under load and abuse, on IPv4 and IPv6, with and without a bearer token.

The first part serves `create_app` through the real `HttpServer` in this
process, so its threads can be counted; the second runs the real daemon
(`cloudplow run`) and the real `cloudplow status` against it. The timed
figures (300 idle connections, /metrics within 1 s) are in bench/bench_http.py.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, Gauge

from cloudplow import __version__
from cloudplow.http import WORKERS, HttpServer, create_app, exposure_warning, http_url, is_loopback
from tests.conftest import REPOSITORY, free_port, run_cli, write_config

TOKEN = "planted-token-4c1d9e0b7a"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def serve(host: str = "127.0.0.1", token: str | None = None, **settings: object) -> HttpServer:
    registry = CollectorRegistry(auto_describe=False)
    Gauge("cloudplow_test_value", "a value to serve", registry=registry).set(42)
    app = create_app(registry, lambda: {"source": "test"}, lambda: True, token=token)
    return HttpServer(app, host, 0, **settings).start()  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[HttpServer]:
    served = serve()
    try:
        yield served
    finally:
        served.stop()


def raw_request(server: HttpServer, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes, read until the server closes; return everything it sent."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def closed_by_server(connection: socket.socket, timeout: float) -> bool:
    """True if the peer closes within `timeout` without sending anything."""
    connection.settimeout(timeout)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_half_sent_connections_hold_no_thread_and_the_server_answers(server: HttpServer):
    threads_before = threading.active_count()
    held = []
    try:
        for index in range(300):
            connection = socket.create_connection((server.host, server.port), timeout=10)
            held.append(connection)
            if index % 3 == 1:
                connection.sendall(b"GET /metrics HTTP/1.1\r\n")  # a head that never ends
            elif index % 3 == 2:
                connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        response = requests.get(server.url + "metrics", timeout=30)
        assert response.status_code == 200
        assert "cloudplow_test_value 42.0" in response.text
        # The selector thread and the pool, however many connections wait.
        assert threading.active_count() - threads_before <= WORKERS + 1
        # The held connections are still open (none has reached the 10 s deadline yet).
        assert not closed_by_server(held[0], timeout=0.05)
    finally:
        for connection in held:
            connection.close()


def test_a_connection_without_a_complete_request_is_closed_at_the_timeout():
    server = serve(request_timeout_seconds=0.5)
    try:
        silent = socket.create_connection((server.host, server.port))
        partial = socket.create_connection((server.host, server.port))
        partial.sendall(b"GET /status HTTP/1.1\r\n")
        started = time.monotonic()
        assert closed_by_server(silent, timeout=15)
        assert closed_by_server(partial, timeout=15)
        assert time.monotonic() - started >= 0.3
        assert requests.get(server.url + "healthz", timeout=10).status_code == 200
    finally:
        silent.close()
        partial.close()
        server.stop()


def test_a_client_that_does_not_read_its_response_loses_it_and_frees_the_worker():
    registry = CollectorRegistry(auto_describe=False)
    gauge = Gauge("cloudplow_test_series", "many series", ["name"], registry=registry)
    for index in range(40_000):
        gauge.labels(f"a-long-label-value-to-fill-the-socket-buffers-{index:06d}").set(index)
    app = create_app(registry, dict, lambda: True)
    server = HttpServer(app, "127.0.0.1", 0, workers=1, write_timeout_seconds=1.0).start()
    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((server.host, server.port))
        stalled.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        time.sleep(0.5)  # the only worker is now stuck writing to it
        started = time.monotonic()
        assert requests.get(server.url + "healthz", timeout=30).status_code == 200
        assert time.monotonic() - started < 20
        received = b""
        stalled.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while chunk := stalled.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.0 200 ")
        assert len(received) < len(requests.get(server.url + "metrics", timeout=30).content)
    finally:
        stalled.close()
        server.stop()


def test_past_the_cap_the_longest_waiting_connection_is_dropped():
    server = serve(max_waiting=8)
    try:
        first = socket.create_connection((server.host, server.port))
        others = [socket.create_connection((server.host, server.port)) for _ in range(8)]
        assert closed_by_server(first, timeout=10)
        assert not closed_by_server(others[-1], timeout=0.2)
        assert requests.get(server.url + "healthz", timeout=10).text == "ok\n"
    finally:
        for connection in (first, *others):
            connection.close()
        server.stop()


def test_a_burst_of_clients_is_answered_in_full(server: HttpServer):
    answers: list[bytes] = []
    barrier = threading.Barrier(200)

    def client() -> None:
        barrier.wait()
        answers.append(raw_request(server, b"GET /healthz HTTP/1.0\r\n\r\n", timeout=60))

    clients = [threading.Thread(target=client) for _ in range(200)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert len(answers) == 200
    assert all(answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"\r\n\r\nok\n") for answer in answers)


def test_listen_backlog_is_at_least_128(server: HttpServer):
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # State, Recv-Q, Send-Q: for a listening socket Send-Q is the backlog the kernel grants.
    assert listing[0] == "LISTEN"
    assert int(listing[2]) >= 128


@pytest.mark.parametrize("path", ["/metrics", "/status", "/healthz", "/nope"])
def test_head_sends_the_headers_of_get_and_no_body(server: HttpServer, path: str):
    got = raw_request(server, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    head = raw_request(server, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
    get_headers, _, get_body = got.partition(b"\r\n\r\n")
    head_headers, _, head_body = head.partition(b"\r\n\r\n")
    assert get_body and head_body == b""
    assert head_headers.split(b"\r\n")[0] == get_headers.split(b"\r\n")[0]
    assert f"Content-Length: {len(get_body)}".encode() in head_headers.split(b"\r\n")


def test_an_oversized_request_head_gets_431(server: HttpServer):
    response = raw_request(server, b"GET /metrics HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 20_000)
    assert response.startswith(b"HTTP/1.0 431 ")
    assert requests.get(server.url + "metrics", timeout=10).status_code == 200


def test_ipv6_loopback():
    server = serve("::1")
    try:
        assert server.host == "::1"
        assert server.url == f"http://[::1]:{server.port}/"
        response = requests.get(server.url + "metrics", timeout=10)
        assert response.status_code == 200 and "cloudplow_test_value 42.0" in response.text
        with socket.socket() as probe:
            # IPv6 only: nothing of ours listens on the IPv4 loopback port.
            assert probe.connect_ex(("127.0.0.1", server.port)) != 0
    finally:
        server.stop()


def test_token_guards_metrics_and_status_but_not_healthz():
    server = serve(token=TOKEN)
    try:
        for path in ("metrics", "status"):
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-of-some-length"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": TOKEN},
            ):
                response = requests.get(server.url + path, headers=headers, timeout=10)
                assert response.status_code == 401, (path, headers)
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="cloudplow"'
                assert TOKEN not in response.text
            assert requests.get(server.url + path, headers=BEARER, timeout=10).status_code == 200
            lower_scheme = {"Authorization": f"bearer {TOKEN}"}
            assert requests.get(server.url + path, headers=lower_scheme, timeout=10).status_code == 200
        assert requests.get(server.url + "healthz", timeout=10).status_code == 200
        refused = raw_request(server, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert refused.startswith(b"HTTP/1.0 401 ") and refused.endswith(b"\r\n\r\n")
    finally:
        server.stop()


def test_loopback_and_the_exposure_warning():
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        assert is_loopback(host), host
        assert exposure_warning(host, None) is None
    for host in ("0.0.0.0", "::", "", "192.0.2.10", "2001:db8::1"):
        assert not is_loopback(host), host
        warning = exposure_warning(host, None)
        assert warning is not None and "server.token" in warning
        assert exposure_warning(host, TOKEN) is None
    assert http_url("::1", 80) == "http://[::1]:80/"
    assert http_url("127.0.0.1", 80) == "http://127.0.0.1:80/"


# --- the real daemon -----------------------------------------------------------------------------


def daemon_config(tmp_path: Path, quota_server, server_settings: dict) -> tuple[Path, int]:
    """A daemon with an empty source (its checks start no session) and the given server keys."""
    server = quota_server({"alice": 10**9})
    source = tmp_path / "source"
    source.mkdir(parents=True)
    port = free_port()
    config = write_config(
        tmp_path,
        server,
        users=["alice"],
        quota_bytes=10**9,
        source=source,
        server_port=port,
        extra={"check": {"interval": "1h"}},
    )
    document = yaml.safe_load(config.read_text())
    document["server"].update(server_settings)
    config.write_text(yaml.safe_dump(document))
    return config, port


@pytest.mark.integration
def test_daemon_with_a_token(tmp_path, quota_server, start_daemon):
    config, port = daemon_config(tmp_path, quota_server, {"token": TOKEN})
    daemon = start_daemon(config, port, "--verbose")
    assert daemon.get("/healthz").status_code == 200
    for path in ("/metrics", "/status"):
        assert daemon.get(path).status_code == 401
        assert requests.get(daemon.url + path, headers=BEARER, timeout=10).status_code == 200
    metrics = requests.get(daemon.url + "/metrics", headers=BEARER, timeout=10).text
    assert 'cloudplow_build_info{rclone_version="v' in metrics and f'version="{__version__}"' in metrics
    # `cloudplow status` asks the daemon, with the token.
    status = run_cli(config, "status", timeout=30)
    assert status.returncode == 0, status.stderr
    assert "from the running daemon" in status.stdout
    summary = run_cli(config, "check-config", timeout=30)
    assert summary.returncode == 0 and "server.token: ***" in summary.stdout
    assert daemon.stop() == 0
    log = daemon.log()
    assert f"cloudplow {__version__} (rclone v" in log
    assert "need the bearer token" in log and "reachable from other machines" not in log
    for where, text in (("log", log), ("status", status.stdout + status.stderr), ("summary", summary.stdout)):
        assert TOKEN not in text, where


@pytest.mark.integration
def test_daemon_on_ipv6_loopback(tmp_path, quota_server, start_daemon):
    config, port = daemon_config(tmp_path, quota_server, {"host": "::1"})
    daemon = start_daemon(config, port, host="::1")
    assert daemon.status()["source"] == "daemon"
    status = run_cli(config, "status", timeout=30)
    assert status.returncode == 0 and "from the running daemon" in status.stdout
    assert daemon.stop() == 0
    log = daemon.log()
    assert f"on http://[::1]:{port}/" in log
    assert "reachable from other machines" not in log


@pytest.mark.integration
def test_a_bad_token_is_refused_without_being_shown(tmp_path, quota_server):
    short = "short-s3cret"
    config, _ = daemon_config(tmp_path, quota_server, {"token": short})
    completed = run_cli(config, "check-config", timeout=30)
    assert completed.returncode == 2
    assert "server.token: use at least 16 printable ASCII characters" in completed.stderr
    assert short not in completed.stdout + completed.stderr
    spaced = "a long token with spaces in it"
    config, _ = daemon_config(tmp_path / "spaced", quota_server, {"token": spaced})
    completed = run_cli(config, "check-config", timeout=30)
    assert completed.returncode == 2 and "server.token: use at least 16" in completed.stderr
    assert "spaces in it" not in completed.stdout + completed.stderr
    config, _ = daemon_config(tmp_path / "listed", quota_server, {"token": [TOKEN]})
    completed = run_cli(config, "check-config", timeout=30)
    assert completed.returncode == 2 and "server.token: expected text, got a list" in completed.stderr
    assert TOKEN not in completed.stdout + completed.stderr


def commented_authorization(prometheus_yml: str) -> str:
    """Return the `authorization:` example in the cloudplow job of prometheus.yml, uncommented."""
    lines = prometheus_yml.splitlines()
    start = lines.index("    # authorization:")
    block = [lines[start]]
    block += [line for line in lines[start + 1 : start + 3] if line.startswith("    #   ")]
    assert len(block) == 3, block
    return "\n".join("    " + line.removeprefix("    # ") for line in block) + "\n"


@pytest.mark.integration
def test_prometheus_scrapes_with_the_shipped_authorization_example(
    tmp_path, quota_server, start_daemon, start_prometheus
):
    config, port = daemon_config(tmp_path, quota_server, {"token": TOKEN})
    start_daemon(config, port)
    shipped = (REPOSITORY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    example = commented_authorization(shipped)
    assert "credentials_file: /etc/prometheus/cloudplow.token" in example
    token_file = tmp_path / "cloudplow.token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")  # as `echo TOKEN > file` writes it
    job = '      - targets: ["cloudplow:47949"]\n'
    assert job in shipped
    enabled = shipped.replace(job, job + example.replace("/etc/prometheus/cloudplow.token", str(token_file)))
    prometheus_dir = tmp_path / "prometheus"
    shutil.copytree(REPOSITORY / "prometheus" / "rules", prometheus_dir / "rules")
    (prometheus_dir / "prometheus.yml").write_text(enabled, encoding="utf-8")

    prometheus = start_prometheus(port, prometheus_dir=prometheus_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        up = prometheus.query('up{job="cloudplow"}')
        if up and up[0]["value"][1] == "1":
            break
        time.sleep(0.2)
    targets = prometheus.api("targets", state="active")["activeTargets"]
    assert up and up[0]["value"][1] == "1", targets
    assert prometheus.query('cloudplow_build_info{job="cloudplow"}')
    assert TOKEN not in prometheus.log()
