"""The Prometheus collector (cloudplow.metrics) over a real ledger and live state, and the HTTP app.

Each test builds its own registry and reads exact values with `get_sample_value`; the rendered
text must pass `promtool check metrics` (`make test` installs promtool).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from cloudplow import __version__
from cloudplow.config import Config, load_config
from cloudplow.http import HttpServer, create_app, exposition
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.metrics import CloudplowCollector
from cloudplow.scan import size_distribution
from cloudplow.status import status_document
from cloudplow.triggers import REASONS

MB = 10**6
HOUR = 3600.0
DAY = 24 * HOUR
NOW = 1_700_000_000.0
RCLONE_VERSION = "v1.75.2"
QUEUED_SIZES = [500_000, 2 * MB, 2 * MB, 300 * MB, 3000 * MB]
TRANSFERRING = [
    {"name": "show/s01/e05.mkv", "size": 2 * MB, "bytes": 800_000, "speed": 100_000.0},
    {"name": "show/s01/e06.mkv", "size": 3 * MB, "bytes": 1_200_000, "speed": 120_000.0},
    {"name": "film/title (2020).mkv", "size": 4 * MB, "bytes": 0, "speed": 0.0},
]
# Every label the collector may use: bounded sets, never a file name.
ALLOWED_LABELS = {
    "uploader",
    "account",
    "reason",
    "outcome",
    "code",
    "state",
    "slot",
    "le",
    "percentile",
    "version",
    "rclone_version",
}


@dataclass
class World:
    config: Config
    ledger: Ledger
    live: LiveState
    registry: CollectorRegistry

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def write_config(directory: Path) -> Config:
    """Two uploaders: media with three listed accounts, books with the implicit default account."""
    for name in ("media", "books"):
        (directory / "source" / name).mkdir(parents=True)
    document = {
        "state_dir": "state",
        "uploaders": {
            "media": {
                "source": "source/media",
                "destination": "remote:media",
                "accounts": {
                    "list": [
                        {"name": name, "env": {"SECRET": f"pw-{name}"}} for name in ("alice", "bob", "carol")
                    ]
                },
                "quota": {"per_account": 10 * MB, "window": "24h", "reserve": 1 * MB},
                "transfers": 4,
            },
            "books": {
                "source": "source/books",
                "destination": "remote:books",
                "quota": {"per_account": 2 * MB, "reserve": 0},
            },
        },
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_config(directory / "config.yaml")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[World]:
    """A configuration, an empty ledger and a live state that knows nothing yet."""
    config = write_config(tmp_path)
    ledger = Ledger.in_state_dir(config.state_dir)
    live = LiveState()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        CloudplowCollector(
            config,
            ledger,
            live,
            rclone_version=RCLONE_VERSION,
            scheduler_running=lambda: True,
            clock=lambda: NOW,
        )
    )
    yield World(config, ledger, live, registry)
    ledger.close()


def upload(
    ledger: Ledger,
    session_id: int,
    stage_id: int,
    uploader: str,
    account: str,
    path: str,
    size: int,
    *,
    ended_at: float,
    outcome: str = "uploaded",
    error: str | None = None,
) -> None:
    """Record one file the way the session does when rclone reports it."""
    ledger.record_file(
        session_id=session_id,
        stage_id=stage_id,
        uploader=uploader,
        account=account,
        path=path,
        size=size,
        started_at=ended_at - 10,
        ended_at=ended_at,
        outcome=outcome,
        error=error,
    )


def stage(ledger: Ledger, session_id: int, number: int, account: str, now: float) -> int:
    return ledger.start_stage(
        session_id,
        number=number,
        account=account,
        transfers=4,
        overshoot=False,
        planned_files=2,
        planned_bytes=5 * MB,
        now=now,
    )


@pytest.fixture
def world(fresh: World) -> World:
    """
    media: alice uploaded 3 MB + 2 MB in the window and 4 MB 25 h ago; bob uploaded 1 MB, then
    the provider refused him (limit observed at 1 MB, blocked for 2 h, 0.5 MB wasted); carol
    uploads now (stage 3, 3 of 4 slots busy). books: one 0.7 MB file 2 h ago, idle.
    """
    ledger = fresh.ledger
    old = ledger.start_session(
        "media", now=NOW - 26 * HOUR, trigger="max_age", queue_files=1, queue_bytes=4 * MB, distribution=None
    )
    old_stage = stage(ledger, old, 1, "alice", NOW - 26 * HOUR)
    upload(ledger, old, old_stage, "media", "alice", "old/one.mkv", 4 * MB, ended_at=NOW - 25 * HOUR)
    ledger.end_session(old, now=NOW - 25 * HOUR, state="finished", exit_code=0, message="done")
    session = ledger.start_session(
        "media", now=NOW - 5000, trigger="min_queue", queue_files=9, queue_bytes=9 * MB, distribution=None
    )
    first = stage(ledger, session, 1, "alice", NOW - 4000)
    upload(ledger, session, first, "media", "alice", "show/s01/e01.mkv", 3 * MB, ended_at=NOW - 3600)
    upload(ledger, session, first, "media", "alice", "show/s01/e02.mkv", 2 * MB, ended_at=NOW - 1800)
    second = stage(ledger, session, 2, "bob", NOW - 1000)
    upload(ledger, session, second, "media", "bob", "show/s01/e03.mkv", 1 * MB, ended_at=NOW - 600)
    refused = {"outcome": "limit", "error": "User rate limit exceeded."}
    upload(
        ledger, session, second, "media", "bob", "show/s01/e04.mkv", 500_000, ended_at=NOW - 590, **refused
    )
    ledger.block_account(
        "bob",
        uploader="media",
        now=NOW - 590,
        until=NOW + 2 * HOUR,
        reason="limit",
        observed_limit_bytes=1 * MB,
        message="User rate limit exceeded.",
    )
    ledger.increment("media", "wasted_bytes", 500_000, account="bob")
    ledger.increment("media", "rotations", label="filled")
    ledger.increment("media", "rotations", label="limit")
    ledger.increment("media", "stages", label="completed")
    ledger.increment("media", "stages", label="limit")
    ledger.increment("media", "rclone_exits", 2, label="0")
    ledger.increment("media", "rclone_exits", label="10")
    ledger.increment("media", "rclone_exits", label="7")
    ledger.increment("media", "checks", 3, label="min_queue")
    ledger.increment("media", "checks", label="below_thresholds")
    books = ledger.start_session(
        "books", now=NOW - 3 * HOUR, trigger="max_age", queue_files=1, queue_bytes=700_000, distribution=None
    )
    books_stage = stage(ledger, books, 1, "default", NOW - 3 * HOUR)
    upload(
        ledger, books, books_stage, "books", "default", "author/novel.epub", 700_000, ended_at=NOW - 2 * HOUR
    )
    ledger.end_session(books, now=NOW - 2 * HOUR, state="finished", exit_code=0, message="done")

    fresh.live.update(
        "media",
        state="uploading",
        queue_files=len(QUEUED_SIZES),
        queue_bytes=sum(QUEUED_SIZES),
        queue_distribution=size_distribution(QUEUED_SIZES).to_dict(),
        queue_oldest_mtime=NOW - DAY,
        last_check_at=NOW - 5000,
        next_check_at=NOW - 3200,
        last_trigger="min_queue",
        last_trigger_fired=True,
        session_id=session,
        session_started_at=NOW - 5000,
        session_uploaded_bytes=6 * MB,
        session_uploaded_files=3,
        stage_number=3,
        stage_account="carol",
        stage_account_index=3,
        accounts_in_pool=3,
        stage_planned_bytes=9 * MB,
        stage_planned_files=3,
        stage_transfers=4,
        stage_overshoot=False,
        stats={"bytes": 2_000_000, "speed": 220_000.5, "eta": 32, "transferring": TRANSFERRING},
    )
    fresh.live.update("books", last_check_at=NOW - 60, next_check_at=NOW + 1740, last_trigger="empty_queue")
    return fresh


def promtool_check(text: bytes) -> None:
    """`promtool check metrics` must accept the exposition without a word."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (Debian's prometheus package)"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout.decode(), result.stderr.decode()) == (0, "", "")


