"""Benchmark of /metrics and of the idle daemon's memory (not run by the tests).

(a) Render time: one uploader with 500 accounts (a few uploads each, every tenth
    blocked) and a stage with 8 transfers in flight; times what /metrics serves
    (`cloudplow.http.exposition`), prometheus_client's `generate_latest` on the
    same registry, and a real HTTP GET of /metrics through HttpServer. A second
    uploader, `archive`, has one account and no uploads. `--history N` first
    adds N uploaded files (and N/500 blocks) older than the window, as a ledger
    holds after months of use.
(b) Idle memory: starts `cloudplow run` on an empty source, waits until
    /healthz answers 200 and a few seconds more, reads VmRSS and VmHWM from
    /proc, and stops it with SIGTERM.

    .venv/bin/python bench/bench_metrics.py [--accounts 500] [--transfers 8] [--runs 200]
        [--history 0] [--idle-seconds 5] [--skip-daemon]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from cloudplow.config import Config, load_config
from cloudplow.http import HttpServer, create_app, exposition
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.metrics import CloudplowCollector
from cloudplow.scan import size_distribution

MB = 10**6
GB = 10**9
DAY = 86400.0
RENDER_TARGET_MS = 20.0
RSS_TARGET_MB = 80.0


def write_config(directory: Path, accounts: int, transfers: int, port: int = 0) -> Config:
    for source in ("source", "archive"):
        (directory / source).mkdir(parents=True, exist_ok=True)
    document = {
        "state_dir": "state",
        "server": {"host": "127.0.0.1", "port": port or 47949},
        "uploaders": {
            "media": {
                "source": "source",
                "destination": "remote:media",
                "accounts": {
                    "list": [
                        {"name": f"sa{index:04d}", "env": {"SECRET": f"pw-{index}"}}
                        for index in range(accounts)
                    ]
                },
                "transfers": transfers,
                "filters": {"exclude_open_files": False},
            },
            # Rarely used: its last upload is older than media's whole history.
            "archive": {"source": "archive", "destination": "remote:archive"},
        },
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_config(directory / "config.yaml")


def fill_ledger(ledger: Ledger, config: Config, now: float, history: int) -> None:
    """A few uploads per account within the window (one just outside), every tenth account blocked."""
    uploader = config.uploaders["media"]
    session = ledger.start_session(
        "media", now=now - DAY, trigger="min_queue", queue_files=0, queue_bytes=0, distribution=None
    )
    for index, account in enumerate(uploader.accounts):
        stage = ledger.start_stage(
            session,
            number=index + 1,
            account=account.name,
            transfers=8,
            overshoot=False,
            planned_files=4,
            planned_bytes=8 * GB,
            now=now - DAY,
        )
        for file_number, age in enumerate((25 * 3600.0, 20 * 3600.0, 9 * 3600.0, 600.0)):
            ledger.record_file(
                session_id=session,
                stage_id=stage,
                uploader="media",
                account=account.name,
                path=f"show{index}/episode{file_number}.mkv",
                size=(1 + file_number) * GB,
                started_at=now - age - 60,
                ended_at=now - age,
                outcome="uploaded",
            )
        if index % 10 == 0:
            ledger.block_account(
                account.name,
                uploader="media",
                now=now - 600,
                until=now + 3600,
                reason="limit",
                observed_limit_bytes=10 * GB,
                message="User rate limit exceeded.",
            )
        ledger.increment("media", "rclone_exits", label="0")
        ledger.increment("media", "rotations", label="filled")
    if history:
        # Straight into the tables: months of uploads and one limit block per five
        # hundred files, all older than the window.
        names = [account.name for account in uploader.accounts]
        with sqlite3.connect(ledger.path) as connection:
            connection.executemany(
                "INSERT INTO blocks (account, uploader, at, until, reason, observed_limit_bytes, message)"
                " VALUES (?, 'media', ?, ?, 'limit', ?, 'User rate limit exceeded.')",
                (
                    (
                        names[number % len(names)],
                        now - 2 * DAY - number * 500,
                        now - DAY - number * 500,
                        700 * GB,
                    )
                    for number in range(history // 500)
                ),
            )
            connection.executemany(
                "INSERT INTO files (session_id, stage_id, uploader, account, path, size, started_at,"
                " ended_at, outcome) VALUES (?, 1, 'media', ?, ?, ?, ?, ?, 'uploaded')",
                (
                    (
                        session,
                        names[number % len(names)],
                        f"old/{number}.mkv",
                        GB,
                        now - 2 * DAY - number,
                        now - 2 * DAY - number + 60,
                    )
                    for number in range(history)
                ),
            )


def fill_live(live: LiveState, transfers: int, now: float) -> None:
    sizes = [(1 + index % 40) * 100 * MB for index in range(2000)]
    live.update(
        "media",
        state="uploading",
        queue_files=len(sizes),
        queue_bytes=sum(sizes),
        queue_distribution=size_distribution(sizes).to_dict(),
        queue_oldest_mtime=now - DAY,
        last_check_at=now - 60,
        next_check_at=now + 1740,
        last_trigger="min_queue",
        last_trigger_fired=True,
        session_id=1,
        session_started_at=now - 600,
        stage_number=2,
        stage_account="sa0001",
        stage_account_index=2,
        accounts_in_pool=500,
        stage_planned_bytes=700 * GB,
        stage_planned_files=300,
        stage_transfers=transfers,
        stats={
            "bytes": 12 * GB,
            "speed": 110 * MB,
            "eta": 5400,
            "transferring": [
                {
                    "name": f"show/episode{slot}.mkv",
                    "size": 2 * GB,
                    "bytes": slot * 100 * MB,
                    "speed": 14 * MB,
                }
                for slot in range(transfers)
            ],
        },
    )


def time_ms(action: Callable[[], object], runs: int, warmup: int = 20) -> tuple[float, float]:
    """Return the median and the 95th percentile of `runs` timed calls, in milliseconds."""
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, round(0.95 * len(samples)) - 1)]


def bench_render(accounts: int, transfers: int, runs: int, history: int) -> dict[str, str]:
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="cloudplow-bench-") as directory:
        config = write_config(Path(directory), accounts, transfers)
        ledger = Ledger.in_state_dir(config.state_dir)
        try:
            fill_ledger(ledger, config, now, history)
            live = LiveState(list(config.uploaders))
            fill_live(live, transfers, now)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(
                CloudplowCollector(config, ledger, live, rclone_version="bench", clock=lambda: now)
            )
            text = exposition(registry)
            assert text == generate_latest(registry)
            render_median, render_p95 = time_ms(lambda: exposition(registry), runs)
            library_median, library_p95 = time_ms(lambda: generate_latest(registry), runs)
            server = HttpServer(create_app(registry, dict, lambda: True), "127.0.0.1", 0).start()
            try:
                with requests.Session() as http:
                    url = f"http://127.0.0.1:{server.port}/metrics"
                    get_median, get_p95 = time_ms(lambda: http.get(url, timeout=10).raise_for_status(), runs)
            finally:
                server.stop()
        finally:
            ledger.close()
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    verdict = "ok" if render_median <= RENDER_TARGET_MS else "MISSED"
    return {
        "scenario": f"{accounts} accounts, {transfers} transfers, {history} old files",
        "exposition": f"{series} series, {len(text) / 1000:.0f} kB",
        "render (served: http.exposition)": f"median {render_median:.2f} ms, p95 {render_p95:.2f} ms "
        f"(target median <= {RENDER_TARGET_MS:.0f} ms: {verdict})",
        "render (prometheus_client.generate_latest)": f"median {library_median:.2f} ms,"
        f" p95 {library_p95:.2f} ms",
        "HTTP GET /metrics": f"median {get_median:.2f} ms, p95 {get_p95:.2f} ms",
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def bench_idle_daemon(idle_seconds: float) -> dict[str, str]:
    cloudplow = Path(sys.executable).parent / "cloudplow"
    with tempfile.TemporaryDirectory(prefix="cloudplow-bench-") as directory:
        port = free_port()
        config = write_config(Path(directory), accounts=3, transfers=8, port=port)
        process = subprocess.Popen(
            [str(cloudplow), "--config", str(config.path), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"cloudplow run exited {process.returncode}: {process.stderr.read()!r}"
                    )
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("cloudplow run did not answer /healthz within 60 s")
                time.sleep(0.1)
            time.sleep(idle_seconds)
            rss_mb = proc_status_kb(process.pid, "VmRSS") / 1024
            hwm_mb = proc_status_kb(process.pid, "VmHWM") / 1024
        finally:
            os.kill(process.pid, signal.SIGTERM)
            exit_code = process.wait(timeout=60)
            process.stderr.close()  # type: ignore[union-attr]
    verdict = "ok" if rss_mb <= RSS_TARGET_MB else "MISSED"
    return {
        "idle_rss": f"VmRSS {rss_mb:.1f} MB, VmHWM {hwm_mb:.1f} MB "
        f"(target <= {RSS_TARGET_MB:.0f} MB: {verdict}); exit {exit_code} on SIGTERM",
    }


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return (
        f"{len(os.sched_getaffinity(0))} CPUs ({model}), Python {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--transfers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--history", type=int, default=0, help="uploaded files older than the window")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--skip-daemon", action="store_true")
    arguments = parser.parse_args()

    figures = bench_render(arguments.accounts, arguments.transfers, arguments.runs, arguments.history)
    if not arguments.skip_daemon:
        figures.update(bench_idle_daemon(arguments.idle_seconds))
    figures["machine"] = machine()
    print("| what | figure |")
    print("|---|---|")
    for name, figure in figures.items():
        print(f"| {name} | {figure} |")


if __name__ == "__main__":
    main()
