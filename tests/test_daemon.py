"""`cloudplow run` end to end: the real CLI as a daemon, the real rclone, the WebDAV quota server.

rclone is slowed to 2 MiB/s, so a stage lasts several seconds: long enough
to scrape it, to stop it halfway and to collide with it. Two checks run in
process instead: /healthz when the scheduler dies (the daemon cannot be made
to lose its scheduler from outside), and a stop that lands between two stages
(too narrow a moment to hit with a signal), with a substituted stage runner.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from cloudplow.config import load_config
from cloudplow.daemon import Daemon
from cloudplow.demo import quotadav
from cloudplow.ledger import Ledger
from cloudplow.rclone.stage import FileEvent, StageRequest, StageResult
from cloudplow.session import AccountRuntime, run_session
from tests.conftest import (
    assert_nothing_lost,
    free_port,
    ledger_query,
    make_source,
    metric,
    parse_metrics,
    rclone_processes_for,
    run_cli,
    stop_process,
    tree_digests,
    write_config,
)

pytestmark = pytest.mark.integration

USERS = ["alice", "bob"]
QUOTA = 1_000_000_000  # far more than any test uploads: one stage through alice
SLOW = {"rclone_flags": {"--bwlimit": "2M"}, "check": {"interval": "2s", "min_queue": 0}}
WINDOW_SECONDS = 24 * 3600


def slow_setup(tmp_path: Path, server, sizes: list[int], *, seed: int, **settings) -> tuple[Path, dict, int]:
    """Write a source of `sizes` and a config for a slow daemon on a free port; return both and the port."""
    source = tmp_path / "source"
    original = make_source(source, sizes, seed=seed)
    port = free_port()
    config = write_config(
        tmp_path,
        server,
        users=USERS,
        quota_bytes=QUOTA,
        source=source,
        extra=SLOW,
        server_port=port,
        **settings,
    )
    return config, original, port


def ledger_used(state_dir: Path) -> dict[str, int]:
    """Bytes each account uploaded in the rolling window, summed from the ledger's files."""
    rows = ledger_query(
        state_dir,
        "SELECT account, SUM(size) FROM files WHERE outcome='uploaded' AND ended_at>? GROUP BY account",
        (time.time() - WINDOW_SECONDS,),
    )
    return {account: int(total) for account, total in rows}


def stage_running(daemon, *, uploaded_files: int = 0):
    """A condition: the scrape while a stage moves bytes (and has uploaded `uploaded_files`), else None."""

    def condition():
        samples = daemon.metrics()
        if (
            metric(samples, "cloudplow_session_active", uploader="media") == 1
            and metric(samples, "cloudplow_stage_transferred_bytes", uploader="media") > 0
            and metric(samples, "cloudplow_active_transfers", uploader="media") >= 1
            and metric(samples, "cloudplow_session_uploaded_files", uploader="media") >= uploaded_files
        ):
            return samples
        return None

    return condition


def session_over(daemon):
    def condition():
        samples = daemon.metrics()
        return samples if metric(samples, "cloudplow_session_active", uploader="media") == 0 else None

    return condition