# --- before anything happened -----------------------------------------------------------------


def test_every_child_exists_at_zero_on_a_fresh_ledger(fresh: World):
    for uploader, accounts in (("media", ("alice", "bob", "carol")), ("books", ("default",))):
        for account in accounts:
            for name in (
                "cloudplow_account_used_bytes",
                "cloudplow_account_blocked",
                "cloudplow_account_blocked_until_timestamp_seconds",
                "cloudplow_account_frees_at_timestamp_seconds",
                "cloudplow_uploaded_bytes_total",
                "cloudplow_uploaded_files_total",
                "cloudplow_limit_hits_total",
                "cloudplow_wasted_bytes_total",
            ):
                assert fresh.value(name, uploader=uploader, account=account) == 0, (name, account)
        for reason in ("filled", "limit", "stalled", "errors", "other"):
            assert fresh.value("cloudplow_rotations_total", uploader=uploader, reason=reason) == 0
        for outcome in ("completed", "failed", "limit", "fatal", "stalled", "interrupted"):
            assert fresh.value("cloudplow_stages_total", uploader=uploader, outcome=outcome) == 0
        for reason in REASONS:
            assert fresh.value("cloudplow_checks_total", uploader=uploader, reason=reason) == 0
            assert fresh.value("cloudplow_last_check_decision", uploader=uploader, reason=reason) == 0
        assert fresh.value("cloudplow_rclone_exits_total", uploader=uploader, code="0") == 0
        for name in (
            "cloudplow_queue_bytes",
            "cloudplow_queue_files",
            "cloudplow_queue_oldest_file_timestamp_seconds",
            "cloudplow_queue_file_size_bytes_count",
            "cloudplow_queue_file_size_bytes_sum",
            "cloudplow_session_active",
            "cloudplow_session_stage",
            "cloudplow_session_account_index",
            "cloudplow_stage_transfers",
            "cloudplow_transfer_speed_bytes",
            "cloudplow_active_transfers",
            "cloudplow_last_check_timestamp_seconds",
            "cloudplow_last_upload_timestamp_seconds",
        ):
            assert fresh.value(name, uploader=uploader) == 0, name
        assert fresh.value("cloudplow_queue_file_size_bytes_bucket", uploader=uploader, le="+Inf") == 0
        assert fresh.value("cloudplow_uploader_state", uploader=uploader, state="idle") == 1
        assert fresh.value("cloudplow_uploader_state", uploader=uploader, state="uploading") == 0
    assert fresh.value("cloudplow_account_remaining_bytes", uploader="media", account="alice") == 10 * MB
    assert fresh.value("cloudplow_account_quota_bytes", uploader="books", account="default") == 2 * MB
    assert fresh.value("cloudplow_accounts_available", uploader="media") == 3
    assert fresh.value("cloudplow_transfer_bytes", uploader="media", slot="0") is None  # no stage, no slots


