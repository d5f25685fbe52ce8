"""The terminal progress display: rendered from real session events, drawn only on a terminal."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
from rich.console import Console

from cloudplow import events
from cloudplow.config import load_config
from cloudplow.events import Event
from cloudplow.ledger import Ledger
from cloudplow.progress import THROTTLE_CHANGED, ProgressModel, render
from cloudplow.session import run_session
from cloudplow.units import format_size
from tests.conftest import make_source, run_cli, write_config

pytestmark = pytest.mark.integration

# Two accounts of 3 MB: ten files of 500 kB take two stages.
QUOTA = 3_000_000
SIZES = [500_000] * 10
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but newline and tab


def text_of(model: ProgressModel, width: int = 140) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(render(model))
    return console.file.getvalue()  # type: ignore[attr-defined]


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def real_session(tmp_path, quota_server):
    """Run one real session (real rclone, the quota server) and return its events and config."""
    server = quota_server({"alice": QUOTA, "bob": QUOTA})
    source = tmp_path / "source"
    make_source(source, SIZES)
    config_path = write_config(
        tmp_path,
        server,
        users=["alice", "bob"],
        quota_bytes=QUOTA,
        source=source,
        transfers=2,
        extra={"rclone_flags": {"--bwlimit": "1M"}},  # about 5 s: progress is polled every second
    )
    config = load_config(config_path)
    recorder = Recorder()
    with Ledger.in_state_dir(config.state_dir) as ledger:
        result = run_session(config, config.uploaders["media"], ledger, listeners=[recorder])
    assert result.exit_code == 0, result.message
    return recorder.events


def test_the_display_follows_a_real_session(real_session):
    kinds = [event.kind for event in real_session]
    stages = [event.data for event in real_session if event.kind == events.STAGE_STARTED]
    assert len(stages) == 2 and events.PROGRESS in kinds

    # Mid-stage: replay up to the last progress report with a file in flight and a rate.
    mid = max(
        index
        for index, event in enumerate(real_session)
        if event.kind == events.PROGRESS
        and event.data["stats"].get("transferring")
        and event.data["stats"].get("speed")
    )
    model = ProgressModel()
    for event in real_session[: mid + 1]:
        model.on_event(event)
    line = model.uploaders["media"].stages[-1]
    planned = stages[len(model.uploaders["media"].stages) - 1]["bytes"]
    assert 0 < line.shown_bytes <= line.planned_bytes == planned
    shown = text_of(model)
    assert f"/ {format_size(line.planned_bytes)}" in shown and "uploading" in shown
    assert "throttle: unlimited" in shown
    assert re.search(r"\d+(\.\d+)? [kM]B/s  ETA \d", shown), shown

    # At the end: every stage complete with the planned numbers, the total at 100 %.
    model = ProgressModel()
    for event in real_session:
        model.on_event(event)
    shown = text_of(model)
    for number, stage in enumerate(stages, start=1):
        files, planned = stage["files"], format_size(stage["bytes"])
        assert re.search(
            rf"stage {number}\s+{stage['account']}\s+{files}/{files} files"
            rf"\s+{planned} / {planned}\s+completed",
            shown,
        ), shown
    assert f"100%  10/10 files  {format_size(sum(SIZES))} / {format_size(sum(SIZES))}" in shown, shown
    assert "all 10 queued file(s) uploaded" in shown
    assert not CONTROL.search(shown.replace("━", "")), "a TTY-less console draws no control characters"


def test_in_flight_bytes_never_pass_the_plan_and_the_throttle_shows():
    model = ProgressModel()
    at = time.time()
    model.on_event(Event(events.SESSION_STARTED, "media", at, {"queue_files": 4, "queue_bytes": 4_000_000}))
    model.on_event(
        Event(
            events.STAGE_STARTED,
            "media",
            at,
            {"stage": 1, "account": "alice", "files": 2, "bytes": 2_000_000},
        )
    )
    model.on_event(Event(events.FILE_DONE, "media", at, {"outcome": "uploaded", "size": 1_000_000}))
    # rclone's own total grows past the plan (retries, a file it found): the line keeps the plan.
    stats = {"speed": 1_000_000, "totalBytes": 9_000_000, "transferring": [{"bytes": 1_500_000}]}
    model.on_event(Event(events.PROGRESS, "media", at, {"stats": stats}))
    model.on_event(Event(THROTTLE_CHANGED, "media", at, {"rate_bytes": 8_000_000}))
    shown = text_of(model)
    assert "1/2 files  2.00 MB / 2.00 MB  uploading" in shown, shown
    assert "50%  1/4 files  2.00 MB / 4.00 MB  1.00 MB/s  ETA 2s" in shown, shown
    assert "throttle: 8.00 MB/s" in shown
    model.on_event(Event(events.PROGRESS, "media", at, {"stats": stats, "throttle_rate_bytes": 0}))
    assert "throttle: unlimited" in text_of(model)
    # A rate provider (what the session's stages follow) wins, and a failing one changes nothing.
    rates = iter([20_000_000])
    model.rate = lambda: next(rates)
    assert "throttle: 20.00 MB/s" in text_of(model)
    assert "throttle: 20.00 MB/s" in text_of(model), "StopIteration from the provider is ignored"


def test_a_run_without_a_terminal_prints_no_control_characters(tmp_path, quota_server):
    server = quota_server({"alice": QUOTA, "bob": QUOTA})
    source = tmp_path / "source"
    make_source(source, SIZES)
    config = write_config(tmp_path, server, users=["alice", "bob"], quota_bytes=QUOTA, source=source)
    completed = run_cli(config, "upload")
    assert completed.returncode == 0, completed.stderr
    assert "stage 2: account bob" in completed.stderr, "today's log lines stay"
    assert " in flight" in completed.stderr, "and so do the periodic progress lines"
    assert "throttle:" not in completed.stderr + completed.stdout, "no display without a terminal"
    for output in (completed.stdout, completed.stderr):
        assert "\x1b" not in output and not CONTROL.search(output), repr(output[:500])


def run_in_terminal(arguments: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdout and stderr; return its exit code and output."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudplow", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env={**os.environ, "COLUMNS": "140", "LINES": "40", "TERM": "xterm"},
    )
    os.close(secondary)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: every holder of the terminal closed it
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif process.poll() is not None:
                break
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(primary)
    return process.returncode, b"".join(chunks).decode(errors="replace")


def slow_config(directory, quota_server):
    directory.mkdir()
    server = quota_server({"alice": QUOTA, "bob": QUOTA})
    source = directory / "source"
    make_source(source, SIZES)
    return write_config(
        directory,
        server,
        users=["alice", "bob"],
        quota_bytes=QUOTA,
        source=source,
        extra={"rclone_flags": {"--bwlimit": "2M"}},
    )


def test_a_terminal_gets_the_live_display(tmp_path, quota_server):
    config = slow_config(tmp_path / "terminal", quota_server)
    code, output = run_in_terminal(["--config", str(config), "upload"])
    assert code == 0, output
    assert "\x1b[" in output, "drawn live (cursor movements)"
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert re.search(r"stage 1\s+alice\s+\d+/\d+ files", plain), plain
    assert re.search(r"stage 2\s+bob\s+4/4 files\s+2.00 MB / 2.00 MB\s+completed", plain), plain
    assert "throttle: unlimited" in plain
    assert "media: exit 0" in plain
    assert " in flight" not in plain, "the display replaces the periodic progress lines"


def test_quiet_turns_the_display_off(tmp_path, quota_server):
    config = slow_config(tmp_path / "quiet", quota_server)
    code, output = run_in_terminal(["--config", str(config), "upload", "--quiet"])
    assert code == 0, output
    assert "media: exit 0" in output
    assert "throttle:" not in output and " in flight" not in output
    assert "\x1b" not in output, repr(output[:300])