def test_metrics_and_status_follow_a_running_stage(tmp_path, quota_server, start_daemon):
    server = quota_server(dict.fromkeys(USERS, QUOTA))
    sizes = [2_000_000] * 8
    total_bytes = sum(sizes)
    config, original, port = slow_setup(tmp_path, server, sizes, seed=21)
    state = tmp_path / "state"
    daemon = start_daemon(config, port)

    # Ledger, scrape, ledger: a file may complete between two reads, never go backwards.
    before_first = ledger_used(state)
    first = daemon.wait_until(stage_running(daemon), timeout=20, what="a stage moving bytes")
    first_at = time.monotonic()
    after_first = ledger_used(state)
    for user in USERS:
        used = metric(first, "cloudplow_account_used_bytes", uploader="media", account=user)
        assert before_first.get(user, 0) <= used <= after_first.get(user, 0), user
    # Within one scrape the queue and the session's uploads add up to what was queued.
    assert (
        metric(first, "cloudplow_queue_bytes", uploader="media")
        + metric(first, "cloudplow_session_uploaded_bytes", uploader="media")
        == total_bytes
    )
    assert metric(first, "cloudplow_session_stage", uploader="media") == 1
    assert metric(first, "cloudplow_session_account", uploader="media", account="alice") == 1

    def with_transfers():
        document = daemon.status()
        session = document["uploaders"]["media"]["session"]
        return document if session and session.get("active_transfers") else None

    document = daemon.wait_until(with_transfers, timeout=10, what="/status listing active transfers")
    assert document["source"] == "daemon"
    uploader = document["uploaders"]["media"]
    assert uploader["state"] == "uploading"
    session = uploader["session"]
    assert session["stage"] == 1 and session["account"] == "alice"
    assert session["account_index"] == 1 and session["accounts"] == len(USERS)
    for transfer in session["active_transfers"]:
        assert transfer["name"] in original, transfer
        assert transfer["size"] == 2_000_000, transfer
        assert 0 <= transfer["bytes"] <= transfer["size"], transfer
        assert isinstance(transfer["speed"], int | float) and transfer["speed"] >= 0, transfer

    time.sleep(max(0.0, first_at + 2.0 - time.monotonic()))
    before_second = ledger_used(state)
    second = daemon.metrics()
    after_second = ledger_used(state)
    # Still the same stage of the same session, two seconds later.
    assert metric(second, "cloudplow_session_active", uploader="media") == 1, daemon.log()
    for name in ("cloudplow_session_start_timestamp_seconds", "cloudplow_session_stage"):
        assert metric(second, name, uploader="media") == metric(first, name, uploader="media")
    assert metric(second, "cloudplow_stage_transferred_bytes", uploader="media") > metric(
        first, "cloudplow_stage_transferred_bytes", uploader="media"
    )
    assert metric(second, "cloudplow_session_uploaded_bytes", uploader="media") >= metric(
        first, "cloudplow_session_uploaded_bytes", uploader="media"
    )
    assert metric(second, "cloudplow_queue_bytes", uploader="media") <= metric(
        first, "cloudplow_queue_bytes", uploader="media"
    )
    assert (
        metric(second, "cloudplow_queue_bytes", uploader="media")
        + metric(second, "cloudplow_session_uploaded_bytes", uploader="media")
        == total_bytes
    )
    for user in USERS:
        used = metric(second, "cloudplow_account_used_bytes", uploader="media", account=user)
        assert before_second.get(user, 0) <= used <= after_second.get(user, 0), user
        assert used >= metric(first, "cloudplow_account_used_bytes", uploader="media", account=user)

    # The CLI asks the running daemon, not the state dir, while the session runs.
    cli = run_cli(config, "status", "--json", timeout=30)
    assert cli.returncode == 0, cli.stderr
    cli_document = json.loads(cli.stdout)
    assert cli_document["source"] == "daemon"
    assert cli_document["uploaders"]["media"]["session"]["id"] == session["id"]

    daemon.wait_until(session_over(daemon), timeout=30, what="the session to end")
    final = daemon.metrics()
    ledger = ledger_used(state)
    usage = server.usage()
    assert ledger == {"alice": total_bytes}
    for user in USERS:
        used = metric(final, "cloudplow_account_used_bytes", uploader="media", account=user)
        assert used == ledger.get(user, 0) == usage[user].committed_bytes, user
        assert metric(final, "cloudplow_uploaded_bytes_total", uploader="media", account=user) == used
        assert metric(
            final, "cloudplow_account_remaining_bytes", uploader="media", account=user
        ) == QUOTA - ledger.get(user, 0)
    assert metric(final, "cloudplow_queue_bytes", uploader="media") == 0
    assert metric(first, "cloudplow_queue_bytes", uploader="media") > 0
    assert metric(final, "cloudplow_session_stage", uploader="media") == 0
    assert metric(final, "cloudplow_active_transfers", uploader="media") == 0
    assert ledger_query(state, "SELECT state, exit_code FROM sessions") == [("finished", 0)]
    assert tree_digests(server.root / "media") == original
    assert tree_digests(tmp_path / "source") == {}