def test_fresh_exposition_passes_promtool(fresh: World):
    promtool_check(fresh.render())
    assert exposition(fresh.registry) == fresh.render()


# --- the contract metrics, with history and a running stage -----------------------------------


def test_account_gauges(world: World):
    expected = {
        # account: used, remaining, effective quota, blocked
        "alice": (5 * MB, 5 * MB, 10 * MB, 0),
        "bob": (1 * MB, 0, 1 * MB, 1),  # the provider refused him at 1 MB: that is his quota now
        "carol": (0, 10 * MB, 10 * MB, 0),
    }
    for account, (used, remaining, quota, blocked) in expected.items():
        labels = {"uploader": "media", "account": account}
        assert world.value("cloudplow_account_used_bytes", **labels) == used, account
        assert world.value("cloudplow_account_remaining_bytes", **labels) == remaining, account
        assert world.value("cloudplow_account_quota_bytes", **labels) == quota, account
        assert world.value("cloudplow_account_blocked", **labels) == blocked, account
    books = {"uploader": "books", "account": "default"}
    assert world.value("cloudplow_account_used_bytes", **books) == 700_000
    assert world.value("cloudplow_account_remaining_bytes", **books) == 1_300_000
    assert world.value("cloudplow_account_configured_quota_bytes", uploader="media") == 10 * MB
    assert world.value("cloudplow_account_configured_quota_bytes", uploader="books") == 2 * MB
    assert world.value("cloudplow_accounts", uploader="media") == 3
    assert world.value("cloudplow_accounts_available", uploader="media") == 2  # bob is blocked
    assert world.value("cloudplow_accounts_available", uploader="books") == 1


