"""Benchmark: what cloudplow's orchestration costs against plain rclone (not run by the tests).

The same seeded set of files (default 2,000 files, 2 GB, media-like sizes) is
uploaded to the local WebDAV quota server (cloudplow.demo.quotadav, on
127.0.0.1), each run to a fresh server and folder:

- `cloudplow upload`: the real CLI as a subprocess, mode copy (the source
  stays for the next run), 3 accounts whose quotas are each `--share` of the
  set (0.4: together 1.2 x the set), so the session plans and runs one stage
  per account and rotates through all three;
- `rclone copy SRC dav:media`: one account with a quota far above the set.

Both use the same rclone binary, the same rclone.conf (pacer_min_sleep 1ms)
and the same `--transfers`; their order alternates from pair to pair. The
headline is the median over the pairs of the ratio of their wall times
(target <= 1.10).

Where cloudplow's extra time goes:
- its ledger's timestamps split its wall time into start-up (interpreter,
  configuration, `rclone config dump`, scan), planning before each stage,
  each stage's rclone run and the finish;
- two more runs per pair (`--skip-diagnostics` leaves them out) run rclone
  alone with cloudplow's exact flags (--files-from-raw, --use-json-log -v,
  --rc): the whole set as one list, then cloudplow's three stage lists one
  after the other. Against plain rclone they price the flags and the split
  into stages; what remains is cloudplow in the loop;
- component timings in this process: scan, plan, 2,000 ledger writes, one RC
  poll, one rclone start;
- CPU seconds of cloudplow's Python, of rclone and of the WebDAV server (this
  process), and the requests the server answered, by method (same work?).

Everything lives in a temporary folder under /tmp, removed at the end; every
server and process is stopped through its own handle.

    .venv/bin/python bench/bench_rclone_overhead.py [--pairs 5] [--files 2000]
        [--total-bytes 2000000000] [--transfers 8] [--share 0.4] [--seed 1] [--warmup 2]
        [--skip-diagnostics] [--output bench/results/overhead.md]

Two uncounted warm-up runs (one of each) come first: the first uploads after the
set is written run slower. Each run starts after `sync`, so the previous run's
writes are not flushed during it.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import math
import os
import platform
import random
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cloudplow.config import load_config
from cloudplow.demo import quotadav
from cloudplow.ledger import Ledger
from cloudplow.plan import plan_uploads
from cloudplow.rclone.command import upload_command
from cloudplow.rclone.rc import RcClient, free_port
from cloudplow.session import account_runtimes, plan_settings, reports_now, scan_uploader

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RCLONE = str(BIN / "rclone")
CLOUDPLOW = str(BIN / "cloudplow")
ACCOUNTS = ("alice", "bob", "carol")
PLAIN_USER = "plain"
RATIO_TARGET = 1.10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 10**6

CLOUDPLOW_RUN = "cloudplow upload"
PLAIN_RUN = "rclone copy"
ONE_LIST_RUN = "rclone, cloudplow's flags, one list"
STAGE_LISTS_RUN = "rclone, cloudplow's flags, its 3 stage lists"


# --- the file set --------------------------------------------------------------------------


def file_sizes(count: int, total_bytes: int, seed: int) -> list[int]:
    """
    Given a number of files and a total, return seeded media-like sizes that add
    up to about the total: 70 % small (subtitles, artwork: 2 to 200 kB), 25 %
    episodes (0.5 to 5 MB), 5 % films (5 to 40 MB), log-uniform within each kind,
    then scaled together to the total.
    """
    generator = random.Random(seed)
    raw = []
    for _ in range(count):
        kind = generator.random()
        low, high = (2e3, 2e5) if kind < 0.70 else (5e5, 5e6) if kind < 0.95 else (5e6, 4e7)
        raw.append(10 ** generator.uniform(math.log10(low), math.log10(high)))
    scale = total_bytes / sum(raw)
    return [max(1, round(size * scale)) for size in raw]


def build_source(root: Path, sizes: list[int], seed: int) -> dict[str, int]:
    """
    Create the files under `root` in a library-like layout with old mtimes; return
    relative path -> size. Contents are slices of one seeded random block: the set
    is the same every run, quick to write, and nothing compresses.
    """
    generator = random.Random(seed + 1)
    block = random.Random(seed + 2).randbytes(64 * MB)
    view = memoryview(block + block[: 40 * MB])  # a slice may start anywhere in the block
    files = {}
    for index, size in enumerate(sizes):
        kind = "Movies" if size >= 8 * MB else "TV"
        suffix = "srt" if size < 300_000 else "mkv"
        relative = f"{kind}/Title {index % 37:02d}/Season {index % 3 + 1}/part {index:04d}.{suffix}"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        offset = generator.randrange(64 * MB)
        with open(path, "wb") as handle:
            written = 0
            while written < size:
                chunk = min(size - written, 40 * MB)
                handle.write(view[offset : offset + chunk])
                written += chunk
        old = 1_600_000_000 + index
        os.utime(path, (old, old))
        files[relative] = size
    return files


def tree_sizes(root: Path) -> dict[str, int]:
    return {
        path.relative_to(root).as_posix(): path.stat().st_size for path in root.rglob("*") if path.is_file()
    }


# --- the server, with its requests counted -----------------------------------------------------


class RequestCounter:
    """
    Counts the requests every QuotaDavServer of this process answers, by method.
    It wraps the quota middleware's __call__ (first in the stack after the
    authenticator, so it sees every authenticated request) for this process
    only; the server's behaviour is unchanged.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        original = quotadav._QuotaMiddleware.__call__
        counter = self

        def counted(middleware: Any, environ: dict[str, Any], start_response: Any) -> Any:
            with counter.lock:
                counter.counts[environ["REQUEST_METHOD"]] += 1
            return original(middleware, environ, start_response)

        quotadav._QuotaMiddleware.__call__ = counted  # type: ignore[method-assign]

    def take(self) -> dict[str, int]:
        """Return the counts since the last call and start again from zero."""
        with self.lock:
            counts, self.counts = dict(self.counts), collections.Counter()
        return counts