def test_sigterm_mid_stage_stops_cleanly_and_loses_nothing(tmp_path, quota_server, start_daemon):
    server = quota_server(dict.fromkeys(USERS, QUOTA))
    # Small files finish first; the large ones are still in flight when SIGTERM comes.
    sizes = [150_000] * 3 + [3_000_000] * 4
    config, original, port = slow_setup(tmp_path, server, sizes, seed=22)
    state = tmp_path / "state"
    daemon = start_daemon(config, port)
    daemon.wait_until(stage_running(daemon, uploaded_files=1), timeout=20, what="a stage half done")
    assert len(rclone_processes_for(state)) == 1

    daemon.process.send_signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    try:
        exit_code = daemon.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon did not exit within 30 s of SIGTERM:\n{daemon.log()}")
    print(f"exited {time.monotonic() - signalled_at:.1f} s after SIGTERM")

    log = daemon.log()
    assert exit_code == 0, log
    assert "SIGTERM received: stopping" in log
    assert rclone_processes_for(state) == [], "rclone outlived the daemon"

    destination = server.root / "media"
    assert_nothing_lost(original, tmp_path / "source", destination)
    usage = server.usage()
    ledger = ledger_used(state)
    for user in USERS:
        assert ledger.get(user, 0) == usage[user].committed_bytes, (user, usage[user])
    # Exactly the files present at the destination are recorded as uploaded, with their sizes.
    recorded = dict(ledger_query(state, "SELECT path, size FROM files WHERE outcome='uploaded'"))
    present = {path: (destination / path).stat().st_size for path in tree_digests(destination)}
    assert recorded == present
    assert 1 <= len(recorded) < len(original), "SIGTERM came mid-stage: some files done, some cut off"
    cut_off = set(original) - set(recorded)
    assert tree_digests(tmp_path / "source").keys() >= cut_off

    sessions = ledger_query(state, "SELECT id, state, ended_at FROM sessions")
    assert len(sessions) == 1 and sessions[0][1] == "interrupted" and sessions[0][2] is not None
    stages = ledger_query(
        state, "SELECT outcome FROM stages WHERE session_id=? ORDER BY number", (sessions[0][0],)
    )
    assert stages and stages[-1] == ("interrupted",)


def test_an_upload_the_server_completed_as_the_daemon_stops_is_counted(
    tmp_path, quota_server, start_daemon, monkeypatch
):
    # The server stores the first upload, counts it, then holds its answer: rclone
    # is killed before it can log "Copied", as happens when SIGTERM lands in that gap.
    committed = threading.Event()
    release = threading.Event()
    store = quotadav._QuotaMiddleware._store

    def store_then_hold(self, environ, start_response, spool, user, size_bytes):
        body = store(self, environ, start_response, spool, user, size_bytes)
        if not committed.is_set():
            committed.set()
            release.wait(15)
        return body

    monkeypatch.setattr(quotadav._QuotaMiddleware, "_store", store_then_hold)
    server = quota_server(dict.fromkeys(USERS, QUOTA))
    config, original, port = slow_setup(tmp_path, server, [100_000] + [2_000_000] * 3, seed=27)
    state = tmp_path / "state"
    try:
        daemon = start_daemon(config, port)
        assert committed.wait(20), daemon.log()
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0, daemon.log()
    finally:
        release.set()

    usage = server.usage()
    assert usage["alice"].committed_files == 1, usage
    destination = server.root / "media"
    recorded = dict(ledger_query(state, "SELECT path, size FROM files WHERE outcome='uploaded'"))
    present = {path: (destination / path).stat().st_size for path in tree_digests(destination)}
    assert recorded == present and len(recorded) == 1, daemon.log()
    assert ledger_used(state) == {"alice": usage["alice"].committed_bytes}
    assert_nothing_lost(original, tmp_path / "source", destination)
    assert ledger_query(state, "SELECT state FROM sessions") == [("interrupted",)]


BUSY = re.compile(r"cloudplow: uploader 'media' is being uploaded by pid (\d+); try again when it ends")


def test_upload_refuses_while_the_daemon_uploads(tmp_path, quota_server, start_daemon):
    server = quota_server(dict.fromkeys(USERS, QUOTA))
    config, _, port = slow_setup(tmp_path, server, [2_000_000] * 6, seed=23)
    state = tmp_path / "state"
    daemon = start_daemon(config, port)
    daemon.wait_until(stage_running(daemon), timeout=20, what="the daemon uploading")

    busy = run_cli(config, "upload", "media", timeout=30)

    assert busy.returncode == 1, busy.stdout + busy.stderr
    assert busy.stdout == ""
    lines = busy.stderr.strip().splitlines()
    assert len(lines) == 1, busy.stderr
    match = BUSY.fullmatch(lines[0])
    assert match, lines[0]
    assert int(match.group(1)) == daemon.pid
    # The refused command started no session and left the daemon's running one alone.
    assert ledger_query(state, "SELECT state FROM sessions") == [("running",)]
    assert metric(daemon.metrics(), "cloudplow_session_active", uploader="media") == 1