def test_block_and_window_timestamps(world: World):
    alice = {"uploader": "media", "account": "alice"}
    bob = {"uploader": "media", "account": "bob"}
    carol = {"uploader": "media", "account": "carol"}
    assert world.value("cloudplow_account_blocked_until_timestamp_seconds", **bob) == NOW + 2 * HOUR
    assert world.value("cloudplow_account_blocked_until_timestamp_seconds", **alice) == 0
    # The oldest upload inside the window (not the one 25 h ago) frees first.
    assert world.value("cloudplow_account_frees_at_timestamp_seconds", **alice) == NOW - HOUR + DAY
    assert world.value("cloudplow_account_frees_at_timestamp_seconds", **bob) == NOW - 600 + DAY
    assert world.value("cloudplow_account_frees_at_timestamp_seconds", **carol) == 0


def test_persistent_counters(world: World):
    totals = {
        # account: uploaded bytes (including the file 25 h ago), files, limit hits, wasted bytes
        "alice": (9 * MB, 3, 0, 0),
        "bob": (1 * MB, 1, 1, 500_000),  # the refused file is wasted, not uploaded
        "carol": (0, 0, 0, 0),
    }
    for account, (uploaded_bytes, uploaded_files, limit_hits, wasted) in totals.items():
        labels = {"uploader": "media", "account": account}
        assert world.value("cloudplow_uploaded_bytes_total", **labels) == uploaded_bytes, account
        assert world.value("cloudplow_uploaded_files_total", **labels) == uploaded_files, account
        assert world.value("cloudplow_limit_hits_total", **labels) == limit_hits, account
        assert world.value("cloudplow_wasted_bytes_total", **labels) == wasted, account
    assert world.value("cloudplow_uploaded_bytes_total", uploader="books", account="default") == 700_000
    assert world.value("cloudplow_uploaded_files_total", uploader="books", account="default") == 1
    # Counters belong to their uploader: books saw no media rotation.
    rotations = {"filled": 1, "limit": 1, "stalled": 0, "errors": 0, "other": 0}
    for reason, count in rotations.items():
        assert world.value("cloudplow_rotations_total", uploader="media", reason=reason) == count
        assert world.value("cloudplow_rotations_total", uploader="books", reason=reason) == 0
    assert world.value("cloudplow_stages_total", uploader="media", outcome="completed") == 1
    assert world.value("cloudplow_stages_total", uploader="media", outcome="limit") == 1
    assert world.value("cloudplow_stages_total", uploader="media", outcome="failed") == 0
    exits = {"0": 2, "7": 1, "10": 1}
    for code, count in exits.items():
        assert world.value("cloudplow_rclone_exits_total", uploader="media", code=code) == count
    assert world.value("cloudplow_rclone_exits_total", uploader="books", code="0") == 0
    # Every documented code (and 143, SIGTERM) exists at 0 before it ever happens.
    assert world.value("cloudplow_rclone_exits_total", uploader="books", code="7") == 0
    assert world.value("cloudplow_rclone_exits_total", uploader="books", code="143") == 0
    assert world.value("cloudplow_checks_total", uploader="media", reason="min_queue") == 3
    assert world.value("cloudplow_checks_total", uploader="media", reason="below_thresholds") == 1
    assert world.value("cloudplow_checks_total", uploader="media", reason="no_quota") == 0


def test_rclone_exit_codes_in_numeric_order(world: World):
    text = world.render().decode()
    codes = [
        line.split('code="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("cloudplow_rclone_exits_total{") and 'uploader="media"' in line
    ]
    assert codes == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "143"]
    assert world.value("cloudplow_rclone_exits_total", uploader="media", code="7") == 1


def test_queue_gauges_and_size_histogram(world: World):
    media = {"uploader": "media"}
    assert world.value("cloudplow_queue_files", **media) == 5
    assert world.value("cloudplow_queue_bytes", **media) == 3_304_500_000
    assert world.value("cloudplow_queue_oldest_file_timestamp_seconds", **media) == NOW - DAY
    cumulative = {
        "1000000.0": 1,
        "10000000.0": 3,
        "100000000.0": 3,
        "500000000.0": 4,
        "1000000000.0": 4,
        "2000000000.0": 4,
        "5000000000.0": 5,
        "10000000000.0": 5,
        "20000000000.0": 5,
        "50000000000.0": 5,
        "100000000000.0": 5,
        "+Inf": 5,
    }
    for le, count in cumulative.items():
        assert world.value("cloudplow_queue_file_size_bytes_bucket", le=le, **media) == count, le
    assert world.value("cloudplow_queue_file_size_bytes_count", **media) == 5
    assert world.value("cloudplow_queue_file_size_bytes_sum", **media) == 3_304_500_000
    percentiles = {"50": 2 * MB, "90": 3000 * MB, "95": 3000 * MB, "99": 3000 * MB, "100": 3000 * MB}
    for percentile, size in percentiles.items():
        assert (
            world.value("cloudplow_queue_file_size_percentile_bytes", percentile=percentile, **media) == size
        )
    assert world.value("cloudplow_queue_file_size_bytes_count", uploader="books") == 0


