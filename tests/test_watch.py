"""check.watch and the start-up check: a real daemon, a real inotify watch, the real rclone and the
WebDAV quota server; the check interval is an hour, so only these can start a session."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloudplow.watch import Arrivals
from tests.conftest import free_port, make_source, write_config


def test_arrivals_wait_for_a_quiet_spell_and_a_minute_between_checks() -> None:
    arrivals = Arrivals(quiet_seconds=5, min_gap_seconds=60)
    assert not arrivals.due(100)  # nothing arrived
    arrivals.note(100)
    assert not arrivals.due(104)
    arrivals.note(103)  # still arriving: the quiet spell starts again
    assert not arrivals.due(107) and arrivals.due(108)
    arrivals.fired(108)
    assert not arrivals.due(200)  # dealt with
    arrivals.note(110)
    assert not arrivals.due(160) and arrivals.due(168)  # at most one check a minute


@pytest.mark.integration
def test_a_file_dropped_in_starts_a_session_without_waiting_for_the_interval(
    tmp_path: Path, quota_server, start_daemon
) -> None:
    server = quota_server({"alice": 10**8})
    source = tmp_path / "source"
    make_source(source, [50_000] * 3)  # there at start-up: the first check uploads them
    port = free_port()
    config = write_config(
        tmp_path,
        server,
        users=["alice"],
        quota_bytes=10**8,
        source=source,
        server_port=port,
        extra={
            "check": {"interval": "1h", "min_queue": 0, "watch": True},
            "filters": {"min_age": "2s", "exclude_open_files": False},
        },
    )
    daemon = start_daemon(config, port)
    destination = server.root / "media"
    daemon.wait_until(
        lambda: len(list(destination.rglob("*.mkv"))) == 3, timeout=60, what="the start-up check's upload"
    )
    daemon.wait_until(
        lambda: daemon.status()["uploaders"]["media"]["state"] == "idle", timeout=30, what="idle"
    )

    dropped = source / "new" / "episode.mkv"
    dropped.parent.mkdir()
    dropped.write_bytes(b"e" * 70_000)
    dropped_at = time.monotonic()

    daemon.wait_until(
        lambda: (destination / "new/episode.mkv").is_file(), timeout=60, what="the watched file"
    )
    waited = time.monotonic() - dropped_at
    assert waited < 60, waited  # an hour's interval: only the watch can have started it
    assert not dropped.exists()
    assert "new files in the source: checking now" in daemon.log()
    print(f"uploaded {waited:.1f} s after it was dropped in (min_age 2 s)")