# Takes the uploader's lock and starts a session with one stage, as a real
# session would, then waits to be killed.
LOCK_HOLDER = """
import sys, time
from pathlib import Path
from cloudplow.ledger import Ledger
from cloudplow.session import uploader_lock

state_dir = Path(sys.argv[1])
with uploader_lock(state_dir, "media"):
    ledger = Ledger.in_state_dir(state_dir)
    session_id = ledger.start_session(
        "media", now=time.time(), trigger="manual", queue_files=1, queue_bytes=1, distribution=None
    )
    ledger.start_stage(session_id, number=1, account="alice", transfers=1, overshoot=False,
                       planned_files=1, planned_bytes=1, now=time.time())
    print(session_id, flush=True)
    time.sleep(600)
"""


def test_a_killed_lock_holder_leaves_nothing_stale(tmp_path, quota_server):
    server = quota_server(dict.fromkeys(USERS, QUOTA))
    source = tmp_path / "source"
    original = make_source(source, [100_000] * 5, seed=24)
    config = write_config(tmp_path, server, users=USERS, quota_bytes=QUOTA, source=source)
    state = tmp_path / "state"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(state)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        killed_session = int(holder.stdout.readline())
        busy = run_cli(config, "upload", timeout=30)
        assert busy.returncode == 1, busy.stderr
        assert busy.stderr.strip() == (
            f"cloudplow: uploader 'media' is being uploaded by pid {holder.pid}; try again when it ends"
        )
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=10) == -signal.SIGKILL
    finally:
        stop_process(holder, timeout=5)
        if holder.stdout is not None:
            holder.stdout.close()
    # The lock file still names the dead holder; the kernel dropped its lock.
    assert (state / "locks" / "media.lock").read_text() == f"pid {holder.pid}"
    assert ledger_query(state, "SELECT state FROM sessions WHERE id=?", (killed_session,)) == [("running",)]

    recovered = run_cli(config, "upload", timeout=60)

    assert recovered.returncode == 0, recovered.stderr
    assert tree_digests(server.root / "media") == original
    sessions = dict(ledger_query(state, "SELECT id, state FROM sessions"))
    assert sessions.pop(killed_session) == "interrupted"
    assert list(sessions.values()) == ["finished"]
    assert ledger_query(state, "SELECT outcome FROM stages WHERE session_id=?", (killed_session,)) == [
        ("interrupted",)
    ]
    assert (state / "locks" / "media.lock").read_text() == ""


def test_healthz_is_503_once_the_scheduler_stops(tmp_path, quota_server):
    server = quota_server({"alice": QUOTA})
    source = tmp_path / "source"
    source.mkdir()
    port = free_port()
    path = write_config(
        tmp_path,
        server,
        users=["alice"],
        quota_bytes=QUOTA,
        source=source,
        extra={"check": {"interval": "1h"}},
        server_port=port,
    )
    daemon = Daemon(load_config(path))
    url = f"http://127.0.0.1:{port}"
    try:
        daemon.start()
        healthy = requests.get(f"{url}/healthz", timeout=5)
        assert healthy.status_code == 200 and healthy.text == "ok\n"
        running = parse_metrics(requests.get(f"{url}/metrics", timeout=5).text)
        assert metric(running, "cloudplow_scheduler_running") == 1

        daemon.scheduler.shutdown(wait=False)

        unhealthy = requests.get(f"{url}/healthz", timeout=5)
        assert unhealthy.status_code == 503, unhealthy.text
        assert unhealthy.text == "scheduler not running\n"
        stopped = parse_metrics(requests.get(f"{url}/metrics", timeout=5).text)
        assert metric(stopped, "cloudplow_scheduler_running") == 0
        assert requests.get(f"{url}/status", timeout=5).status_code == 200
    finally:
        daemon.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=5)