def test_running_session_and_stage(world: World):
    media = {"uploader": "media"}
    expected = {
        "cloudplow_session_active": 1,
        "cloudplow_session_stage": 3,
        "cloudplow_session_account_index": 3,
        "cloudplow_session_uploaded_bytes": 6 * MB,
        "cloudplow_session_uploaded_files": 3,
        "cloudplow_session_start_timestamp_seconds": NOW - 5000,
        "cloudplow_stage_planned_bytes": 9 * MB,
        "cloudplow_stage_planned_files": 3,
        "cloudplow_stage_transfers": 4,
        "cloudplow_stage_overshoot": 0,
        "cloudplow_stage_transferred_bytes": 2 * MB,
        "cloudplow_transfer_speed_bytes": 220_000.5,
        "cloudplow_stage_eta_seconds": 32,
        "cloudplow_active_transfers": 3,
        "cloudplow_last_check_timestamp_seconds": NOW - 5000,
        "cloudplow_next_check_timestamp_seconds": NOW - 3200,
        "cloudplow_last_upload_timestamp_seconds": NOW - 600,
    }
    for name, value in expected.items():
        assert world.value(name, **media) == value, name
    assert world.value("cloudplow_session_account", account="carol", **media) == 1
    assert world.value("cloudplow_session_account", account="alice", **media) is None
    for state, value in (("idle", 0), ("checking", 0), ("uploading", 1)):
        assert world.value("cloudplow_uploader_state", state=state, **media) == value
    for reason in REASONS:
        assert world.value("cloudplow_last_check_decision", reason=reason, **media) == (reason == "min_queue")


def test_transfer_slots_are_numbered_up_to_the_stage_transfers(world: World):
    media = {"uploader": "media"}
    # Four slots (the stage's transfers), three busy; the idle one reads 0.
    assert [world.value("cloudplow_transfer_bytes", slot=str(slot), **media) for slot in range(5)] == [
        800_000,
        1_200_000,
        0,
        0,
        None,
    ]
    assert [world.value("cloudplow_transfer_size_bytes", slot=str(slot), **media) for slot in range(5)] == [
        2 * MB,
        3 * MB,
        4 * MB,
        0,
        None,
    ]


def test_idle_uploader_beside_a_running_one(world: World):
    books = {"uploader": "books"}
    assert world.value("cloudplow_session_active", **books) == 0
    assert world.value("cloudplow_session_stage", **books) == 0
    assert world.value("cloudplow_transfer_speed_bytes", **books) == 0
    assert world.value("cloudplow_active_transfers", **books) == 0
    assert world.value("cloudplow_transfer_bytes", slot="0", **books) is None
    assert world.value("cloudplow_last_upload_timestamp_seconds", **books) == NOW - 2 * HOUR
    assert world.value("cloudplow_last_check_decision", reason="empty_queue", **books) == 1
    assert world.value("cloudplow_uploader_state", state="idle", **books) == 1


def test_build_info_and_scheduler(world: World):
    assert world.value("cloudplow_build_info", version=__version__, rclone_version=RCLONE_VERSION) == 1
    assert world.value("cloudplow_scheduler_running") == 1


