"""Benchmark of the daemon's HTTP server under idle connections and bursts (not run by the tests).

Starts a real `cloudplow run` (500 accounts, an empty source: a realistic
/metrics and no uploads), then:

(a) Idle hold: opens `--connections` connections and keeps them open without
    finishing a request (a third send nothing, a third half a request line, a
    third half the headers), for `--hold-seconds`, while a sampler reads the
    daemon's thread count from /proc/PID/task every 20 ms and /metrics is
    scraped over a fresh connection again and again. Targets: never more than
    64 threads; every scrape within 1 s.
(b) The request timeout: how many of the held connections the daemon has
    closed once they have waited past it.
(c) Burst: as many clients as `--connections` connect and GET /healthz at the
    same moment; the slowest answer shows whether the listen backlog holds
    them (a backlog of 5 makes the kernel drop SYNs, and the client retries
    after 1 s, 3 s, ...).

`--baseline-src DIR` runs the same against another checkout's code (for
example the main branch before this server), with PYTHONPATH=DIR.

    .venv/bin/python bench/bench_http.py [--connections 300] [--hold-seconds 8] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from bench_metrics import free_port, machine, write_config  # bench/ is on sys.path: run as a script

from cloudplow.http import REQUEST_TIMEOUT_SECONDS  # what (b) waits past

THREADS_TARGET = 64
SCRAPE_TARGET_SECONDS = 1.0


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class Sampler(threading.Thread):
    """Reads a process's thread count every 20 ms until stopped; keeps the maximum."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.maximum = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(OSError):
                self.maximum = max(self.maximum, thread_count(self.pid))
            time.sleep(0.02)

    def stop(self) -> int:
        self.stopping.set()
        self.join()
        return self.maximum


def start_daemon(directory: Path, port: int, baseline_src: Path | None) -> subprocess.Popen:
    config = write_config(directory, accounts=500, transfers=8, port=port)
    environment = dict(os.environ)
    if baseline_src is not None:
        environment["PYTHONPATH"] = str(baseline_src)
        environment["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the other checkout untouched
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudplow", "--config", str(config.path), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        cwd=directory,  # `-m` puts the working directory first on sys.path, before PYTHONPATH
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cloudplow run exited {process.returncode}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("cloudplow run did not answer /healthz within 60 s")


def is_open(connection: socket.socket) -> bool:
    """True if the peer has not closed the connection (nothing to read, no EOF)."""
    connection.setblocking(False)
    try:
        return connection.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def hold_idle(port: int, pid: int, connections: int, hold_seconds: float) -> dict[str, object]:
    sampler = Sampler(pid)
    sampler.start()
    held: list[socket.socket] = []
    scrapes: list[float] = []
    failures = 0
    opened_at = time.monotonic()
    try:
        for index in range(connections):
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(connection)
            if index % 3 == 1:
                connection.sendall(b"GET /metrics HTTP/1.1\r\n")
            elif index % 3 == 2:
                connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
        opened_seconds = time.monotonic() - opened_at
        # At least 5 scrapes, even when opening the connections took the whole hold (a backlog of 5).
        while time.monotonic() - opened_at < hold_seconds or len(scrapes) + failures < 5:
            started = time.perf_counter()
            try:
                response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
                response.raise_for_status()
                scrapes.append(time.perf_counter() - started)
            except requests.RequestException:
                failures += 1
            time.sleep(0.1)
        open_at_end_of_hold = sum(is_open(connection) for connection in held)
        threads_held = sampler.stop()
        # (b): wait until every held connection is past the request timeout.
        time.sleep(max(0.0, opened_at + REQUEST_TIMEOUT_SECONDS + 3 - time.monotonic()))
        open_after_timeout = sum(is_open(connection) for connection in held)
    finally:
        sampler.stopping.set()
        for connection in held:
            connection.close()
    return {
        "opened_seconds": opened_seconds,
        "threads_held": threads_held,
        "scrapes": scrapes,
        "failures": failures,
        "open_at_end_of_hold": open_at_end_of_hold,
        "open_after_timeout": open_after_timeout,
    }


def burst(port: int, pid: int, clients: int) -> dict[str, object]:
    sampler = Sampler(pid)
    sampler.start()
    barrier = threading.Barrier(clients)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
                connection.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                answer = b""
                while chunk := connection.recv(4096):
                    answer += chunk
            ok = answer.startswith(b"HTTP/1.0 200")
        except OSError as error:
            ok, answer = False, str(error).encode()
        with lock:
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failures.append(answer[:40].decode(errors="replace"))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "failures": failures, "threads": sampler.stop()}