def test_secrets_stay_out_of_every_output(tmp_path, quota_server, start_daemon):
    server = quota_server(dict.fromkeys(USERS, QUOTA))
    planted = {
        user: {
            "RCLONE_CONFIG_DAV_DESCRIPTION": f"planted-description-{user}-5f0c2e",
            "CLOUDPLOW_PLANTED_TOKEN": f"planted-token-{user}-9a41d7",
        }
        for user in USERS
    }
    config, original, port = slow_setup(tmp_path, server, [1_000_000] * 6, seed=25, account_env=planted)
    accounts = yaml.safe_load(config.read_text())["uploaders"]["media"]["accounts"]["list"]
    obscured = [account["env"]["RCLONE_CONFIG_DAV_PASS"] for account in accounts]
    secrets = [value for env in planted.values() for value in env.values()] + obscured
    assert len(set(secrets)) == 3 * len(USERS)
    state = tmp_path / "state"
    daemon = start_daemon(config, port, "--verbose")  # debug logging: the most there is to leak

    outputs: dict[str, str] = {}
    daemon.wait_until(stage_running(daemon), timeout=20, what="a stage moving bytes")
    # The secrets reach rclone, in its environment: never on its command line, which `ps` shows.
    (rclone_pid,) = rclone_processes_for(state)
    environment = Path(f"/proc/{rclone_pid}/environ").read_bytes().split(b"\0")
    for name, value in [*planted["alice"].items(), ("RCLONE_CONFIG_DAV_PASS", obscured[0])]:
        assert f"{name}={value}".encode() in environment, name
    outputs["rclone command line"] = Path(f"/proc/{rclone_pid}/cmdline").read_bytes().decode()
    outputs["/metrics during the stage"] = daemon.get("/metrics").text
    outputs["/status during the stage"] = daemon.get("/status").text
    outputs["status during the stage"] = run_cli(config, "status", timeout=30).stdout
    daemon.wait_until(session_over(daemon), timeout=30, what="the session to end")
    outputs["/metrics"] = daemon.get("/metrics").text
    outputs["/status"] = daemon.get("/status").text
    for arguments in (("status",), ("status", "--json"), ("quota",), ("quota", "--json"), ("check-config",)):
        completed = run_cli(config, *arguments, timeout=30)
        assert completed.returncode == 0, completed.stderr
        outputs[" ".join(arguments)] = completed.stdout + completed.stderr
    assert daemon.stop() == 0
    outputs["daemon log"] = daemon.log()
    for path in state.rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_bytes().decode("latin-1")

    # The run really happened, through the accounts that carry the secrets.
    assert ledger_query(state, "SELECT outcome FROM stages") == [("completed",)]
    assert tree_digests(server.root / "media") == original
    assert "alice" in outputs["quota --json"] and "session" in outputs["daemon log"]
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:12]}...) appears in {where}"


def stop_after_first_stage(stop_event: threading.Event):
    """A stage runner (no rclone) that uploads its stage, then SIGTERM lands as rclone exits 0."""
    calls: list[StageRequest] = []

    def runner(request: StageRequest, listener, _stop: threading.Event) -> StageResult:
        calls.append(request)
        result = StageResult("completed", 0, "rclone exited 0")
        for path in request.paths:
            size = (request.source / path).stat().st_size
            result.uploaded[path] = size
            listener.on_file(FileEvent("uploaded", path, size=size))
        stop_event.set()
        return result

    return runner, calls


@pytest.mark.parametrize(
    ("file_count", "state", "exit_code", "message"),
    [
        (6, "interrupted", 1, "interrupted; files not uploaded stay in the source"),
        (2, "finished", 0, "all 2 queued file(s) uploaded"),
    ],
    ids=["files-left", "all-done"],
)
def test_a_stop_between_stages_ends_the_session_as_what_it_was(
    tmp_path, file_count, state, exit_code, message
):
    # Two files fill an account: with six, the stop lands between stage 1 and stage 2.
    source = tmp_path / "source"
    make_source(source, [1_000_000] * file_count, seed=26)
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "state_dir": "state",
                "uploaders": {
                    "media": {
                        "source": "source",
                        "destination": "remote:media",
                        "accounts": {"list": [{"name": name, "env": {}} for name in USERS]},
                        "quota": {"per_account": 2_000_000, "reserve": 0},
                        "filters": {"min_age": "0s", "exclude_open_files": False},
                    }
                },
            }
        )
    )
    config = load_config(tmp_path / "config.yaml")
    stop_event = threading.Event()
    runner, calls = stop_after_first_stage(stop_event)
    with Ledger.in_state_dir(config.state_dir) as ledger:
        result = run_session(
            config,
            config.uploaders["media"],
            ledger,
            stop_event=stop_event,
            runner=runner,
            binary="rclone",
            accounts=[AccountRuntime(name, {}) for name in USERS],
            drive=False,
        )
        sessions = ledger.sessions("media")

    assert len(calls) == 1, "no stage starts after the stop"
    assert result.uploaded_files == 2 and result.left_files == file_count - 2
    assert (result.exit_code, result.message) == (exit_code, message)
    assert (sessions[0]["state"], sessions[0]["exit_code"], sessions[0]["message"]) == (
        state,
        exit_code,
        message,
    )