def test_rolling_window_counts_only_the_last_24_hours(fresh: World):
    ledger = fresh.ledger
    session = ledger.start_session(
        "media", now=NOW - 2 * DAY, trigger="max_age", queue_files=3, queue_bytes=6 * MB, distribution=None
    )
    first = stage(ledger, session, 1, "alice", NOW - 2 * DAY)
    upload(ledger, session, first, "media", "alice", "a.mkv", 1 * MB, ended_at=NOW - 25 * HOUR)
    upload(ledger, session, first, "media", "alice", "b.mkv", 2 * MB, ended_at=NOW - DAY)  # ages out now
    labels = {"uploader": "media", "account": "alice"}
    assert fresh.value("cloudplow_account_used_bytes", **labels) == 0
    assert fresh.value("cloudplow_account_remaining_bytes", **labels) == 10 * MB
    assert fresh.value("cloudplow_account_frees_at_timestamp_seconds", **labels) == 0
    assert fresh.value("cloudplow_uploaded_bytes_total", **labels) == 3 * MB
    assert fresh.value("cloudplow_uploaded_files_total", **labels) == 2

    upload(ledger, session, first, "media", "alice", "c.mkv", 3 * MB, ended_at=NOW - DAY + 1)
    assert fresh.value("cloudplow_account_used_bytes", **labels) == 3 * MB
    assert fresh.value("cloudplow_account_frees_at_timestamp_seconds", **labels) == NOW + 1
    assert fresh.value("cloudplow_uploaded_bytes_total", **labels) == 6 * MB


def test_an_observed_limit_lowers_the_quota_only_within_the_window(fresh: World):
    ledger = fresh.ledger
    ledger.block_account(
        "carol",
        uploader="media",
        now=NOW - 25 * HOUR,
        until=NOW - 20 * HOUR,
        reason="limit",
        observed_limit_bytes=1 * MB,
        message="User rate limit exceeded.",
    )
    labels = {"uploader": "media", "account": "carol"}
    assert fresh.value("cloudplow_account_quota_bytes", **labels) == 10 * MB
    assert fresh.value("cloudplow_account_blocked", **labels) == 0
    assert fresh.value("cloudplow_limit_hits_total", **labels) == 1


def test_a_scrape_seeks_the_ledger_by_index_never_scanning_its_history(world: World):
    # files and blocks only grow: a scan per scrape gets slower every day the daemon runs.
    connection = world.ledger._connection
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        world.render()
    finally:
        connection.set_trace_callback(None)
    history = [
        statement for statement in statements if " FROM files" in statement or " FROM blocks" in statement
    ]
    assert len(history) == 4 * len(world.config.uploaders)  # per uploader: usage 3, last upload 1
    for statement in history:
        plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + statement)]
        # A search on `outcome` alone reads every upload ever, as a scan does.
        assert not any(step.startswith("SCAN") or step.endswith("(outcome=?)") for step in plan), (
            statement,
            plan,
        )


# --- label bounds and the exposition format ----------------------------------------------------


def series(registry: CollectorRegistry) -> list[tuple[str, dict[str, str]]]:
    return [(sample.name, sample.labels) for family in registry.collect() for sample in family.samples]


def test_labels_are_bounded_and_never_name_a_file(world: World):
    paths = {
        file["path"]
        for session in world.ledger.sessions(limit=100)
        for file in world.ledger.files(session["id"])
    } | {transfer["name"] for transfer in TRANSFERRING}
    file_names = paths | {path.rsplit("/", 1)[-1] for path in paths}
    before = series(world.registry)
    for _, labels in before:
        assert set(labels) <= ALLOWED_LABELS, labels
        for value in labels.values():
            assert "/" not in value, labels
            assert value not in file_names, labels
            assert not value.endswith((".mkv", ".epub")), labels

    # More files, more sessions: not one more series.
    session = world.ledger.start_session(
        "media", now=NOW - 100, trigger="min_queue", queue_files=50, queue_bytes=50, distribution=None
    )
    more = stage(world.ledger, session, 1, "carol", NOW - 100)
    for index in range(50):
        upload(world.ledger, session, more, "media", "carol", f"more/file{index}.mkv", 1, ended_at=NOW - 50)
    assert len(series(world.registry)) == len(before)


def test_no_secret_in_the_exposition(world: World):
    assert b"pw-" not in world.render()


def test_exposition_passes_promtool(world: World):
    promtool_check(world.render())


def test_served_exposition_is_generate_latest_byte_for_byte(world: World):
    assert exposition(world.registry) == generate_latest(world.registry)


