"""The session loop with a substituted stage runner (no rclone): rotation, blocks, termination,
exit codes. The same loop runs the real rclone in test_upload_integration.py."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import pytest
import yaml

from cloudplow.config import load_config
from cloudplow.ledger import Ledger
from cloudplow.rclone.stage import FileEvent, StageRequest, StageResult
from cloudplow.session import AccountRuntime, SessionError, UploaderBusy, run_session, uploader_lock

MB = 10**6


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        self.now += 1
        return self.now


def setup(tmp_path: Path, sizes: list[int], *, accounts=("a", "b"), quota=10 * MB, overshoot=False):
    source = tmp_path / "source"
    for index, size in enumerate(sizes):
        path = source / f"f{index:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        os.utime(path, (1000, 1000))
    document = {
        "state_dir": "state",
        "uploaders": {
            "media": {
                "source": "source",
                "destination": "remote:media",
                "accounts": {"list": [{"name": name, "env": {"SECRET": f"pw-{name}"}} for name in accounts]},
                "quota": {"per_account": quota, "reserve": 0, "overshoot": overshoot},
                "filters": {"min_age": "0s", "exclude_open_files": False},
            }
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    config = load_config(tmp_path / "config.yaml")
    ledger = Ledger.in_state_dir(config.state_dir)
    runtimes = [AccountRuntime(name, {"SECRET": f"pw-{name}"}) for name in accounts]
    return config, config.uploaders["media"], ledger, runtimes


def session(config, uploader, ledger, runtimes, runner, clock=None):
    return run_session(
        config,
        uploader,
        ledger,
        runner=runner,
        clock=clock or Clock(),
        binary="rclone",
        accounts=runtimes,
        drive=False,
    )


def uploading(limit_after: dict[str, int] | None = None):
    """A runner that uploads every file, except that an account refuses once it has N files."""
    calls: list[StageRequest] = []
    counts: dict[str, int] = {}

    def runner(request: StageRequest, listener, stop_event: threading.Event) -> StageResult:
        calls.append(request)
        account = request.env["SECRET"].removeprefix("pw-")
        result = StageResult("completed", 0, "ok")
        for path in request.paths:
            size = (request.source / path).stat().st_size
            allowed = (limit_after or {}).get(account)
            if allowed is not None and counts.get(account, 0) >= allowed:
                result.limit_failed.add(path)
                result.limit_message = "User rate limit exceeded."
                listener.on_file(FileEvent("failed", path, error="User rate limit exceeded.", limit=True))
                result.outcome, result.exit_code = "limit", 1
                break
            counts[account] = counts.get(account, 0) + 1
            result.uploaded[path] = size
            listener.on_file(FileEvent("uploaded", path, size=size))
        return result

    return runner, calls


def test_accounts_are_filled_in_turn_and_the_rest_waits(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [4 * MB] * 6)
    runner, calls = uploading()

    result = session(config, uploader, ledger, runtimes, runner)

    assert [request.env["SECRET"] for request in calls] == ["pw-a", "pw-b"]
    assert [len(request.paths) for request in calls] == [2, 2]
    assert result.exit_code == 3 and result.left_files == 2
    assert ledger.uploaded_bytes_by_account() == {"a": 8 * MB, "b": 8 * MB}


def test_a_limit_blocks_the_account_and_its_files_move_to_the_next(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [2 * MB] * 6)
    runner, calls = uploading(limit_after={"a": 1})

    result = session(config, uploader, ledger, runtimes, runner)

    assert [request.env["SECRET"] for request in calls] == ["pw-a", "pw-b"]
    assert len(calls[1].paths) == 5, "the refused and the never-started files go to b"
    assert result.exit_code == 0 and result.uploaded_files == 6
    usage = ledger.usage(["a", "b"], now=1_000_100, window_seconds=86400)
    assert usage[0].block is not None and usage[0].observed_limit_bytes == 2 * MB
    assert usage[1].block is None


def test_a_stage_that_uploads_nothing_is_not_retried_and_names_what_it_left(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [MB] * 3)
    calls = []

    def nothing(request, listener, stop_event):
        calls.append(request)
        if not calls[1:]:
            (request.source / "f01.bin").unlink()  # gone before rclone read it
        return StageResult("completed", 0, "nothing to do")

    result = session(config, uploader, ledger, runtimes, nothing)

    # move: rclone leaves nothing it handled in the source, so a file still there was passed by.
    assert len(calls) == 1
    assert result.files_left == {"not_transferred": ["f00.bin", "f02.bin"], "vanished": ["f01.bin"]}
    assert result.exit_code == 1 and result.skipped_files == 0 and result.left_files == 3
    assert result.message == "3 file(s) not uploaded (1 vanished, 2 not transferred)"
    counts = ledger.last_files_left("media")
    assert counts["not_transferred"] == 2 and counts["vanished"] == 1 and counts["quota"] == 0


def test_in_copy_mode_a_file_rclone_had_nothing_to_do_for_is_at_the_destination(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [MB] * 3)
    uploader = dataclasses.replace(uploader, mode="copy")

    result = session(
        config, uploader, ledger, runtimes, lambda request, listener, stop: StageResult("completed", 0, "")
    )

    assert result.exit_code == 0 and result.skipped_files == 3 and result.files_left == {}


def test_failed_files_are_not_retried_and_make_exit_1(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [MB] * 3)
    calls = []

    def failing(request, listener, stop_event):
        calls.append(request)
        result = StageResult("failed", 1, "1 file(s) failed")
        for path in request.paths:
            result.failed[path] = "500 Internal Server Error"
            listener.on_file(FileEvent("failed", path, error="500 Internal Server Error"))
        return result

    result = session(config, uploader, ledger, runtimes, failing)

    assert len(calls) == 1 and result.exit_code == 1 and result.failed_files == 3
    assert ledger.uploaded_bytes_by_account() == {}


def test_a_fatal_error_stops_the_session(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [6 * MB] * 4)
    calls = []

    def fatal(request, listener, stop_event):
        calls.append(request)
        return StageResult("fatal", 7, "rclone exited 7: shared drive is full")

    result = session(config, uploader, ledger, runtimes, fatal)

    assert len(calls) == 1
    assert result.exit_code == 1 and "shared drive is full" in result.message
    assert ledger.sessions("media")[0]["exit_code"] == 1


def test_every_account_blocked_ends_with_exit_3(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [MB] * 4)
    runner, calls = uploading(limit_after={"a": 0, "b": 0})

    result = session(config, uploader, ledger, runtimes, runner)

    assert len(calls) == 2 and result.exit_code == 3 and result.left_files == 4
    assert all(source.exists() for source in (tmp_path / "source").iterdir())


def test_overshoot_stage_runs_alone_with_one_transfer(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(
        tmp_path, [6 * MB, 6 * MB, 3 * MB], accounts=("a",), overshoot=True
    )
    runner, calls = uploading()

    result = session(config, uploader, ledger, runtimes, runner)

    assert [(len(c.paths), c.transfers) for c in calls] == [(2, 2), (1, 1)]
    assert result.exit_code == 0 and ledger.uploaded_bytes_by_account() == {"a": 15 * MB}


def test_the_ledger_window_frees_usage_as_it_ages(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [4 * MB] * 3, accounts=("a",))
    runner, _ = uploading()
    clock = Clock(1_000_000)
    session(config, uploader, ledger, runtimes, runner, clock)

    inside = ledger.usage(["a"], now=clock.now + 3600, window_seconds=86400)[0]
    outside = ledger.usage(["a"], now=clock.now + 86400, window_seconds=86400)[0]
    assert inside.used_bytes == 8 * MB and outside.used_bytes == 0


def test_the_lock_refuses_a_second_session_for_the_same_uploader(tmp_path: Path) -> None:
    with (
        uploader_lock(tmp_path, "media"),
        pytest.raises(UploaderBusy, match="media"),
        uploader_lock(tmp_path, "media"),
    ):
        pass
    with uploader_lock(tmp_path, "media"):  # released after use
        pass


def test_a_file_larger_than_any_account_is_deferred_and_reported(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [12 * MB, 3 * MB])
    runner, calls = uploading()

    result = session(config, uploader, ledger, runtimes, runner)

    assert [len(c.paths) for c in calls] == [1]
    assert result.exit_code == 3 and result.deferred_files == 1 and result.left_files == 1
    assert "larger than a whole account's quota and need quota.overshoot" in result.message
    assert (tmp_path / "source" / "f00.bin").stat().st_size == 12 * MB


def test_a_source_that_vanished_is_a_clear_error_not_an_empty_queue(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [MB])
    for path in (tmp_path / "source").iterdir():
        path.unlink()
    (tmp_path / "source").rmdir()
    runner, calls = uploading()

    with pytest.raises(SessionError, match=r"^uploaders\.media\.source: cannot scan .*source"):
        session(config, uploader, ledger, runtimes, runner)
    assert calls == []


class Heard:
    """A listener that keeps every event; a second one that always raises."""

    def __init__(self):
        self.events = []

    def on_event(self, event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list:
        return [event.data for event in self.events if event.kind == kind]


class Broken:
    def on_event(self, event) -> None:
        raise RuntimeError("a peer is down")


def test_the_session_announces_what_happens_and_a_failing_listener_changes_nothing(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [2 * MB] * 6)
    runner, _calls = uploading(limit_after={"a": 1})
    heard = Heard()

    result = run_session(
        config,
        uploader,
        ledger,
        runner=runner,
        clock=Clock(),
        binary="rclone",
        accounts=runtimes,
        drive=False,
        listeners=[Broken(), heard],
    )

    kinds = [event.kind for event in heard.events]
    assert kinds[0] == "session_started" and kinds[-1] == "session_ended"
    assert kinds.count("stage_started") == kinds.count("stage_ended") == result.stages
    outcomes = [event.data["outcome"] for event in heard.events if event.kind == "file_done"]
    assert outcomes.count("limit") == 1 and outcomes.count("uploaded") == result.uploaded_files
    blocked = [event for event in heard.events if event.kind == "account_blocked"]
    assert [event.data["account"] for event in blocked] == ["a"]
    ended = heard.events[-1].data
    assert ended["exit_code"] == result.exit_code
    assert ended["uploaded_files"] == result.uploaded_files > 0
    assert ended["accounts_used"] == ["a", "b"]
    assert all(event.uploader == "media" for event in heard.events)


def refusing(accounts: set[str]):
    """A runner that uploads every file, except through `accounts`, whose credentials it refuses."""
    calls: list[StageRequest] = []

    def runner(request: StageRequest, listener, stop_event) -> StageResult:
        calls.append(request)
        account = request.env["SECRET"].removeprefix("pw-")
        if account in accounts:
            result = StageResult("broken", 1, "the account's credentials were refused")
            result.refused.add(request.paths[0])
            result.refused_message = "read metadata failed: 401 Not Authorized"
            return result
        result = StageResult("completed", 0, "ok")
        for path in request.paths:
            result.uploaded[path] = (request.source / path).stat().st_size
            (request.source / path).unlink()  # move
            listener.on_file(FileEvent("uploaded", path, size=result.uploaded[path]))
        return result

    return runner, calls


def test_a_broken_account_is_skipped_and_its_files_go_to_the_next(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [2 * MB] * 5, accounts=("a", "b", "c"))
    runner, calls = refusing({"a"})
    heard = Heard()

    result = run_session(
        config,
        uploader,
        ledger,
        runner=runner,
        clock=Clock(),
        binary="rclone",
        accounts=runtimes,
        drive=False,
        listeners=[heard],
    )

    assert [request.env["SECRET"] for request in calls] == ["pw-a", "pw-b"]
    assert set(calls[1].paths) == set(calls[0].paths), "the files a refused, and those it never started"
    assert result.exit_code == 0 and result.uploaded_files == 5 and result.files_left == {}
    assert result.broken_accounts == ["a"]
    assert ledger.uploaded_bytes_by_account() == {"b": 10 * MB}
    assert ledger.files(result.session_id) == [
        row for row in ledger.files(result.session_id) if row["account"] == "b"
    ], "nothing is recorded for the broken account"
    assert set(ledger.broken_accounts()) == {"a"}
    assert heard.of("account_broken") == [
        {"account": "a", "message": "read metadata failed: 401 Not Authorized"}
    ]
    ended = heard.of("session_ended")[0]
    assert ended["files_left"] == {} and ended["exit_code"] == 0


def test_files_only_a_broken_account_could_take_are_left_for_it_with_exit_1(tmp_path: Path) -> None:
    config, uploader, ledger, runtimes = setup(tmp_path, [4 * MB] * 5, accounts=("a", "b", "c"))
    runner, calls = refusing({"b"})
    heard = Heard()

    result = run_session(
        config,
        uploader,
        ledger,
        runner=runner,
        clock=Clock(),
        binary="rclone",
        accounts=runtimes,
        drive=False,
        listeners=[heard],
    )

    # a and c take two files each; the fifth fits only b, whose credentials are refused.
    assert result.uploaded_files == 4 and result.exit_code == 1
    assert list(result.files_left) == ["broken_account"] and len(result.files_left["broken_account"]) == 1
    assert heard.of("session_ended")[0]["files_left"] == {"broken_account": 1}

    # The next session tries b again; once it works, the broken mark goes.
    runner, calls = refusing(set())
    again = session(config, uploader, ledger, runtimes, runner)
    assert again.exit_code == 0 and again.uploaded_files == 1 and ledger.broken_accounts() == {}
    assert [request.env["SECRET"] for request in calls] == ["pw-b"]


def write_key(folder: Path, name: str, email: str, marker: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    key = {"type": "service_account", "client_email": email, "private_key": "k" + marker}
    path.write_text(json.dumps(key), encoding="utf-8")
    return path


def test_a_missing_key_file_breaks_its_account_until_the_key_comes_back(tmp_path: Path) -> None:
    config, uploader, ledger, _ = setup(tmp_path, [4 * MB] * 6)
    keys = tmp_path / "sa"
    for name in ("sa1", "sa2", "sa3"):
        write_key(keys, name, f"{name}@project.iam.gserviceaccount.com")
    document = yaml.safe_load((tmp_path / "config.yaml").read_text())
    document["uploaders"]["media"]["accounts"] = {"dir": "sa"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    config = load_config(tmp_path / "config.yaml")
    uploader = config.uploaders["media"]
    runtimes = [AccountRuntime(name, {"SECRET": f"pw-{name}"}) for name in ("sa1", "sa2", "sa3")]
    (keys / "sa1.json").unlink()  # removed after the configuration was read (a daemon runs for months)
    calls = []

    def runner(request, listener, stop_event):
        calls.append(request.env["SECRET"])
        if request.env["SECRET"] == "pw-sa2":
            write_key(
                keys, "sa1", "sa1@project.iam.gserviceaccount.com", marker="new"
            )  # the user puts it back
        result = StageResult("completed", 0, "ok")
        for path in request.paths:
            result.uploaded[path] = 4 * MB
            listener.on_file(FileEvent("uploaded", path, size=4 * MB))
        return result

    result = run_session(
        config,
        uploader,
        ledger,
        runner=runner,
        clock=Clock(),
        binary="rclone",
        accounts=runtimes,
        drive=False,
    )

    assert calls == ["pw-sa2", "pw-sa1", "pw-sa3"], "sa1 skipped, then tried again once its key came back"
    assert result.exit_code == 0 and result.uploaded_files == 6
    assert result.broken_accounts == ["sa1"] and ledger.broken_accounts() == {}