def start_server(directory: Path, quotas: dict[str, int]) -> quotadav.QuotaDavServer:
    (directory / "dav").mkdir(parents=True)
    (directory / "spool").mkdir()
    return quotadav.QuotaDavServer(directory / "dav", quotas, spool_dir=directory / "spool").start()


def write_rclone_conf(directory: Path, server: quotadav.QuotaDavServer) -> Path:
    path = directory / "rclone.conf"
    path.write_text(
        f"[dav]\ntype = webdav\nurl = {server.url}\nvendor = other\npacer_min_sleep = 1ms\n",
        encoding="utf-8",
    )
    return path


def obscure(password: str) -> str:
    return subprocess.run(
        [RCLONE, "obscure", password], capture_output=True, text=True, check=True
    ).stdout.strip()


def write_cloudplow_config(
    directory: Path, source: Path, rclone_conf: Path, quota_bytes: int, transfers: int, passwords: dict
) -> Path:
    """Write one run's cloudplow config.yaml (3 accounts, mode copy, no age filter); return its path."""
    config = {
        "rclone": {"binary": RCLONE, "config": str(rclone_conf)},
        "state_dir": str(directory / "state"),
        "uploaders": {
            "media": {
                "source": str(source),
                "destination": "dav:media",
                "mode": "copy",
                "accounts": {
                    "list": [
                        {
                            "name": user,
                            "env": {
                                "RCLONE_CONFIG_DAV_USER": user,
                                "RCLONE_CONFIG_DAV_PASS": passwords[user],
                            },
                        }
                        for user in ACCOUNTS
                    ]
                },
                "quota": {"per_account": quota_bytes, "window": "24h", "reserve": 0, "overshoot": False},
                "filters": {"min_age": "0s"},
                "transfers": transfers,
            }
        },
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def cloudplow_rclone_argv(source: Path, files_from: Path, rclone_conf: Path, transfers: int) -> list[str]:
    """rclone's command line exactly as cloudplow builds it for a WebDAV stage."""
    return list(
        upload_command(
            RCLONE,
            mode="copy",
            source=source,
            destination="dav:media",
            files_from=files_from,
            transfers=transfers,
            rc_port=free_port(),
            config_path=rclone_conf,
            drive=False,
            user_flags=(),
        )
    )


# --- one timed process ---------------------------------------------------------------------


@dataclass
class Timed:
    """One process's run: wall time, exit code, CPU of itself and of its children."""

    wall_seconds: float
    exit_code: int
    started_epoch: float
    ended_epoch: float
    self_cpu_seconds: float  # the process alone (for cloudplow: its Python, without rclone)
    total_cpu_seconds: float  # with every child it reaped (for cloudplow: plus its rclone runs)
    server_cpu_seconds: float  # this process meanwhile: mostly the WebDAV server's threads
    output: str


def _own_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def run_timed(argv: list[str], env: dict[str, str], log_path: Path) -> Timed:
    """Run a command to its end, stdin closed, output to a file; time it and count its CPU."""
    # Dirty pages of the previous run (the server writes the set twice: spool and
    # destination) would otherwise be written back during this one.
    os.sync()
    server_before = resource.getrusage(resource.RUSAGE_SELF)
    latest_cpu = [0.0]
    finished = threading.Event()
    with open(log_path, "wb") as log:
        started_epoch = time.time()
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def sample() -> None:
            # The last reading before the process ends: /proc/PID goes once it is reaped.
            while not finished.wait(0.05):
                reading = _own_cpu_seconds(process.pid)
                if reading is not None:
                    latest_cpu[0] = reading

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        wall_seconds = time.perf_counter() - started
        ended_epoch = time.time()
        process.returncode = os.waitstatus_to_exitcode(status)
        finished.set()
        sampler.join()
    server_after = resource.getrusage(resource.RUSAGE_SELF)
    return Timed(
        wall_seconds=wall_seconds,
        exit_code=process.returncode,
        started_epoch=started_epoch,
        ended_epoch=ended_epoch,
        self_cpu_seconds=latest_cpu[0],
        total_cpu_seconds=usage.ru_utime + usage.ru_stime,
        server_cpu_seconds=(server_after.ru_utime + server_after.ru_stime)
        - (server_before.ru_utime + server_before.ru_stime),
        output=log_path.read_text(errors="replace"),
    )


# --- the runs -------------------------------------------------------------------------------


@dataclass
class StageTimes:
    number: int
    account: str
    files: int
    planned_bytes: int
    started_at: float
    ended_at: float
    first_file_at: float
    last_file_at: float


@dataclass
class Run:
    kind: str
    wall_seconds: float
    self_cpu_seconds: float
    total_cpu_seconds: float
    server_cpu_seconds: float
    requests: dict[str, int]
    argv: list[str]
    started_epoch: float
    ended_epoch: float
    session_started_at: float = 0.0
    stages: list[StageTimes] = field(default_factory=list)


@dataclass
class Bench:
    """What every run shares: the folder, the set, the settings, the request counter."""

    work: Path
    source: Path
    expected: dict[str, int]
    transfers: int
    share: float
    passwords: dict[str, str]
    counter: RequestCounter
    stage_lists: list[list[str]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.expected.values())


def read_ledger(state_dir: Path) -> tuple[float, list[StageTimes], list[list[str]]]:
    """Return the session's start, its stages' timestamps and each stage's files, from cloudplow's ledger."""
    connection = sqlite3.connect(f"file:{state_dir / 'cloudplow.sqlite3'}?mode=ro", uri=True)
    try:
        (session_started_at,) = connection.execute(
            "SELECT started_at FROM sessions ORDER BY id DESC LIMIT 1"
        ).fetchone()
        stages = [
            StageTimes(*row)
            for row in connection.execute(
                "SELECT s.number, s.account, s.planned_files, s.planned_bytes, s.started_at, s.ended_at,"
                " MIN(f.ended_at), MAX(f.ended_at) FROM stages s JOIN files f ON f.stage_id = s.id"
                " WHERE f.outcome = 'uploaded' GROUP BY s.id ORDER BY s.number"
            )
        ]
        stage_lists = [
            [path for (path,) in connection.execute("SELECT path FROM files WHERE stage_id = ?", (stage_id,))]
            for (stage_id,) in connection.execute("SELECT id FROM stages ORDER BY number")
        ]
    finally:
        connection.close()
    return session_started_at, stages, stage_lists


def run_variant(bench: Bench, kind: str, label: str) -> Run:
    """Upload the set once the `kind` way to a fresh server and folder; check that it arrived whole."""
    directory = bench.work / label
    if kind == CLOUDPLOW_RUN:
        quotas = {user: round(bench.share * bench.total_bytes) for user in ACCOUNTS}
    else:
        quotas = {PLAIN_USER: 100 * bench.total_bytes}
    server = start_server(directory, quotas)
    bench.counter.take()
    try:
        rclone_conf = write_rclone_conf(directory, server)
        env = {
            **os.environ,
            "RCLONE_CONFIG_DAV_USER": PLAIN_USER,
            "RCLONE_CONFIG_DAV_PASS": bench.passwords[PLAIN_USER],
            "RCLONE_RC_USER": "bench",
            "RCLONE_RC_PASS": "bench",
        }
        commands: list[list[str]]
        if kind == CLOUDPLOW_RUN:
            quota_bytes = quotas[ACCOUNTS[0]]
            config = write_cloudplow_config(
                directory, bench.source, rclone_conf, quota_bytes, bench.transfers, bench.passwords
            )
            commands, env = [[CLOUDPLOW, "--config", str(config), "upload"]], dict(os.environ)
        elif kind == PLAIN_RUN:
            commands = [
                [
                    RCLONE,
                    "copy",
                    str(bench.source),
                    "dav:media",
                    "--transfers",
                    str(bench.transfers),
                    "--config",
                    str(rclone_conf),
                ]
            ]
        else:
            lists = [sorted(bench.expected)] if kind == ONE_LIST_RUN else bench.stage_lists
            commands = []
            for number, paths in enumerate(lists):
                files_from = directory / f"list{number}.txt"
                files_from.write_bytes(b"".join(os.fsencode(path) + b"\n" for path in paths))
                commands.append(cloudplow_rclone_argv(bench.source, files_from, rclone_conf, bench.transfers))
        timings = [
            run_timed(argv, env, directory / f"run{number}.log") for number, argv in enumerate(commands)
        ]
    finally:
        server.stop()
    requests = bench.counter.take()
    problems = [f"exit {timed.exit_code}" for timed in timings if timed.exit_code != 0]
    arrived = tree_sizes(directory / "dav" / "media")
    if arrived != bench.expected:
        problems.append(f"{len(arrived)} of {len(bench.expected)} files arrived whole")
    run = Run(
        kind=kind,
        wall_seconds=sum(timed.wall_seconds for timed in timings),
        self_cpu_seconds=sum(timed.self_cpu_seconds for timed in timings),
        total_cpu_seconds=sum(timed.total_cpu_seconds for timed in timings),
        server_cpu_seconds=sum(timed.server_cpu_seconds for timed in timings),
        requests=requests,
        argv=commands[0],
        started_epoch=timings[0].started_epoch,
        ended_epoch=timings[-1].ended_epoch,
    )
    if kind == CLOUDPLOW_RUN:
        run.session_started_at, run.stages, stage_lists = read_ledger(directory / "state")
        bench.stage_lists = bench.stage_lists or stage_lists
        if len(run.stages) != len(ACCOUNTS):
            problems.append(f"{len(run.stages)} stages, not one per account")
    if problems:
        raise RuntimeError(f"{label}: {'; '.join(problems)}\n{timings[-1].output[-3000:]}")
    shutil.rmtree(directory / "dav")
    shutil.rmtree(directory / "spool")
    return run


# --- component timings, in this process ------------------------------------------------------------


def median_seconds(action: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def component_costs(bench: Bench) -> dict[str, str]:
    """Time the parts of a session one by one, with cloudplow's own functions on the same set."""
    directory = bench.work / "components"
    server = start_server(directory, {user: round(bench.share * bench.total_bytes) for user in ACCOUNTS})
    figures: dict[str, str] = {}
    try:
        rclone_conf = write_rclone_conf(directory, server)
        config_path = write_cloudplow_config(
            directory,
            bench.source,
            rclone_conf,
            round(bench.share * bench.total_bytes),
            bench.transfers,
            bench.passwords,
        )
        env = {**os.environ, "RCLONE_RC_USER": "bench", "RCLONE_RC_PASS": "bench"}
        startup = statistics.median(
            run_timed([CLOUDPLOW, "--version"], env, directory / "version.log").wall_seconds for _ in range(5)
        )
        figures["interpreter start + imports (`cloudplow --version`)"] = f"{startup:.3f} s"
        config = load_config(config_path)
        uploader = config.uploaders["media"]
        figures["`rclone config dump` (once per session)"] = (
            f"{median_seconds(lambda: account_runtimes(config, uploader, RCLONE), 5):.3f} s"
        )
        with Ledger.in_state_dir(config.state_dir) as ledger:
            scanned = scan_uploader(uploader, ledger, time.time())
            figures[f"scan of the {len(scanned.files)} files (open-file check included)"] = (
                f"{median_seconds(lambda: scan_uploader(uploader, ledger, time.time()), 5):.3f} s"
            )
            states = [report.to_state() for report in reports_now(ledger, uploader, time.time())]
            settings = plan_settings(uploader)
            figures["plan (3 accounts; run before every stage)"] = (
                f"{median_seconds(lambda: plan_uploads(scanned.files, states, settings), 5) * 1000:.1f} ms"
            )
            figures["ledger read + plan before a stage (`reports_now`)"] = (
                f"{median_seconds(lambda: reports_now(ledger, uploader, time.time()), 20) * 1000:.2f} ms"
            )
            session = ledger.start_session(
                "media", now=time.time(), trigger="bench", queue_files=0, queue_bytes=0, distribution=None
            )
            stage = ledger.start_stage(
                session,
                number=1,
                account="alice",
                transfers=8,
                overshoot=False,
                planned_files=0,
                planned_bytes=0,
                now=time.time(),
            )
            started = time.perf_counter()
            for queued in scanned.files:
                now = time.time()
                ledger.record_file(
                    session_id=session,
                    stage_id=stage,
                    uploader="media",
                    account="alice",
                    path=queued.path,
                    size=queued.size,
                    started_at=now,
                    ended_at=now,
                    outcome="uploaded",
                )
            writes = time.perf_counter() - started
            figures[f"ledger: {len(scanned.files)} file records (one transaction each)"] = (
                f"{writes:.3f} s ({writes / len(scanned.files) * 1000:.2f} ms each)"
            )
        figures["one RC poll (`core/stats`, once a second per stage)"] = (
            f"{rc_poll_seconds(directory) * 1000:.2f} ms"
        )
        empty = directory / "empty.txt"
        empty.write_text("")
        dav_env = {
            **env,
            "RCLONE_CONFIG_DAV_USER": PLAIN_USER,
            "RCLONE_CONFIG_DAV_PASS": bench.passwords[PLAIN_USER],
        }
        starts = [
            run_timed(
                cloudplow_rclone_argv(bench.source, empty, rclone_conf, bench.transfers),
                dav_env,
                directory / "empty.log",
            ).wall_seconds
            for _ in range(5)
        ]
        figures["one rclone run on an empty list, cloudplow's flags (start + exit)"] = (
            f"{statistics.median(starts):.3f} s"
        )
    finally:
        server.stop()
    return figures


def rc_poll_seconds(directory: Path) -> float:
    """Start `rclone rcd` on 127.0.0.1 and return the median time of a `core/stats` call."""
    port = free_port()
    process = subprocess.Popen(
        [RCLONE, "rcd", "--rc-addr", f"127.0.0.1:{port}", "--config", str(directory / "rclone.conf")],
        env={**os.environ, "RCLONE_RC_USER": "bench", "RCLONE_RC_PASS": "bench"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = RcClient(port, "bench", "bench")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.stats()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        return median_seconds(client.stats, 50)
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


class OtherLoad:
    """
    Measures the CPU time the rest of the machine used while the benchmark ran:
    all busy CPU time (/proc/stat) minus this process's and its children's.
    Other work on the machine shows up as noise in every run.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy_seconds, self.own_seconds = self._read()

    @staticmethod
    def _read() -> tuple[float, float]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        own = sum(
            usage.ru_utime + usage.ru_stime
            for usage in (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            )
        )
        return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS, own

    def summary(self) -> str:
        busy_seconds, own_seconds = self._read()
        elapsed = time.monotonic() - self.started
        others = max(0.0, (busy_seconds - self.busy_seconds) - (own_seconds - self.own_seconds))
        return f"{others:.0f} CPU s in {elapsed:.0f} s ({others / elapsed:.2f} CPUs on average)"


# --- report ------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    version = subprocess.run([RCLONE, "version"], capture_output=True, text=True, check=True)
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": model,
        "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
        "Python": platform.python_version(),
        "rclone": version.stdout.split()[1],
        "kernel": platform.release(),
    }


def phases(cloudplow: Run) -> dict[str, float]:
    """Split a cloudplow run's wall time by its ledger: start-up, plan, stages (summed), finish."""
    previous_end, planning, staging = cloudplow.session_started_at, 0.0, 0.0
    for stage in cloudplow.stages:
        planning += stage.started_at - previous_end
        staging += stage.ended_at - stage.started_at
        previous_end = stage.ended_at
    return {
        "start-up": cloudplow.session_started_at - cloudplow.started_epoch,
        "plan": planning,
        "stages": staging,
        "finish": cloudplow.ended_epoch - previous_end,
    }


def decomposition(pairs: list[dict[str, Run]]) -> list[str]:
    """
    Given pairs with the diagnostic runs, return a markdown table splitting the
    median extra time into parts, each the median over the pairs of a difference
    between two runs of the same pair (so they need not add up exactly).
    """

    def median_of(part: Callable[[dict[str, Run]], float]) -> float:
        return statistics.median(part(pair) for pair in pairs)

    rows = [
        (
            "start-up: interpreter, imports, configuration, `rclone config dump`, scan",
            median_of(lambda pair: phases(pair[CLOUDPLOW_RUN])["start-up"]),
            "ledger",
        ),
        (
            "planning before the stages (ledger read + plan, 3 times)",
            median_of(lambda pair: phases(pair[CLOUDPLOW_RUN])["plan"]),
            "ledger",
        ),
        (
            "cloudplow in the loop while rclone runs (RC polls, JSON log parsing, ledger writes,"
            " exit detection)",
            median_of(
                lambda pair: phases(pair[CLOUDPLOW_RUN])["stages"] - pair[STAGE_LISTS_RUN].wall_seconds
            ),
            "its stages against the same 3 lists run by rclone alone",
        ),
        (
            "the split into 3 stages (2 more rclone starts, 3 ramp-ups and drains of the transfers)",
            median_of(lambda pair: pair[STAGE_LISTS_RUN].wall_seconds - pair[ONE_LIST_RUN].wall_seconds),
            "rclone alone: 3 lists against one",
        ),
        (
            "cloudplow's rclone flags (--files-from-raw, --use-json-log -v, --rc)",
            median_of(lambda pair: pair[ONE_LIST_RUN].wall_seconds - pair[PLAIN_RUN].wall_seconds),
            "rclone alone: one list with them against `rclone copy`",
        ),
        (
            "finish: session end, ledger, exit",
            median_of(lambda pair: phases(pair[CLOUDPLOW_RUN])["finish"]),
            "ledger",
        ),
    ]
    measured = median_of(lambda pair: pair[CLOUDPLOW_RUN].wall_seconds - pair[PLAIN_RUN].wall_seconds)
    plain = sorted(pair[PLAIN_RUN].wall_seconds for pair in pairs)
    return [
        "The extra time, part by part (seconds, each the median over the pairs of a difference within"
        f" the pair; for scale, the same `rclone copy` took {plain[0]:.2f} to {plain[-1]:.2f} s over the"
        " pairs, so parts smaller than that spread are within the noise):",
        "",
        "| part | seconds | measured as |",
        "|---|---|---|",
        *(f"| {name} | {value:+.2f} | {how} |" for name, value, how in rows),
        f"| sum of the parts | {sum(value for _, value, _ in rows):+.2f} | |",
        f"| measured: cloudplow upload - rclone copy | {measured:+.2f} | median over the pairs |",
    ]


def render(
    pairs: list[dict[str, Run]],
    components: dict[str, str],
    bench: Bench,
    host: dict[str, str],
    when: str,
    command: str,
    seed: int,
) -> str:
    sizes = sorted(bench.expected.values())
    ratios = [pair[CLOUDPLOW_RUN].wall_seconds / pair[PLAIN_RUN].wall_seconds for pair in pairs]
    diagnostic_kinds = [kind for kind in (ONE_LIST_RUN, STAGE_LISTS_RUN) if kind in pairs[0]]
    median_ratio = statistics.median(ratios)
    verdict = "met" if median_ratio <= RATIO_TARGET else "MISSED"
    lines = [
        "# cloudplow upload against plain rclone copy",
        "",
        f"{len(sizes)} files, {bench.total_bytes / 1e9:.2f} GB (seed {seed}; median"
        f" {statistics.median(sizes) / 1e3:.0f} kB, largest {sizes[-1] / MB:.1f} MB), uploaded to the local"
        f" WebDAV quota server on 127.0.0.1 with `--transfers {bench.transfers}` and pacer_min_sleep 1ms,"
        f" each run to a fresh server and folder. cloudplow: 3 accounts of {bench.share:.2f} x the set each,"
        " mode copy, one stage per account.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in host.items()),
        f"| date | {when} |",
        f"| command | `{command}` |",
        "",
        "| pair | order | cloudplow upload (s) | rclone copy (s) | ratio |"
        + "".join(f" {kind} (s) |" for kind in diagnostic_kinds),
        "|---|---|---|---|---|" + "---|" * len(diagnostic_kinds),
    ]
    for number, (pair, ratio) in enumerate(zip(pairs, ratios, strict=True), start=1):
        order = "cloudplow first" if number % 2 else "rclone first"
        lines.append(
            f"| {number} | {order} | {pair[CLOUDPLOW_RUN].wall_seconds:.2f} |"
            f" {pair[PLAIN_RUN].wall_seconds:.2f} | {ratio:.3f} |"
            + "".join(f" {pair[kind].wall_seconds:.2f} |" for kind in diagnostic_kinds)
        )
    medians = {kind: statistics.median(pair[kind].wall_seconds for pair in pairs) for kind in pairs[0]}
    lines += [
        f"| median | | {medians[CLOUDPLOW_RUN]:.2f} | {medians[PLAIN_RUN]:.2f} | **{median_ratio:.3f}** |"
        + "".join(f" {medians[kind]:.2f} |" for kind in diagnostic_kinds),
        "",
        f"**Median ratio {median_ratio:.3f}** (target <= {RATIO_TARGET:.2f}: {verdict}).",
        "",
        "## Where cloudplow's time goes",
        "",
        "From its ledger's timestamps (seconds). Start-up: process start to session start (interpreter,"
        " imports, configuration, `rclone config dump`, scan). Plan: ledger read and planning before each"
        " stage, summed. Stage: the stage's rclone run as cloudplow saw it (start, uploads, exit). Finish:"
        " last stage's end to the process's exit.",
        "",
        "| pair | start-up | plan | stage 1 | stage 2 | stage 3 | finish | extra vs rclone copy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, pair in enumerate(pairs, start=1):
        cloudplow = pair[CLOUDPLOW_RUN]
        parts = phases(cloudplow)
        cells = [
            f"{stage.ended_at - stage.started_at:.2f}"
            f" ({stage.files} files, {stage.planned_bytes / 1e9:.2f} GB)"
            for stage in cloudplow.stages
        ]
        lines.append(
            f"| {number} | {parts['start-up']:.2f} | {parts['plan']:.3f} | {' | '.join(cells)} |"
            f" {parts['finish']:.2f} | {cloudplow.wall_seconds - pair[PLAIN_RUN].wall_seconds:+.2f} |"
        )
    lines += [
        "",
        "Inside the stages (seconds, summed over the 3): stage start to its first file logged as copied"
        " (rclone's start, the first upload) and its last file to the stage's end (rclone's exit, cloudplow"
        " noticing it).",
        "",
        "| pair | start -> first file | last file -> end |",
        "|---|---|---|",
    ]
    for number, pair in enumerate(pairs, start=1):
        stages = pair[CLOUDPLOW_RUN].stages
        head = sum(stage.first_file_at - stage.started_at for stage in stages)
        tail = sum(stage.ended_at - stage.last_file_at for stage in stages)
        lines.append(f"| {number} | {head:.2f} | {tail:.2f} |")

    if diagnostic_kinds:
        lines += ["", *decomposition(pairs)]

    kinds = [kind for kind in (CLOUDPLOW_RUN, PLAIN_RUN, ONE_LIST_RUN, STAGE_LISTS_RUN) if kind in pairs[0]]
    lines += [
        "",
        "Every way of running it, medians over the pairs (the diagnostic runs are rclone alone with"
        " cloudplow's exact flags, to a fresh server, right after each pair). CPU seconds: 2 CPUs are"
        " shared by the client, rclone and the Python WebDAV server, which holds the GIL for most of its"
        " work. cloudplow's own CPU is read from /proc every 50 ms until it exits, so it may miss its last"
        " 50 ms, which then count as rclone's (which also holds `rclone config dump`).",
        "",
        "| run | wall (s) | vs rclone copy | client's own CPU (s) | rclone CPU (s) | server CPU (s) |"
        " server requests |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        runs = [pair[kind] for pair in pairs]
        wall = statistics.median(run.wall_seconds for run in runs)
        ratio = statistics.median(pair[kind].wall_seconds / pair[PLAIN_RUN].wall_seconds for pair in pairs)
        own = statistics.median(run.self_cpu_seconds for run in runs) if kind == CLOUDPLOW_RUN else 0.0
        rclone_cpu = statistics.median(
            run.total_cpu_seconds - (run.self_cpu_seconds if kind == CLOUDPLOW_RUN else 0.0) for run in runs
        )
        server_cpu = statistics.median(run.server_cpu_seconds for run in runs)
        methods = collections.Counter()
        for run in runs:
            methods.update(run.requests)
        requests = ", ".join(f"{method} {count / len(runs):.0f}" for method, count in sorted(methods.items()))
        lines.append(
            f"| {kind} | {wall:.2f} | {ratio:.3f} | {own:.2f} | {rclone_cpu:.2f} | {server_cpu:.2f} |"
            f" {requests} |"
        )
    if components:
        lines += [
            "",
            "Components, timed one by one with cloudplow's own functions on the same set:",
            "",
            "| part | time |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in components.items()),
        ]
    lines += [
        "",
        "Commands timed (paths in the temporary folder; the rclone runs get RCLONE_CONFIG_DAV_USER/PASS"
        " from the environment, as cloudplow's accounts do):",
        "",
        *(f"- {kind}: `{shlex.join(pairs[0][kind].argv)}`" for kind in kinds),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--total-bytes", type=int, default=2 * 10**9)
    parser.add_argument("--transfers", type=int, default=8)
    parser.add_argument("--share", type=float, default=0.4, help="each account's quota, a share of the set")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="uncounted runs first: 0, 1 (rclone), 2 (both)")
    parser.add_argument("--skip-diagnostics", action="store_true")
    parser.add_argument("--output", type=Path, default=REPOSITORY / "bench" / "results" / "overhead.md")
    arguments = parser.parse_args()
    if not 1 / len(ACCOUNTS) < arguments.share < 1 / (len(ACCOUNTS) - 1):
        parser.error(f"--share must make all {len(ACCOUNTS)} accounts necessary and enough")

    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    other_load = OtherLoad()
    pairs: list[dict[str, Run]] = []
    with tempfile.TemporaryDirectory(prefix="cloudplow-overhead-", dir="/tmp") as temporary:
        work = Path(temporary)
        sizes = file_sizes(arguments.files, arguments.total_bytes, arguments.seed)
        bench = Bench(
            work=work,
            source=work / "source",
            expected=build_source(work / "source", sizes, arguments.seed),
            transfers=arguments.transfers,
            share=arguments.share,
            passwords={user: obscure(user) for user in (*ACCOUNTS, PLAIN_USER)},
            counter=RequestCounter(),
        )
        for kind in (PLAIN_RUN, CLOUDPLOW_RUN)[: arguments.warmup]:
            # Not counted: the first uploads after the set is written run slower (caches, writeback).
            run = run_variant(bench, kind, f"warm-up-{kind.split()[0]}")
            print(f"warm-up: {kind}: {run.wall_seconds:.2f} s", file=sys.stderr)
        for number in range(1, arguments.pairs + 1):
            order = [CLOUDPLOW_RUN, PLAIN_RUN] if number % 2 else [PLAIN_RUN, CLOUDPLOW_RUN]
            if not arguments.skip_diagnostics:
                order += [ONE_LIST_RUN, STAGE_LISTS_RUN] if number % 2 else [STAGE_LISTS_RUN, ONE_LIST_RUN]
            pair = {}
            for index, kind in enumerate(order):
                pair[kind] = run_variant(bench, kind, f"pair{number}-{index}")
                print(f"pair {number}: {kind}: {pair[kind].wall_seconds:.2f} s", file=sys.stderr)
            pairs.append(pair)
        components = {} if arguments.skip_diagnostics else component_costs(bench)
        host = machine()
        host["other processes meanwhile"] = other_load.summary()
        report = render(pairs, components, bench, host, when, command, arguments.seed)
    print(report)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
