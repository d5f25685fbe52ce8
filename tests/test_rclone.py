"""The rclone layer: command lines, remote resolution, log parsing, exit classification, and
the real binary against servers that stall or refuse."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from cloudplow.rclone import command
from cloudplow.rclone.exitcodes import ExitKind, classify_exit
from cloudplow.rclone.stage import FileEvent, StageRequest, StageResult, _conclude, _LogWatcher, run_stage
from tests.conftest import RCLONE


class Collect:
    def __init__(self):
        self.files: list[FileEvent] = []
        self.progress: list[dict] = []

    def on_file(self, event: FileEvent) -> None:
        self.files.append(event)

    def on_progress(self, stats: dict) -> None:
        self.progress.append(stats)


def request_for(tmp_path: Path, **overrides) -> StageRequest:
    values = dict(
        binary=RCLONE,
        mode="copy",
        source=tmp_path / "source",
        destination="dav:media",
        paths=("a.bin",),
        transfers=2,
        env={},
        config_path=None,
        drive=False,
        user_flags=(),
        limit_patterns=(re.compile("User rate limit exceeded", re.IGNORECASE),),
        stall_timeout_seconds=60,
        work_dir=tmp_path / "work",
        secrets=("s3cret",),
    )
    values.update(overrides)
    return StageRequest(**values)


def test_upload_command_is_an_exact_argument_tuple(tmp_path: Path) -> None:
    argv = command.upload_command(
        "/bin/rclone",
        mode="move",
        source=Path("/media"),
        destination="gdrive:/Media",
        files_from=Path("/state/list"),
        transfers=4,
        rc_port=5572,
        config_path=Path("/rc.conf"),
        drive=True,
        user_flags=("--checkers", "16"),
    )
    assert argv == (
        "/bin/rclone",
        "move",
        "/media",
        "gdrive:/Media",
        "--files-from-raw",
        "/state/list",
        "--transfers",
        "4",
        "--use-json-log",
        "--verbose",
        "--stats",
        "0",
        "--rc",
        "--rc-addr",
        "127.0.0.1:5572",
        "--no-unicode-normalization",
        "--config",
        "/rc.conf",
        "--drive-stop-on-upload-limit",
        "--checkers",
        "16",
    )
    assert not any("rc-no-auth" in part or "rc-pass" in part for part in argv)


def test_drive_remotes_are_found_through_wrappers() -> None:
    dump = {
        "secure": {"type": "crypt", "remote": "pool:encrypted"},
        "pool": {"type": "union", "upstreams": "gd1:media gd2:media:ro local:/mnt"},
        "gd1": {"type": "drive"},
        "gd2": {"type": "drive"},
        "local": {"type": "local"},
        "dav": {"type": "webdav"},
        "loop": {"type": "alias", "remote": "loop:"},
    }
    assert command.drive_remotes(dump, "secure") == ["gd1", "gd2"]
    assert command.drive_remotes(dump, "dav") == []
    assert command.drive_remotes(dump, "loop") == []
    assert command.drive_remotes(dump, "missing") == []
    assert command.service_account_env(["gd-1", "gd2"], Path("/sa/a.json")) == {
        "RCLONE_CONFIG_GD-1_SERVICE_ACCOUNT_FILE": "/sa/a.json",
        "RCLONE_CONFIG_GD2_SERVICE_ACCOUNT_FILE": "/sa/a.json",
    }


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (0, ExitKind.OK),
        (1, ExitKind.ERRORS),
        (3, ExitKind.NOT_FOUND),
        (5, ExitKind.RETRY),
        (7, ExitKind.FATAL),
        (8, ExitKind.MAX_TRANSFER),
        (9, ExitKind.NOTHING),
        (10, ExitKind.FATAL),
        (42, ExitKind.UNKNOWN),
        (-9, ExitKind.SIGNAL),
    ],
)
def test_exit_codes_go_through_one_table(code: int, kind: ExitKind) -> None:
    assert classify_exit(code)[0] is kind


def test_exit_7_without_the_limit_text_is_fatal_not_a_rotation() -> None:
    result = StageResult(outcome="completed", exit_code=7, message="")
    outcome, message = _conclude(None, 7, result, "shared drive is full", 60)
    assert outcome == "fatal" and "shared drive is full" in message
    assert _conclude(None, 8, result, "", 60)[0] == "completed"
    assert (
        _conclude("limit", 7, StageResult("limit", 7, "", limit_message="User rate limit exceeded."), "", 60)[
            0
        ]
        == "limit"
    )
    failed = StageResult("failed", 1, "", failed={"a": "boom"})
    assert _conclude(None, 1, failed, "boom", 60)[0] == "failed"
    assert _conclude(None, 1, StageResult("x", 1, ""), "unknown flag --foo", 60)[0] == "fatal"


def test_log_watcher_turns_json_lines_into_file_events(tmp_path: Path) -> None:
    collect = Collect()
    watcher = _LogWatcher(request_for(tmp_path), collect)
    lines = [
        {"level": "info", "msg": "Copied (new)", "size": 5, "object": "a.bin"},
        {"level": "info", "msg": "Deleted", "object": "a.bin"},
        {"level": "error", "msg": "Failed to copy: s3cret: 500 boom", "object": "b.bin"},
        {"level": "error", "msg": "Failed to copy: User rate limit exceeded.: 403", "object": "c.bin"},
        {"level": "info", "msg": "\nTransferred: ...", "stats": {}},
    ]
    for line in lines:
        watcher.handle(json.dumps(line))
    watcher.handle("Error: some plain text before the JSON logger")

    assert [(e.kind, e.path, e.limit) for e in collect.files] == [
        ("uploaded", "a.bin", False),
        ("deleted", "a.bin", False),
        ("failed", "b.bin", False),
        ("failed", "c.bin", True),
    ]
    assert watcher.result.uploaded == {"a.bin": 5}
    assert watcher.result.failed == {"b.bin": "Failed to copy: ***: 500 boom"}
    assert watcher.result.limit_failed == {"c.bin"}
    assert watcher.limit_seen.is_set()
    assert watcher.error_lines[-1] == "Error: some plain text before the JSON logger"


def test_a_failed_move_is_one_failure_though_rclone_logs_two_lines(tmp_path: Path) -> None:
    collect = Collect()
    watcher = _LogWatcher(request_for(tmp_path), collect)
    for message in (
        "Failed to copy: User rate limit exceeded.: 403",
        "Not deleting source as copy failed: User rate limit exceeded.: 403",
    ):
        watcher.handle(json.dumps({"level": "error", "msg": message, "object": "a.mkv"}))

    assert [(event.kind, event.path, event.limit) for event in collect.files] == [("failed", "a.mkv", True)]
    assert watcher.result.limit_failed == {"a.mkv"}


def test_a_retried_file_that_succeeds_is_uploaded_not_failed(tmp_path: Path) -> None:
    watcher = _LogWatcher(request_for(tmp_path), Collect())
    watcher.handle(json.dumps({"level": "error", "msg": "Failed to copy: timeout", "object": "a"}))
    watcher.handle(json.dumps({"level": "info", "msg": "Copied (new)", "size": 3, "object": "a"}))
    assert watcher.result.uploaded == {"a": 3} and watcher.result.failed == {}


@pytest.fixture
def black_hole():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


@pytest.mark.integration
def test_a_stage_with_no_progress_is_stopped_as_stalled(tmp_path: Path, black_hole: int) -> None:
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "a.bin").write_bytes(b"x" * 1000)
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[dav]\ntype = webdav\nurl = http://127.0.0.1:{black_hole}/\nvendor = other\n")
    collect = Collect()
    started = time.monotonic()

    result = run_stage(
        request_for(tmp_path, config_path=conf, stall_timeout_seconds=3), collect, threading.Event()
    )

    assert result.outcome == "stalled"
    assert 3 <= time.monotonic() - started < 30
    assert result.uploaded == {}
    assert collect.progress, "core/stats was polled while the stage ran"
    assert (tmp_path / "source" / "a.bin").exists()


@pytest.mark.integration
def test_a_stage_asked_to_stop_stops_rclone(tmp_path: Path, black_hole: int) -> None:
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "a.bin").write_bytes(b"x" * 1000)
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[dav]\ntype = webdav\nurl = http://127.0.0.1:{black_hole}/\nvendor = other\n")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()

    result = run_stage(request_for(tmp_path, config_path=conf), Collect(), stop)

    assert result.outcome == "interrupted"


@pytest.mark.integration
def test_an_unknown_remote_is_fatal_with_rclones_reason(tmp_path: Path) -> None:
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "a.bin").write_bytes(b"x")
    conf = tmp_path / "rclone.conf"
    conf.write_text("[other]\ntype = local\n")

    result = run_stage(request_for(tmp_path, config_path=conf), Collect(), threading.Event())

    assert result.outcome == "fatal"
    assert "rclone exited" in result.message and "dav" in result.message