class Oddities(Collector):
    """Families exposition() must escape, or hand to generate_latest: quotes, newlines, other types."""

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("odd_gauge", 'help with \\ and\nnewline and "quotes"', labels=["value"])
        gauge.add_metric(['back\\slash "quoted"\nnewline'], 1.5)
        gauge.add_metric(["plain"], float("inf"))
        yield gauge
        counter = CounterMetricFamily("odd_requests", "with a creation time", labels=["code"], created=1e9)
        counter.add_metric(["200"], 3, created=1e9)
        yield counter
        yield SummaryMetricFamily("odd_latency_seconds", "a summary", count_value=4, sum_value=0.5)
        stamped = GaugeMetricFamily("odd_stamped", "with a timestamp")
        stamped.add_metric([], 2, timestamp=1_700_000_000.5)
        yield stamped
        yield GaugeMetricFamily("odd_unlabelled", "no labels", value=-0.0)


def test_exposition_escapes_and_falls_back_like_generate_latest():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Oddities())
    assert exposition(registry) == generate_latest(registry)


# --- the HTTP app on a real server -------------------------------------------------------------


@dataclass
class Served:
    url: str
    health: dict[str, bool]


@pytest.fixture
def served(world: World) -> Iterator[Served]:
    health = {"alive": True}

    def status() -> dict:
        return status_document(
            world.config, world.ledger, world.live, now=NOW, source="daemon", rclone_version=RCLONE_VERSION
        )

    server = HttpServer(create_app(world.registry, status, lambda: health["alive"]), "127.0.0.1", 0).start()
    try:
        yield Served(f"http://127.0.0.1:{server.port}", health)
    finally:
        server.stop()


def test_http_metrics(served: Served, world: World):
    response = requests.get(f"{served.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert 'cloudplow_account_used_bytes{account="alice",uploader="media"} 5e+06' in response.text
    promtool_check(response.content)


def test_http_status(served: Served):
    response = requests.get(f"{served.url}/status", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["version"] == __version__
    assert document["rclone_version"] == RCLONE_VERSION
    media = document["uploaders"]["media"]
    assert media["state"] == "uploading"
    assert media["queue"] == {"files": 5, "bytes": 3_304_500_000}
    assert media["session"]["stage"] == 3
    assert media["session"]["account"] == "carol"
    assert [transfer["name"] for transfer in media["session"]["active_transfers"]] == [
        transfer["name"] for transfer in TRANSFERRING
    ]
    accounts = {account["name"]: account for account in media["accounts"]}
    assert accounts["alice"]["used_bytes"] == 5 * MB
    assert accounts["bob"]["blocked_until"] == NOW + 2 * HOUR
    assert document["uploaders"]["books"]["session"] is None
    assert "pw-" not in json.dumps(document)


def test_http_healthz_follows_the_provider(served: Served):
    response = requests.get(f"{served.url}/healthz", timeout=10)
    assert (response.status_code, response.text) == (200, "ok\n")
    served.health["alive"] = False
    response = requests.get(f"{served.url}/healthz", timeout=10)
    assert response.status_code == 503


def test_http_unknown_path_and_method(served: Served):
    assert requests.get(f"{served.url}/nope", timeout=10).status_code == 404
    assert requests.post(f"{served.url}/metrics", timeout=10).status_code == 405
    assert requests.delete(f"{served.url}/status", timeout=10).status_code == 405


def test_an_account_with_room_for_no_queued_file_is_not_available(fresh: World):
    # alice: 10 MB quota, 1 MB reserve, 7 MB used -> 2 MB above the reserve.
    session_id = fresh.ledger.start_session(
        "media", now=NOW, trigger="t", queue_files=0, queue_bytes=0, distribution=None
    )
    stage_id = fresh.ledger.start_stage(
        session_id,
        number=1,
        account="alice",
        transfers=1,
        overshoot=False,
        planned_files=1,
        planned_bytes=7 * MB,
        now=NOW,
    )
    upload(fresh.ledger, session_id, stage_id, "media", "alice", "a.mkv", 7 * MB, ended_at=NOW - HOUR)

    fresh.live.update("media", queue_files=3, queue_bytes=9 * MB, queue_smallest_bytes=3 * MB)
    assert fresh.value("cloudplow_accounts_available", uploader="media") == 2  # bob and carol

    fresh.live.update("media", queue_smallest_bytes=2 * MB)
    assert fresh.value("cloudplow_accounts_available", uploader="media") == 3