def run(connections: int, hold_seconds: float, baseline_src: Path | None) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="cloudplow-bench-http-") as directory:
        port = free_port()
        process = start_daemon(Path(directory), port, baseline_src)
        try:
            time.sleep(2)  # the first check runs at start
            threads_idle = thread_count(process.pid)
            held = hold_idle(port, process.pid, connections, hold_seconds)
            bursted = burst(port, process.pid, connections)
            threads_after = thread_count(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            exit_code = process.wait(timeout=60)
    scrapes = sorted(held["scrapes"])  # type: ignore[arg-type]
    latencies = sorted(bursted["latencies"])  # type: ignore[arg-type]
    threads_ok = max(held["threads_held"], bursted["threads"]) <= THREADS_TARGET  # type: ignore[call-overload]
    scrape_ok = bool(scrapes) and not held["failures"] and scrapes[-1] <= SCRAPE_TARGET_SECONDS
    return [
        ("daemon threads, idle", f"{threads_idle}"),
        (
            f"daemon threads, {connections} idle connections held {hold_seconds:.0f} s",
            f"max {held['threads_held']} (target <= {THREADS_TARGET}: {'ok' if threads_ok else 'MISSED'})",
        ),
        (
            "GET /metrics while they are held",
            f"{len(scrapes)} scrapes, {held['failures']} failed;"
            f" median {statistics.median(scrapes) * 1000:.0f} ms,"
            f" max {scrapes[-1] * 1000:.0f} ms (target <= {SCRAPE_TARGET_SECONDS * 1000:.0f} ms:"
            f" {'ok' if scrape_ok else 'MISSED'})"
            if scrapes
            else f"no scrape answered ({held['failures']} failed): MISSED",
        ),
        ("time to open the idle connections", f"{held['opened_seconds'] * 1000:.0f} ms"),
        (
            "held connections still open",
            f"{held['open_at_end_of_hold']} after {hold_seconds:.0f} s;"
            f" {held['open_after_timeout']} after {REQUEST_TIMEOUT_SECONDS + 3:.0f} s",
        ),
        (
            f"burst: {connections} clients GET /healthz at once",
            f"{len(latencies)} answered, {len(bursted['failures'])} failed"  # type: ignore[arg-type]
            + (
                f"; median {statistics.median(latencies) * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
                if latencies
                else ""
            )
            + f"; daemon threads max {bursted['threads']}",
        ),
        ("daemon threads afterwards", f"{threads_after}; exit {exit_code} on SIGTERM"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--hold-seconds", type=float, default=8.0)
    parser.add_argument("--baseline-src", type=Path, help="run another checkout's cloudplow instead")
    arguments = parser.parse_args()
    figures = run(arguments.connections, arguments.hold_seconds, arguments.baseline_src)
    figures.append(("code", str(arguments.baseline_src or "this checkout")))
    load = " ".join(f"{average:.2f}" for average in os.getloadavg())
    figures.append(("machine", f"{machine()}; load average {load} at the end"))
    print("| what | figure |")
    print("|---|---|")
    for name, figure in figures:
        print(f"| {name} | {figure} |")


if __name__ == "__main__":
    main()
